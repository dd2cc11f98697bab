package consumer_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/ecst-io/ecst/consumer"
	"github.com/ecst-io/ecst/internal/testkit"
)

// TestTombstoneRetentionGuard: a Postgres model last updated longer ago
// than the topic keeps tombstones may have missed deletions (their
// tombstones compacted away while it was offline). The consumer says so at
// start, in its log and in a metric.
func TestTombstoneRetentionGuard(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t)
	v := "60000" // one minute
	if _, err := kadm.NewClient(w.prod).AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "delete.retention.ms", Value: &v}}, w.topic); err != nil {
		t.Fatal(err)
	}
	w.write(w.upsert("k", 1))
	m := stores[1].make(t, w)
	run := func(logs *testkit.Buffer, reg *prometheus.Registry) {
		c := w.consumer(t, m, "retention", func(cfg *consumer.Config[map[string]any]) {
			cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
			cfg.Registerer = reg
		})
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if err := c.CatchUp(cctx); err != nil {
			t.Fatal(err)
		}
	}
	fresh := &testkit.Buffer{}
	run(fresh, prometheus.NewRegistry())
	if strings.Contains(fresh.String(), "tombstones") {
		t.Fatalf("a fresh model was warned about:\n%s", fresh.String())
	}
	// The model sat unused for an hour; meanwhile k was deleted.
	if _, err := m.pool.Exec(ctx, "UPDATE ecst.consumer_offsets SET updated_at = now() - interval '1 hour'"); err != nil {
		t.Fatal(err)
	}
	w.write(w.tombstone("k"))
	stale := &testkit.Buffer{}
	reg := prometheus.NewRegistry()
	run(stale, reg)
	if !strings.Contains(stale.String(), "longer ago than the topic keeps tombstones") || !strings.Contains(stale.String(), "ecst rebuild") {
		t.Fatalf("no warning for a stale model:\n%s", stale.String())
	}
	if got := testkit.Metric(t, reg, "ecst_consumer_tombstone_risk"); got != 1 {
		t.Fatalf("ecst_consumer_tombstone_risk = %v", got)
	}
}
