package consumer_test

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/consumer"
	"github.com/ecst-io/ecst/examples/customers"
)

const benchEntities = 100_000

func replayWorld(b *testing.B) *world {
	b.Helper()
	w := newWorld(b)
	w.seed(benchEntities, 10_000)
	return w
}

// BenchmarkReplay replays 100k distinct entities per op: raw consumption
// (no decoding) as the baseline, then memory models, generic and typed.
func BenchmarkReplay(b *testing.B) {
	w := replayWorld(b)
	ctx := context.Background()
	b.Run("raw", func(b *testing.B) {
		for range b.N {
			cl, err := kgo.NewClient(append(w.opts(), kgo.ConsumeTopics(w.topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
			if err != nil {
				b.Fatal(err)
			}
			for seen := 0; seen < benchEntities; {
				seen += cl.PollRecords(ctx, 10_000).NumRecords()
			}
			cl.Close()
		}
		b.ReportMetric(float64(b.N*benchEntities)/b.Elapsed().Seconds(), "entities/s")
	})
	b.Run("memory-generic", func(b *testing.B) {
		for range b.N {
			m := consumer.NewMemory[map[string]any]()
			c, _ := consumer.New(consumer.Config[map[string]any]{Name: "g", Topic: w.topic, KafkaOpts: w.opts(), Registry: w.registry, Store: m, MaxBatch: 10_000})
			if err := c.CatchUp(ctx); err != nil || m.Len() != benchEntities {
				b.Fatal(err, m.Len())
			}
		}
		b.ReportMetric(float64(b.N*benchEntities)/b.Elapsed().Seconds(), "entities/s")
	})
	b.Run("memory-typed", func(b *testing.B) {
		for range b.N {
			m := consumer.NewMemory[customers.Customer]()
			c, _ := consumer.New(consumer.Config[customers.Customer]{Name: "t", Topic: w.topic, KafkaOpts: w.opts(), Registry: w.registry, Store: m, MaxBatch: 10_000, ReaderSchema: customers.Schema})
			if err := c.CatchUp(ctx); err != nil || m.Len() != benchEntities {
				b.Fatal(err, m.Len())
			}
		}
		b.ReportMetric(float64(b.N*benchEntities)/b.Elapsed().Seconds(), "entities/s")
	})
}
