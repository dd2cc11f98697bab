package capture_test

import (
	"context"
	"testing"
	"time"

	"github.com/ecst-io/ecst/capture"
	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/republish"
)

// BenchmarkUpdateToTopic measures a one-statement UPDATE of 100k captured
// rows, from its commit until every key's new state is published (the
// outbox drained behind the marker's resolution), against `ecst republish
// --where` of the same keys, from its start until the same: one run of
// each, on one database, with the relay running (kfake). Compare the two
// seconds. docs/benchmarks.md has a run.
func BenchmarkUpdateToTopic(b *testing.B) {
	const rows = 100_000
	ctx := context.Background()
	w := ecsttest.New(b, ecsttest.Options{})
	w.Exec(`INSERT INTO customers (id, version, name, email) SELECT 'c' || lpad(i::text, 6, '0'), 1, 'name ' || i, 'c' || i || '@example.com' FROM generate_series(1, 100000) i`)
	if _, err := capture.Enable(ctx, w.Pool, w.Entity, false); err != nil {
		b.Fatal(err)
	}
	res, err := capture.NewResolver(capture.ResolverConfig{Pool: w.Pool, Config: w.Config, Publisher: w.Pub, Kafka: w.Kafka()})
	if err != nil {
		b.Fatal(err)
	}
	cfg := w.RelayConfig()
	cfg.Resolver = res
	cfg.PollMax = 5 * time.Millisecond
	w.RunRelay(cfg)
	drained := func(what string) {
		wait.Eventually(b, 10*time.Minute, what, func() bool { return w.OutboxLen() == 0 })
	}
	drained("the first publication")
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		w.Exec(`UPDATE customers SET version = version + 1, name = name || '.'`)
		committed := time.Since(start)
		drained("the captured UPDATE to be published")
		captured := time.Since(start) - committed // from the commit

		start = time.Now()
		if _, err := republish.Run(ctx, republish.Config{Pool: w.Pool, Publisher: w.Pub, Entity: w.Entity, Kafka: w.Kafka()},
			republish.Options{Where: "true", MaxBacklog: -1}); err != nil {
			b.Fatal(err)
		}
		drained("the republish to be published")
		republished := time.Since(start)
		b.ReportMetric(committed.Seconds(), "s/update-commit")
		b.ReportMetric(captured.Seconds(), "s/captured")
		b.ReportMetric(republished.Seconds(), "s/republish")
		b.ReportMetric(captured.Seconds()/republished.Seconds(), "captured/republish")
		b.Logf("%d rows: the UPDATE took %s to commit, and was published %s after its commit; republish --where published them in %s", rows, committed, captured, republished)
	}
}
