package consumer_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/consumer"
	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/producer"
)

// freshness reads ecst_consumer_commit_to_apply_seconds from reg: how many
// records it counted, and the sum of their ages.
func freshness(t *testing.T, reg *prometheus.Registry) (count uint64, sum float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "ecst_consumer_commit_to_apply_seconds" {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleCount(), h.GetSampleSum()
		}
	}
	t.Fatal("ecst_consumer_commit_to_apply_seconds is not registered")
	return 0, 0
}

// occurred stamps r with the ecst-occurred-at header the producer writes.
func occurred(r *kgo.Record, at time.Time) *kgo.Record {
	r.Headers = append(r.Headers, kgo.RecordHeader{Key: producer.HeaderOccurredAt, Value: []byte(at.UTC().Format(time.RFC3339Nano))})
	return r
}

// TestCommitToApply: on every store, the consumer measures how long after
// its ecst-occurred-at each live record was applied. The history a model
// replays from offset 0 is not counted (it says nothing of how fresh the
// model is once it serves); what a durable model catches up on after a
// stop is, since it served stale rows meanwhile.
func TestCommitToApply(t *testing.T) {
	t.Parallel()
	for _, sk := range stores {
		t.Run(sk.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			w := newWorld(t)
			for i := range 20 {
				w.write(occurred(w.upsert("old"+string(rune('a'+i)), 1), time.Now().Add(-time.Hour)))
			}
			m := sk.make(t, w)
			reg := prometheus.NewRegistry()
			c := w.consumer(t, m, "fresh", func(cfg *consumer.Config[map[string]any]) { cfg.Registerer = reg })
			stop := start(t, c)
			waitReady(t, c)
			if n, _ := freshness(t, reg); n != 0 {
				t.Fatalf("the replay of the history counted %d records", n)
			}

			// Live: three records that occurred 2s ago, one with no header.
			w.write(occurred(w.upsert("a", 1), time.Now().Add(-2*time.Second)), occurred(w.upsert("b", 1), time.Now().Add(-2*time.Second)))
			w.write(occurred(w.upsert("c", 1), time.Now().Add(-2*time.Second)), w.upsert("d", 1))
			var n uint64
			var sum float64
			if err := wait.Until(ctx, time.Minute, 10*time.Millisecond, "the live records to be applied", func() (bool, error) {
				_, hasD := m.snapshot()["d"]
				n, sum = freshness(t, reg)
				return hasD && n >= 3, nil
			}); err != nil {
				t.Fatal(err)
			}
			if n != 3 || sum < 6 || sum > 3*(2+60) {
				t.Fatalf("live: %d records, ages summing to %.3fs; want 3, each 2s old or a little more", n, sum)
			}
			if err := stop(); err != nil {
				t.Fatal(err)
			}

			// Written while the model is down, applied once it is back: the
			// same store resumes from its offsets (a Memory store within its
			// process, a Postgres one anywhere).
			w.write(occurred(w.upsert("e", 1), time.Now().Add(-30*time.Second)), occurred(w.upsert("f", 1), time.Now().Add(-30*time.Second)))
			reg2 := prometheus.NewRegistry()
			c2 := w.consumer(t, m, "fresh", func(cfg *consumer.Config[map[string]any]) { cfg.Registerer = reg2 })
			stop = start(t, c2)
			waitReady(t, c2)
			if n, sum = freshness(t, reg2); n != 2 || sum < 60 {
				t.Fatalf("caught up after a stop: %d records, ages summing to %.3fs; want the 2 written while it was down, each 30s old or more", n, sum)
			}
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			if m.durable {
				return
			}
			// A new process's Memory store starts over from offset 0: a
			// replay, not counted.
			reg3 := prometheus.NewRegistry()
			c3 := w.consumer(t, sk.make(t, w), "fresh", func(cfg *consumer.Config[map[string]any]) { cfg.Registerer = reg3 })
			start(t, c3)
			waitReady(t, c3)
			if n, _ := freshness(t, reg3); n != 0 {
				t.Fatalf("a new memory model's replay counted %d records", n)
			}
		})
	}
}
