package relay_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ecst-io/ecst/internal/pgcluster"
	"github.com/ecst-io/ecst/internal/testkit"
	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/migrate"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/relay"
	"github.com/ecst-io/ecst/republish"
)

// drainErr runs a WAL relay in drain mode and returns its error.
func (e *env) drainErr() error {
	cfg := e.relayConfig()
	cfg.Drain = true
	r, err := relay.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return r.Run(context.Background())
}

// recoverSlot does what `ecst relay --recover-slot --drain` does: a new
// slot, every key republished (orphans tombstoned), drained.
func (e *env) recoverSlot() {
	e.t.Helper()
	ctx := context.Background()
	if err := relay.RecoverSlot(ctx, e.pool, e.service); err != nil {
		e.t.Fatal(err)
	}
	_, err := republish.Run(ctx, republish.Config{Pool: e.pool, Publisher: e.pub, Entity: e.w.Entity, Kafka: e.w.Kafka()},
		republish.Options{All: true, TombstoneOrphans: true, MaxBacklog: -1})
	if err != nil {
		e.t.Fatal(err)
	}
	e.drain()
}

// topicMatchesSource checks every key's last record against the source
// table: its version, or a tombstone (or nothing) for a deleted key.
func (e *env) topicMatchesSource() {
	e.t.Helper()
	last := map[string]topicRecord{}
	for _, r := range e.readTopic() {
		last[r.key] = r
	}
	rows, err := e.pool.Query(context.Background(), "SELECT id, version FROM customers")
	if err != nil {
		e.t.Fatal(err)
	}
	truth := map[string]int64{}
	var k string
	var v int64
	if _, err := pgx.ForEachRow(rows, []any{&k, &v}, func() error { truth[k] = v; return nil }); err != nil {
		e.t.Fatal(err)
	}
	for key, want := range truth {
		r, ok := last[key]
		if !ok || r.value == nil || r.headers[producer.HeaderEntityVersion] != strconv.FormatInt(want, 10) {
			e.t.Errorf("key %s: the topic ends on %q (tombstone=%v, present=%v), the source has v%d", key, r.headers[producer.HeaderEntityVersion], r.value == nil, ok, want)
		}
	}
	for key, r := range last {
		if _, ok := truth[key]; !ok && r.value != nil {
			e.t.Errorf("key %s is deleted in the source, and alive on the topic", key)
		}
	}
}

// TestWALSlotLost: a slot dropped behind ecst's back (a failover to a
// standby without it) is ErrSlotLost, loudly, with the recovery; the
// recovery makes the topic match the source again, though the events
// written while there was no slot are gone.
func TestWALSlotLost(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, envOpts{wal: true})
	log, waitWriters := e.runLoad(ctx, 4, 50, 300)
	waitWriters()
	e.drain()
	e.check(log)
	if _, err := e.pool.Exec(ctx, "SELECT pg_drop_replication_slot($1)", relay.SlotName(e.service)); err != nil {
		t.Fatal(err)
	}
	_, waitWriters = e.runLoad(ctx, 4, 50, 300) // events no slot holds
	waitWriters()
	err := e.drainErr()
	if !errors.Is(err, relay.ErrSlotLost) || !strings.Contains(err.Error(), "ecst relay --recover-slot") {
		t.Fatalf("relay on a lost slot: %v, want ErrSlotLost naming --recover-slot", err)
	}
	t.Logf("relay on a lost slot: %v", err)
	e.recoverSlot()
	e.topicMatchesSource()
	// And the new slot streams as the old one did.
	log, waitWriters = e.runLoad(ctx, 4, 50, 300)
	waitWriters()
	e.drain()
	e.check(log)
}

// TestWALSlotInvalidated: a slot that falls more than
// max_slot_wal_keep_size behind (its relay stopped) is invalidated by
// PostgreSQL at a checkpoint; the relay stops with ErrSlotInvalidated and
// the recovery, which then works. On a cluster of its own: the setting is
// the server's.
func TestWALSlotInvalidated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{Logical: true,
		Settings: map[string]string{"max_slot_wal_keep_size": "1MB", "wal_keep_size": "0"}})
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Stop() //nolint:errcheck
	pool, err := pgxpool.New(ctx, cluster.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := migrate.Up(ctx, pool); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOpts{dbURL: cluster.URL("postgres"), wal: true})
	log, waitWriters := e.runLoad(ctx, 4, 50, 300)
	waitWriters()
	e.drain()
	e.check(log)
	// The relay is stopped; writers go on, and the WAL moves on by more
	// than the slot may keep.
	_, waitWriters = e.runLoad(ctx, 4, 50, 300)
	waitWriters()
	var status string
	for i := 0; status != "lost"; i++ {
		if i == 10 {
			t.Fatalf("the slot is %q after %d WAL segments and checkpoints", status, i)
		}
		if _, err := pool.Exec(ctx, "CREATE TABLE IF NOT EXISTS filler (x int); INSERT INTO filler VALUES (1); SELECT pg_switch_wal(); CHECKPOINT"); err != nil {
			t.Fatal(err)
		}
		if err := pool.QueryRow(ctx, "SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1", relay.SlotName(e.service)).Scan(&status); err != nil {
			t.Fatal(err)
		}
	}
	err = e.drainErr()
	if !errors.Is(err, relay.ErrSlotInvalidated) || !strings.Contains(err.Error(), "ecst relay --recover-slot") {
		t.Fatalf("relay on an invalidated slot: %v, want ErrSlotInvalidated naming --recover-slot", err)
	}
	t.Logf("relay on an invalidated slot: %v", err)
	e.recoverSlot()
	e.topicMatchesSource()
	log, waitWriters = e.runLoad(ctx, 4, 50, 300)
	waitWriters()
	e.drain()
	e.check(log)
}

// TestWALSlotHealth: the leader reports the slot (health, metrics), and on
// a database with no ecst traffic the slot still advances: keepalives and
// heartbeats let the relay confirm WAL it has nothing to publish from, so
// an idle service does not keep WAL from being removed.
func TestWALSlotHealth(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, envOpts{wal: true})
	reg := prometheus.NewRegistry()
	cfg := e.relayConfig()
	cfg.Metrics = relay.NewMetrics(reg)
	r, err := relay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	wait.Eventually(t, 30*time.Second, "the slot's health", func() bool { h := r.Health(); return h != nil && h.Exists })
	if h := r.Health(); h.Err != nil || h.Slot != relay.SlotName(e.service) || h.WALStatus == "lost" || h.RetainedBytes <= 0 {
		t.Fatalf("health %+v", h)
	}
	if got := testkit.Metric(t, reg, "ecst_relay_slot_retained_bytes"); got <= 0 {
		t.Errorf("ecst_relay_slot_retained_bytes = %v", got)
	}
	// WAL with no ecst event in it: the slot passes it all the same.
	if _, err := e.pool.Exec(ctx, "CREATE TABLE unrelated (x int); INSERT INTO unrelated SELECT generate_series(1, 20000)"); err != nil {
		t.Fatal(err)
	}
	wait.Eventually(t, 30*time.Second, "the slot to pass WAL without events", e.caughtUp())
	// The heartbeats measure the lag (sampled every 5s).
	wait.Eventually(t, 30*time.Second, "ecst_relay_slot_lag_seconds", func() bool {
		lag := testkit.Metric(t, reg, "ecst_relay_slot_lag_seconds")
		return lag > 0 && lag < 5
	})
}

// TestTableRelayWarnsOfALeftSlot: a relay of the table transport that
// finds a slot of the WAL transport left behind says so (it keeps WAL),
// and names the command that drops it.
func TestTableRelayWarnsOfALeftSlot(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, envOpts{wal: true})
	opts := relay.SwitchOptions{Service: e.service}
	relay.WithoutSwitchWait(&opts)
	relay.WithoutSlotDrop(&opts)
	if _, err := relay.Switch(ctx, e.pool, outbox.TransportTable, opts); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg := e.relayConfig()
	cfg.Transport = outbox.TransportTable
	cfg.Metrics = relay.NewMetrics(reg)
	stop := e.runRelay(cfg)
	wait.Eventually(t, 30*time.Second, "the warning", func() bool {
		return strings.Contains(e.w.RelayLog(), "ecst outbox switch table") && testkit.Metric(t, reg, "ecst_relay_slot_retained_bytes") > 0
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
