package relay_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ecst-io/ecst/internal/testkit"
	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/relay"
)

// TestHeldSnapshot holds a REPEATABLE READ snapshot open (one that has not
// touched the outbox, as pg_dump's or an analytics query's on other
// tables) while events flow through several id windows, and a writer holds
// a row of the first window uncommitted for a while. The relay keeps up;
// no dead tuple accumulates in the outbox; the partitions of past windows
// are truncated while the snapshot is held, but not the straggler's until
// its row is published.
func TestHeldSnapshot(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, envOpts{})
	holder, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(context.Background()) //nolint:errcheck
	if _, err := holder.Exec(ctx, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"); err != nil {
		t.Fatal(err)
	}
	var before int
	if err := holder.QueryRow(ctx, "SELECT count(*) FROM customers").Scan(&before); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg := e.relayConfig()
	cfg.Metrics = relay.NewMetrics(reg)
	// A gate to stall the leader before it produces a batch.
	var gate atomic.Pointer[chan struct{}]
	stalled := make(chan struct{}, 1)
	relay.WithBeforeProduce(&cfg, func(int, []int64) {
		if g := gate.Load(); g != nil {
			select {
			case stalled <- struct{}{}:
			default:
			}
			<-*g
		}
	})
	stop := e.runRelay(cfg)

	straggler, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer straggler.Rollback(context.Background()) //nolint:errcheck
	log := &loadLog{keys: map[string]bool{}}
	commit := func(key string) {
		t.Helper()
		ev, err := e.write(ctx, key, false)
		if err != nil {
			t.Fatal(err)
		}
		log.committed = append(log.committed, ev)
		log.keys[key] = true
	}
	partition := func() int {
		t.Helper()
		var last int64
		if err := e.pool.QueryRow(ctx, "SELECT last_value FROM ecst.outbox_id_seq").Scan(&last); err != nil {
			t.Fatal(err)
		}
		return int(last/65536) % 8
	}
	rowsIn := func(p int) (n int) {
		t.Helper()
		if err := e.pool.QueryRow(ctx, fmt.Sprintf("SELECT count(*) FROM ecst.outbox_%d", p)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	var used []int
	for w := range 4 {
		// The sequence jumps to the next window, as 65536 events would
		// take it there.
		if w > 0 {
			if _, err := e.pool.Exec(ctx, "SELECT setval('ecst.outbox_id_seq', $1)", int64(w)*65536); err != nil {
				t.Fatal(err)
			}
		}
		used = append(used, partition())
		for i := range 50 {
			commit(fmt.Sprintf("w%d-%d", w, i%10))
		}
		if w == 0 {
			if err := e.pub.Publish(ctx, straggler, "customer", "straggler", 1, map[string]any{
				"id": "straggler", "version": int64(1), "name": "n", "email": "e", "tier": nil, "updated_at": time.Now()}); err != nil {
				t.Fatal(err)
			}
		}
		wait.Eventually(t, 10*time.Second, "the relay to keep up", func() bool { return e.outboxCount() == 0 })
	}
	// Every past window's partition but the straggler's is truncated under
	// the held snapshot.
	wait.Eventually(t, 30*time.Second, "the published partitions to be truncated", func() bool {
		for _, p := range used[1 : len(used)-1] {
			if rowsIn(p) > 0 {
				return false
			}
		}
		return true
	})
	if n := rowsIn(used[0]); n == 0 {
		t.Fatal("the straggler's partition was truncated while its row was uncommitted")
	}
	// The straggler commits while the leader is stalled on another batch:
	// its row waits, unread, and the rotation must leave its partition be.
	g := make(chan struct{})
	var release sync.Once
	t.Cleanup(func() { release.Do(func() { close(g) }) }) // a failing test must not leave the leader stalled
	gate.Store(&g)
	commit("blocker")
	<-stalled
	if err := straggler.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wait.Eventually(t, 30*time.Second, "the rotation to look at the straggler's partition", func() bool {
		return strings.Count(e.w.RelayLog(), fmt.Sprintf(`"outbox partition holds rows not yet published" partition=ecst.outbox_%d`, used[0])) >= 2 ||
			rowsIn(used[0]) == 0
	})
	if n := rowsIn(used[0]); n == 0 {
		t.Fatal("the straggler's partition was truncated while its row waited to be published")
	}
	gate.Store(nil)
	release.Do(func() { close(g) })
	log.committed = append(log.committed, event{key: "straggler", version: 1}) // not in customers: only its arrival is checked
	wait.Eventually(t, 30*time.Second, "the straggler's partition to be truncated once its row is published", func() bool { return rowsIn(used[0]) == 0 })

	var dead int64
	if err := e.pool.QueryRow(ctx, `SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables WHERE relid IN
		(SELECT inhrelid FROM pg_inherits WHERE inhparent = 'ecst.outbox'::regclass)`).Scan(&dead); err != nil || dead != 0 {
		t.Fatalf("%d dead tuples in the outbox (err %v)", dead, err)
	}
	// The counter moves once the TRUNCATE has committed, a moment after the
	// partition is seen empty.
	wait.Eventually(t, 10*time.Second, fmt.Sprintf("ecst_relay_rotations_total to reach %d", len(used)-1), func() bool {
		return testkit.Metric(t, reg, "ecst_relay_rotations_total") >= float64(len(used)-1)
	})
	// The snapshot is still the one taken at the start.
	var now int
	if err := holder.QueryRow(ctx, "SELECT count(*) FROM customers").Scan(&now); err != nil || now != before {
		t.Fatalf("the held snapshot sees %d customers (err %v), %d at the start", now, err, before)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	rep := e.check(log)
	t.Logf("%d records for %d keys; windows in partitions %v", rep.records, rep.keys, used)
}

// TestRotationWaitsForItsLock: a partition someone holds a lock on (a
// reader that did touch the outbox, say) is not truncated, and the relay
// goes on publishing meanwhile.
func TestRotationWaitsForItsLock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, envOpts{})
	reg := prometheus.NewRegistry()
	cfg := e.relayConfig()
	cfg.Metrics = relay.NewMetrics(reg)
	stop := e.runRelay(cfg)
	defer stop() //nolint:errcheck
	if _, err := e.write(ctx, "k0", false); err != nil {
		t.Fatal(err)
	}
	wait.Eventually(t, 30*time.Second, "the relay to publish", func() bool { return e.outboxCount() == 0 })
	reader, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Rollback(context.Background()) //nolint:errcheck
	if _, err := reader.Exec(ctx, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := reader.QueryRow(ctx, "SELECT count(*) FROM ecst.outbox").Scan(&n); err != nil || n != 1 {
		t.Fatalf("the reader sees %d rows (err %v)", n, err)
	}
	if _, err := e.pool.Exec(ctx, "SELECT setval('ecst.outbox_id_seq', 65536)"); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, err := e.write(ctx, fmt.Sprintf("k%d", i), false); err != nil {
			t.Fatal(err)
		}
		wait.Eventually(t, 10*time.Second, "the relay to keep up", func() bool { return e.outboxCount() == 0 })
	}
	// Two rotation rounds find the partition busy.
	wait.Eventually(t, 30*time.Second, "the rotation to find the partition busy", func() bool {
		return strings.Count(e.w.RelayLog(), "outbox partition busy") >= 2
	})
	if got := testkit.Metric(t, reg, "ecst_relay_rotations_total"); got != 0 {
		t.Fatalf("a partition was truncated under the reader's lock (%v rotations)", got)
	}
	if err := reader.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	wait.Eventually(t, 30*time.Second, "the partition to be truncated once free", func() bool { return testkit.Metric(t, reg, "ecst_relay_rotations_total") >= 1 })
	if err := stop(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	var keys []string
	for _, r := range e.readTopic() {
		keys = append(keys, r.key)
	}
	if !slices.Contains(keys, "k0") || !slices.Contains(keys, "k19") {
		t.Fatalf("topic keys %v", keys)
	}
}

// TestRotationWithoutTruncatePrivilege: a relay whose role may not truncate
// the outbox's partitions says so once and goes on publishing; the
// published rows stay.
func TestRotationWithoutTruncatePrivilege(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, envOpts{})
	role := "relay_" + strings.ReplaceAll(e.service, "-", "_") // a bare SQL identifier
	if _, err := e.pool.Exec(ctx, fmt.Sprintf(`CREATE ROLE %[1]s LOGIN PASSWORD 'relay';
		GRANT USAGE ON SCHEMA ecst TO %[1]s;
		GRANT SELECT ON ALL TABLES IN SCHEMA ecst TO %[1]s;
		GRANT SELECT ON ALL SEQUENCES IN SCHEMA ecst TO %[1]s;
		GRANT INSERT, UPDATE ON ecst.relay_cursors, ecst.outbox_parked TO %[1]s`, role)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = e.pool.Exec(context.Background(), fmt.Sprintf("DROP OWNED BY %[1]s; DROP ROLE %[1]s", role))
	})
	u, err := url.Parse(e.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(role, "relay")
	pool, err := pgxpool.New(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	reg := prometheus.NewRegistry()
	cfg := e.relayConfig()
	cfg.Pool, cfg.Metrics = pool, relay.NewMetrics(reg)
	stop := e.runRelay(cfg)
	if _, err := e.write(ctx, "k0", false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, "SELECT setval('ecst.outbox_id_seq', 65536)"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.write(ctx, "k1", false); err != nil {
		t.Fatal(err)
	}
	wait.Eventually(t, 30*time.Second, "the relay to publish", func() bool { return e.outboxCount() == 0 })
	wait.Eventually(t, 30*time.Second, "the relay to say it cannot truncate", func() bool {
		return strings.Contains(e.w.RelayLog(), "cannot truncate published outbox partitions")
	})
	if _, err := e.write(ctx, "k2", false); err != nil {
		t.Fatal(err)
	}
	wait.Eventually(t, 30*time.Second, "the relay to publish again", func() bool { return e.outboxCount() == 0 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(e.w.RelayLog(), "cannot truncate published outbox partitions"); n != 1 {
		t.Errorf("the warning was logged %d times, want once", n)
	}
	if got := testkit.Metric(t, reg, "ecst_relay_rotations_total"); got != 0 {
		t.Errorf("%v rotations without the privilege", got)
	}
	var kept int
	if err := e.pool.QueryRow(ctx, "SELECT count(*) FROM ecst.outbox_0").Scan(&kept); err != nil || kept != 1 {
		t.Errorf("partition 0 keeps %d rows (err %v), want its published row", kept, err)
	}
}
