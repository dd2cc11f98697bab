package relay_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ecst-io/ecst/internal/testkit"
	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/relay"
)

// strictOrder returns, for the records of the topic, the keys whose
// versions do not strictly increase in offset order: a state published
// behind a newer one, or twice.
func strictOrder(recs []topicRecord) []string {
	last := map[string]int64{}
	var bad []string
	for _, r := range recs {
		v, _ := strconv.ParseInt(r.headers[producer.HeaderEntityVersion], 10, 64)
		if v <= last[r.key] {
			bad = append(bad, fmt.Sprintf("%s: v%d after v%d", r.key, v, last[r.key]))
		}
		last[r.key] = max(last[r.key], v)
	}
	return bad
}

// switchingWriters write keys until stop is closed, each with the
// transport the database takes: a write refused with ErrTransportMismatch
// is done again with the other one (what a redeploy does, faster).
func switchingWriters(ctx context.Context, e *env, writers int, stop <-chan struct{}) (*loadLog, func(), *atomic.Int64) {
	pubs := map[outbox.Transport]*producer.Publisher{
		outbox.TransportTable: e.publisher(outbox.TransportTable),
		outbox.TransportWAL:   e.publisher(outbox.TransportWAL),
	}
	log := &loadLog{keys: map[string]bool{}}
	var refused atomic.Int64
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(w)))
			t := e.transport()
			for {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("k-%d", rng.IntN(40))
				ev, err := e.writeWith(ctx, pubs[t], key, rng.IntN(10) == 0)
				switch {
				case errors.Is(err, outbox.ErrTransportMismatch):
					refused.Add(1)
					if t == outbox.TransportTable {
						t = outbox.TransportWAL
					} else {
						t = outbox.TransportTable
					}
					time.Sleep(time.Millisecond) // the switch is under way: both transports refuse for a moment
				case err != nil:
					e.t.Error(err)
					return
				case ev.key != "":
					log.mu.Lock()
					log.committed = append(log.committed, ev)
					log.keys[key] = true
					log.mu.Unlock()
				}
			}
		}()
	}
	return log, wg.Wait, &refused
}

// TestSwitchUnderLiveWrites switches a running system from the table
// transport to the WAL and back while writers keep writing and relays of
// both transports run: every committed event reaches the topic, once, and
// every key's states in commit order.
func TestSwitchUnderLiveWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, envOpts{})
	stopTable := e.runRelay(e.relayConfig())
	stop := make(chan struct{})
	log, waitWriters, refused := switchingWriters(ctx, e, 6, stop)
	grow := func(n int) {
		target := log.count() + n
		wait.Eventually(t, time.Minute, fmt.Sprintf("%d more events", n), func() bool { return log.count() >= target })
	}
	grow(500)
	start := time.Now()
	res, err := relay.Switch(ctx, e.pool, outbox.TransportWAL, relay.SwitchOptions{Service: e.service, Wait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("table → wal in %v (slot created: %v, rows pending at the switch: %v)", time.Since(start).Round(time.Millisecond), res.SlotCreated, res.PendingRows)
	walCfg := e.relayConfig()
	walCfg.Transport = outbox.TransportWAL
	stopWAL := e.runRelay(walCfg)
	grow(500)
	start = time.Now()
	res, err = relay.Switch(ctx, e.pool, outbox.TransportTable, relay.SwitchOptions{Service: e.service, Wait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("wal → table in %v (slot dropped: %v, at %s)", time.Since(start).Round(time.Millisecond), res.SlotDropped, res.SwitchLSN)
	if !res.SlotDropped {
		t.Error("the switch to the table transport left the slot")
	}
	grow(500)
	close(stop)
	waitWriters()
	wait.Eventually(t, time.Minute, "the table relay to catch up", e.caughtUp())
	if err := stopTable(); err != nil {
		t.Fatal(err)
	}
	// The WAL relay stopped on its own once its slot was dropped: the
	// database runs the table transport, and nothing of the WAL is left.
	if err := stopWAL(); !errors.Is(err, outbox.ErrTransportMismatch) {
		t.Errorf("the WAL relay ended with %v, want ErrTransportMismatch", err)
	}
	rep := e.check(log)
	if bad := strictOrder(e.readTopic()); len(bad) > 0 {
		t.Errorf("%d records out of commit order across the switches, e.g. %v", len(bad), bad[0])
	}
	t.Logf("%d events, %d records, %d duplicates, %d writes refused during the switches", log.count(), rep.records, rep.duplicates, refused.Load())
}

// TestSwitchNeedsItsWait shows what the switch's wait is for: a WAL relay
// holds K's first state (stalled), the switch opens the table transport at
// once (and drops the slot), and a table relay publishes K's second state
// first.
func TestSwitchNeedsItsWait(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, envOpts{wal: true})
	walCfg := e.relayConfig()
	read, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	relay.WithBeforeProduce(&walCfg, func(int, []int64) { once.Do(func() { close(read); <-release }) })
	stopWAL := e.runRelay(walCfg)
	var released sync.Once
	t.Cleanup(func() { released.Do(func() { close(release) }) }) // before the relays stop
	if _, err := e.writeWith(ctx, e.pub, "K", false); err != nil {
		t.Fatal(err)
	}
	<-read
	opts := relay.SwitchOptions{Service: e.service}
	relay.WithoutSwitchWait(&opts)
	if _, err := relay.Switch(ctx, e.pool, outbox.TransportTable, opts); err != nil {
		t.Fatal(err)
	}
	tableCfg := e.relayConfig()
	tableCfg.Transport = outbox.TransportTable
	stopTable := e.runRelay(tableCfg)
	ev2, err := e.writeWith(ctx, e.publisher(outbox.TransportTable), "K", false)
	if err != nil {
		t.Fatal(err)
	}
	wait.Eventually(t, time.Minute, "the table relay to publish K's second state", e.caughtUp())
	released.Do(func() { close(release) })
	_ = stopWAL()
	if err := stopTable(); err != nil {
		t.Fatal(err)
	}
	bad := strictOrder(e.readTopic())
	if len(bad) == 0 {
		t.Fatalf("without the switch's wait K still ended on v%d: the scenario does not reorder", ev2.version)
	}
	t.Logf("without the switch's wait: %v", bad)
}

// walOrderRun is topicOrderRun for the WAL transport: writers emit a
// handful of keys' states with no lock at all, and record their commit
// position; the relay drains. It returns the keys whose last record is not
// the state of their last commit. With lsnOrder the relay sorts each batch
// by where the messages were written instead of the slot's commit order.
func walOrderRun(t *testing.T, lsnOrder bool, seed uint64) (wrong, keys int) {
	t.Helper()
	ctx := context.Background()
	e := newEnv(t, envOpts{wal: true})
	if _, err := e.pool.Exec(ctx, `CREATE TABLE commit_seq (n bigint NOT NULL); INSERT INTO commit_seq VALUES (0);
		CREATE TABLE commits (seq bigint PRIMARY KEY, key text NOT NULL, version bigint NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	const writers, perWriter, nkeys = 12, 25, 2
	testkit.Parallel(t, writers, func(w int) error {
		rng := rand.New(rand.NewPCG(seed, uint64(w)))
		for i := range perWriter {
			key := fmt.Sprintf("k%d", rng.IntN(nkeys))
			version := int64(w*1000 + i)
			pause := time.Duration(rng.IntN(1500)) * time.Microsecond
			err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
				row := outbox.Row{Topic: e.topic, Key: key, Value: []byte("v"),
					Headers: []outbox.Header{{Key: producer.HeaderEntityVersion, Value: []byte(strconv.FormatInt(version, 10))}}}
				// No key lock: the slot delivers in commit order, which
				// is all per-key order needs here.
				if _, err := tx.Exec(ctx, "SELECT pg_logical_emit_message(true, 'ecst', $1::bytea)", outbox.EncodeMessage(row)); err != nil {
					return err
				}
				time.Sleep(pause) // widen the window between the write and the commit
				var seq int64
				if err := tx.QueryRow(ctx, "UPDATE commit_seq SET n = n + 1 RETURNING n").Scan(&seq); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, "INSERT INTO commits VALUES ($1, $2, $3)", seq, key, version)
				return err
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	cfg := e.relayConfig()
	cfg.Drain = true
	if lsnOrder {
		relay.WithLSNOrder(&cfg)
	}
	r, err := relay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
	last := map[string]string{}
	for _, r := range e.readTopic() {
		last[r.key] = r.headers[producer.HeaderEntityVersion]
	}
	rows, err := e.pool.Query(ctx, "SELECT DISTINCT ON (key) key, version FROM commits ORDER BY key, seq DESC")
	if err != nil {
		t.Fatal(err)
	}
	var k string
	var v int64
	_, err = pgx.ForEachRow(rows, []any{&k, &v}, func() error {
		keys++
		if last[k] != strconv.FormatInt(v, 10) {
			wrong++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return wrong, keys
}

// TestWALTopicEndsOnLastCommit: with the WAL transport, every key ends on
// the state of its last commit even with no key lock: the slot hands out
// transactions in commit order.
func TestWALTopicEndsOnLastCommit(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	if wrong, keys := walOrderRun(t, false, seed); wrong > 0 {
		t.Fatalf("seed %d: %d of %d keys end on a state that is not their last commit", seed, wrong, keys)
	}
}

// TestWALTopicOrderNeedsCommitOrder: the same run, published in the order
// the messages were written rather than committed, leaves keys on an
// older state: commit order is what the WAL transport's per-key order
// rests on.
func TestWALTopicOrderNeedsCommitOrder(t *testing.T) {
	t.Parallel()
	for attempt := range 25 {
		if wrong, keys := walOrderRun(t, true, uint64(attempt)); wrong > 0 {
			t.Logf("attempt %d: in write order, %d of %d keys end on a stale state", attempt, wrong, keys)
			return
		}
	}
	t.Fatal("25 runs in write order left every key on its last commit: the check cannot see a missing commit order")
}

// TestWALHeldSnapshot: a REPEATABLE READ snapshot held open while events
// flow (a pg_dump, an analytics query) costs the WAL transport nothing:
// there are no outbox rows to leave dead, and the relay keeps up.
func TestWALHeldSnapshot(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, envOpts{wal: true})
	held, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Rollback(ctx) //nolint:errcheck
	if _, err := held.Exec(ctx, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"); err != nil {
		t.Fatal(err)
	}
	var xmin string
	if err := held.QueryRow(ctx, "SELECT pg_snapshot_xmin(pg_current_snapshot())::text").Scan(&xmin); err != nil {
		t.Fatal(err)
	}
	stop := e.runRelay(e.relayConfig())
	log, waitWriters := e.runLoad(ctx, 6, 200, 5000)
	waitWriters()
	start := time.Now()
	wait.Eventually(t, 30*time.Second, "the relay to catch up under the held snapshot", e.caughtUp())
	t.Logf("caught up %v after the last of %d events, a snapshot (xmin %s) held throughout", time.Since(start).Round(time.Millisecond), log.count(), xmin)
	var size int64
	var rows int
	if err := e.pool.QueryRow(ctx, "SELECT pg_relation_size('ecst.outbox'), (SELECT count(*) FROM ecst.outbox)").Scan(&size, &rows); err != nil {
		t.Fatal(err)
	}
	if size != 0 || rows != 0 {
		t.Errorf("the WAL transport left %d bytes and %d rows in ecst.outbox: dead tuples a held snapshot keeps", size, rows)
	}
	var still string
	if err := held.QueryRow(ctx, "SELECT pg_snapshot_xmin(pg_current_snapshot())::text").Scan(&still); err != nil || still != xmin {
		t.Fatalf("the snapshot was not held throughout: xmin %s, then %s (%v)", xmin, still, err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	e.check(log)
}

// TestWALStreamBreaks ends the WAL leader's WAL sender under load (a
// network cut, an administrator): the term ends, a new one streams again
// from the slot, the break is counted, and nothing is lost.
func TestWALStreamBreaks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, envOpts{wal: true})
	reg := prometheus.NewRegistry()
	cfg := e.relayConfig()
	cfg.Metrics = relay.NewMetrics(reg)
	stop := e.runRelay(cfg)
	log, waitWriters := e.runLoad(ctx, 4, 100, 4000)
	for range 3 {
		n := log.count()
		wait.Eventually(t, 30*time.Second, "more events", func() bool { return log.count() > n+500 })
		if _, err := e.pool.Exec(ctx, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1", relay.SlotName(e.service)); err != nil {
			t.Fatal(err)
		}
	}
	waitWriters()
	wait.Eventually(t, time.Minute, "the relay to catch up", e.caughtUp())
	if got := testkit.Metric(t, reg, "ecst_relay_errors_total"); got < 1 {
		t.Errorf("ecst_relay_errors_total = %v after 3 broken streams", got)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	rep := e.check(log)
	t.Logf("%d events, %d records, %d duplicates across 3 broken streams", log.count(), rep.records, rep.duplicates)
}

// TestWALRelayWaitsForAReader: a session reading the slot (`ecst verify`
// peeks at what it holds while no relay streams it) is not a stale leader:
// a relay that starts meanwhile waits for it instead of ending it.
func TestWALRelayWaitsForAReader(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, envOpts{wal: true})
	if _, err := e.write(ctx, "K", false); err != nil { // a row change, and its event
		t.Fatal(err)
	}
	// Decoding the row change needs pg_publication, which a lock holds
	// back: the reader keeps the slot until the lock goes.
	hold, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(ctx) //nolint:errcheck
	if _, err := hold.Exec(ctx, "LOCK TABLE pg_catalog.pg_publication IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	reader, err := pgx.Connect(ctx, e.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close(ctx)
	read := make(chan error, 1)
	go func() {
		_, err := reader.Exec(ctx, `SELECT count(*) FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL,
			'proto_version', '1', 'publication_names', $2, 'messages', 'true')`, relay.SlotName(e.service), relay.Publication)
		read <- err
	}()
	wait.Eventually(t, 30*time.Second, "the reader to hold the slot", func() bool {
		var pid int32
		err := e.pool.QueryRow(ctx, "SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1", relay.SlotName(e.service)).Scan(&pid)
		return err == nil && pid == int32(reader.PgConn().PID())
	})
	stop := e.runRelay(e.relayConfig())
	wait.Eventually(t, 30*time.Second, "the relay to wait for the reader", func() bool {
		return strings.Contains(e.w.RelayLog(), "not a WAL sender")
	})
	if err := hold.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-read; err != nil {
		t.Fatalf("the reader of the slot: %v (the relay ended it?)", err)
	}
	wait.Eventually(t, 30*time.Second, "the relay to stream", func() bool { return strings.Contains(e.w.RelayLog(), "streaming the slot") })
	wait.Eventually(t, 30*time.Second, "the relay to publish", e.caughtUp())
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
