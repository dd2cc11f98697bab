package relay_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/ecst-io/ecst/internal/kafkatest"
	"github.com/ecst-io/ecst/internal/testkit"
	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/relay"
)

func runOnce(t *testing.T, cfg relay.Config) error {
	t.Helper()
	r, err := relay.New(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	return r.Run(ctx)
}

func TestRelayConfigErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})

	t.Run("unknown topic", func(t *testing.T) {
		cfg := e.relayConfig()
		cfg.Drain = true
		cfg.Topics = []string{e.topic, "no-such-topic-" + e.service}
		err := runOnce(t, cfg)
		if !errors.Is(err, relay.ErrTopicMissing) || !strings.Contains(err.Error(), "ecst topics apply") || !strings.Contains(err.Error(), "no-such-topic") {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("row for an unknown topic", func(t *testing.T) {
		db := newEnv(t, envOpts{})
		err := pgx.BeginFunc(context.Background(), db.pool, func(tx pgx.Tx) error {
			return outbox.Insert(context.Background(), tx, outbox.Row{Topic: "ghost-" + db.service, Key: "k", Value: []byte{0}, Headers: nil})
		})
		if err != nil {
			t.Fatal(err)
		}
		cfg := db.relayConfig()
		cfg.Drain = true
		err = runOnce(t, cfg)
		if !errors.Is(err, relay.ErrTopicMissing) {
			t.Fatalf("err = %v", err)
		}
		if db.outboxCount() != 1 {
			t.Fatal("the row was lost")
		}
	})

	t.Run("unreachable broker", func(t *testing.T) {
		cfg := e.relayConfig()
		cfg.Drain = true
		cfg.KafkaOpts = []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1"), kgo.RequestRetries(1), kgo.RetryTimeout(2 * time.Second), kgo.DialTimeout(time.Second)}
		err := runOnce(t, cfg)
		if err == nil || !strings.Contains(err.Error(), "ECST_BROKERS") {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("wrong credentials", func(t *testing.T) {
		b := kafkatest.NewSASL(t)
		cfg := e.relayConfig()
		cfg.Drain = true
		cfg.KafkaOpts = []kgo.Opt{kgo.SeedBrokers(b.Seeds...), kgo.RequestRetries(1), kgo.RetryTimeout(2 * time.Second),
			kgo.SASL(scram.Auth{User: kafkatest.SASLUser, Pass: "hunter2-wrong"}.AsSha256Mechanism())}
		err := runOnce(t, cfg)
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Fatalf("err = %v", err)
		}
		if !strings.Contains(err.Error(), "SASL") && !strings.Contains(err.Error(), "ECST_BROKERS") {
			t.Fatalf("error does not point at the credentials: %v", err)
		}
	})

	t.Run("bad settings", func(t *testing.T) {
		cfg := e.relayConfig()
		cfg.Service = ""
		if _, err := relay.New(cfg); err == nil || !strings.Contains(err.Error(), "service") {
			t.Fatalf("err = %v", err)
		}
		cfg = e.relayConfig()
		cfg.Shards = []int{3}
		if _, err := relay.New(cfg); err == nil || !strings.Contains(err.Error(), "shard 3") {
			t.Fatalf("err = %v", err)
		}
	})
}

// insertHuge puts a row whose value no broker accepts (over 1 MB) between
// two normal writes of another key.
func insertHuge(t *testing.T, e *env) {
	t.Helper()
	ctx := context.Background()
	if _, err := e.write(ctx, "before", false); err != nil {
		t.Fatal(err)
	}
	err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
		return e.transport().Insert(ctx, tx, outbox.Row{Topic: e.topic, Key: "huge", Value: bytes.Repeat([]byte{0}, 2<<20),
			Headers: []outbox.Header{{Key: "ecst-event-type", Value: []byte("customer.upserted")}}})
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.write(ctx, "after", false); err != nil {
		t.Fatal(err)
	}
}

func TestRelayRejectHalt(t *testing.T) {
	t.Parallel()
	for _, o := range transports() {
		t.Run(o.name(), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, o)
			insertHuge(t, e)
			committed := e.caughtUp()
			cfg := e.relayConfig()
			cfg.Drain = true
			err := runOnce(t, cfg)
			var rej *relay.RejectedError
			if !errors.As(err, &rej) || rej.Key != "huge" || !strings.Contains(err.Error(), "on_reject: park") {
				t.Fatalf("err = %v", err)
			}
			// Nothing is lost or skipped: all three events wait for the operator.
			if o.wal {
				if committed() {
					t.Fatal("the slot confirmed the rejected event")
				}
			} else if n := e.outboxCount(); n != 3 {
				t.Fatalf("%d rows in the outbox, want all 3", n)
			}
		})
	}
}

func TestRelayRejectPark(t *testing.T) {
	t.Parallel()
	for _, o := range transports() {
		t.Run(o.name(), func(t *testing.T) {
			t.Parallel()
			relayRejectPark(t, o)
		})
	}
}

func relayRejectPark(t *testing.T, o envOpts) {
	e := newEnv(t, o)
	insertHuge(t, e)
	committed := e.caughtUp()
	reg := prometheus.NewRegistry()
	cfg := e.relayConfig()
	cfg.Drain = true
	cfg.OnReject = relay.RejectPark
	cfg.Metrics = relay.NewMetrics(reg)
	if err := runOnce(t, cfg); err != nil {
		t.Fatal(err)
	}
	var parked int
	var key string
	if err := e.pool.QueryRow(context.Background(), "SELECT count(*), min(key) FROM ecst.outbox_parked").Scan(&parked, &key); err != nil {
		t.Fatal(err)
	}
	if parked != 1 || key != "huge" || !committed() {
		t.Fatalf("parked %d (%s), %d left", parked, key, e.backlog())
	}
	keys := map[string]bool{}
	for _, r := range e.readTopic() {
		keys[r.key] = true
	}
	if !keys["before"] || !keys["after"] || keys["huge"] {
		t.Fatalf("topic keys = %v", keys)
	}
	if got := testkit.Metric(t, reg, "ecst_relay_parked_total"); got != 1 {
		t.Fatalf("ecst_relay_parked_total = %v", got)
	}
}

// TestRelayMetricsCountRetries breaks the relay's database connections
// under it: the batch is retried, counted, and nothing is lost.
func TestRelayMetricsCountRetries(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	cfg := e.relayConfig()
	cfg.Metrics = relay.NewMetrics(reg)
	stop := e.runRelay(cfg)
	log, waitWriters := e.runLoad(ctx, 2, 50, 300)
	waitWriters()
	wait.Eventually(t, 30*time.Second, "the relay to publish", func() bool { return e.outboxCount() == 0 })
	if got := testkit.Metric(t, reg, "ecst_relay_leader"); got != 1 {
		t.Fatalf("ecst_relay_leader = %v", got)
	}
	// Block the relay's next read behind a table lock, then kill it mid-query.
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // a failed test must not keep the lock (or the pool) held
	if _, err := tx.Exec(ctx, "LOCK TABLE ecst.outbox IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	wait.Eventually(t, 30*time.Second, "the relay to block on the lock", func() bool {
		var n int
		_ = tx.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'ecst.outbox'::regclass`).Scan(&n)
		return n > 0
	})
	if _, err := tx.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()
		AND wait_event_type = 'Lock'`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	log2, wait2 := e.runLoad(ctx, 2, 50, 300)
	wait2()
	wait.Eventually(t, 30*time.Second, "the relay to publish again", func() bool { return e.outboxCount() == 0 })
	wait.Eventually(t, 30*time.Second, "a counted database error", func() bool { return testkit.Metric(t, reg, "ecst_relay_errors_total") >= 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	published := testkit.Metric(t, reg, "ecst_relay_records_published_total")
	if published < float64(log.count()+log2.count()) {
		t.Fatalf("published %v, committed %d", published, log.count()+log2.count())
	}
	if testkit.Metric(t, reg, "ecst_relay_batch_size") == 0 || testkit.Metric(t, reg, "ecst_relay_commit_to_ack_seconds") == 0 {
		t.Fatal("histograms empty")
	}
	log.committed = append(log.committed, log2.committed...)
	for k := range log2.keys {
		log.keys[k] = true
	}
	e.check(log)
}
