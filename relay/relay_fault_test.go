package relay_test

import (
	"context"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ecst-io/ecst/internal/pgcluster"
	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/migrate"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/relay"
)

// fencingScenario stalls leader A after it has read K's first state, lets
// its lease go, has leader B publish K's first and second states, then
// lets A go on with the first state. It returns the version of K's last
// record on the topic and K's newest version.
func fencingScenario(t *testing.T, o envOpts, fencing bool) (last string, newest int64) {
	ctx := context.Background()
	e := newEnv(t, o)
	if _, err := e.write(ctx, "K", false); err != nil {
		t.Fatal(err)
	}
	cfgA := e.relayConfig()
	cfgA.LeaseTimeout = time.Minute // A's own heartbeat will not notice in time: a real stall
	read, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	relay.WithBeforeProduce(&cfgA, func(int, []int64) { once.Do(func() { close(read); <-release }) })
	cfgB := e.relayConfig()
	if !fencing {
		relay.WithoutFencing(&cfgA)
		relay.WithoutFencing(&cfgB)
	}
	stopA := e.runRelay(cfgA)
	select {
	case <-read:
	case <-time.After(30 * time.Second):
		t.Fatal("leader A never read a batch")
	}
	ev2, err := e.write(ctx, "K", false)
	if err != nil {
		t.Fatal(err)
	}
	// A's session dies (a network cut, say): its lock is free, A does not know.
	if _, err := e.pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name = 'ecst-relay-lock' AND datname = current_database()`); err != nil {
		t.Fatal(err)
	}
	stopB := e.runRelay(cfgB)
	wait.Eventually(t, 30*time.Second, "leader B to publish both states", e.caughtUp())
	close(release) // A wakes up and publishes the state it read before the stall
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	var lastRec topicRecord
	for _, r := range e.readTopic() {
		if r.key == "K" {
			lastRec = r
		}
	}
	return lastRec.headers[producer.HeaderEntityVersion], ev2.version
}

func TestFencingStopsStalledLeader(t *testing.T) {
	t.Parallel()
	for _, o := range transports() {
		t.Run(o.name(), func(t *testing.T) {
			t.Parallel()
			last, newest := fencingScenario(t, o, true)
			if last != strconv.FormatInt(newest, 10) {
				t.Fatalf("K's last record is v%s, want the newest v%d: a stalled leader published behind its successor", last, newest)
			}
		})
	}
}

// TestOrderingCheckNeedsFencing shows that the scenario above has teeth:
// without the transactional id, the stalled leader's old state lands last.
func TestOrderingCheckNeedsFencing(t *testing.T) {
	t.Parallel()
	for _, o := range transports() {
		t.Run(o.name(), func(t *testing.T) {
			t.Parallel()
			last, newest := fencingScenario(t, o, false)
			if last == strconv.FormatInt(newest, 10) {
				t.Fatalf("without fencing K still ended on v%s: the scenario does not stall the leader where it matters", last)
			}
			t.Logf("without fencing, K ended on stale v%s instead of v%d", last, newest)
		})
	}
}

// TestRelayBrokerRestart restarts the broker under load. Not parallel: on a
// real broker, a restart would disturb the other tests.
func TestRelayBrokerRestart(t *testing.T) {
	for _, o := range transports() {
		t.Run(o.name(), func(t *testing.T) {
			o.restartable = true
			relayBrokerRestart(t, o)
		})
	}
}

func relayBrokerRestart(t *testing.T, o envOpts) {
	e := newEnv(t, o)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := e.runRelay(e.relayConfig())
	log, waitWriters := e.runLoad(ctx, 6, 200, 6000)
	wait.Eventually(t, 30*time.Second, "some events", func() bool { return log.count() > 1000 })
	e.broker.Restart(t)
	t.Logf("broker restarted with %d events committed, %d waiting", log.count(), e.backlog())
	waitWriters()
	wait.Eventually(t, 2*time.Minute, "the relay to catch up", e.caughtUp())
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	rep := e.check(log)
	t.Logf("%d events, %d records, %d duplicates across a broker restart", log.count(), rep.records, rep.duplicates)
}

// TestRelayPostgresRestart restarts PostgreSQL under load: writers and the
// relay lose every connection; nothing committed may be lost. A WAL relay
// resumes from the slot's confirmed position.
func TestRelayPostgresRestart(t *testing.T) {
	t.Parallel()
	for _, o := range transports() {
		t.Run(o.name(), func(t *testing.T) {
			t.Parallel()
			relayPostgresRestart(t, o)
		})
	}
}

func relayPostgresRestart(t *testing.T, o envOpts) {
	ctx := context.Background()
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{Logical: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Stop() //nolint:errcheck
	pool, err := pgxpool.New(ctx, cluster.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := migrate.Up(ctx, pool); err != nil {
		t.Fatal(err)
	}
	pool.Close()
	o.dbURL = cluster.URL("postgres")
	e := newEnv(t, o)
	stop := e.runRelay(e.relayConfig())
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	log, waitWriters := e.runLoad(lctx, 6, 200, 6000)
	wait.Eventually(t, 30*time.Second, "some events", func() bool { return log.count() > 1000 })
	if err := cluster.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("PostgreSQL restarted with %d events committed", log.count())
	waitWriters()
	wait.Eventually(t, 2*time.Minute, "the relay to catch up", e.caughtUp())
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	rep := e.check(log)
	t.Logf("%d events (%d commits of unknown outcome), %d records, %d duplicates across a database restart", log.count(), log.ambiguous, rep.records, rep.duplicates)
}

// TestRelayFailover: two relay processes; the leader is paused (SIGSTOP),
// the standby must take over within 5s, and when the old leader resumes it
// must step down without publishing anything out of order. In both
// transports: a paused WAL leader's WAL sender is ended by its successor.
func TestRelayFailover(t *testing.T) {
	t.Parallel()
	for _, o := range transports() {
		t.Run(o.name(), func(t *testing.T) {
			t.Parallel()
			relayFailover(t, o)
		})
	}
}

func relayFailover(t *testing.T, o envOpts) {
	e := newEnv(t, o)
	log, stopWriters := e.startLoad(6, 200, 20_000)
	a := e.startRelayProc()
	a.waitLog(t, o.leading(), 30*time.Second)
	b := e.startRelayProc()
	b.waitLog(t, `"msg":"standing by: another relay leads the shard"`, 30*time.Second)
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	took := b.waitLog(t, o.leading(), 15*time.Second).Sub(paused)
	t.Logf("standby took over %v after the leader was paused (lease 2s)", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("takeover took %v, want within 5s", took)
	}
	backlog := e.backlog()
	wait.Eventually(t, 30*time.Second, "the new leader to publish", func() bool { n := e.backlog(); return n == 0 || n < backlog })
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	a.waitLog(t, `lost the (shard's|WAL) lease`, 15*time.Second)
	stopWriters()
	wait.Eventually(t, 2*time.Minute, "the new leader to catch up", e.caughtUp())
	// Both stop cleanly on SIGTERM.
	for _, p := range []*relayProc{a, b} {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(30 * time.Second):
			t.Fatal("relay did not stop on SIGTERM")
		}
		if code := p.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("relay exited %d on SIGTERM:\n%s", code, p.out.String())
		}
	}
	rep := e.check(log)
	t.Logf("%d events, %d records, %d duplicates across a paused leader's failover", log.count(), rep.records, rep.duplicates)
}
