package console_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/internal/console"
	"github.com/ecst-io/ecst/internal/kafkatest"
	"github.com/ecst-io/ecst/internal/pgtest"
	"github.com/ecst-io/ecst/internal/status"
)

// Sizes of the benchmarks' system (docs/benchmarks.md, "ecst status and
// the console").
const (
	benchEntities = 100
	benchBacklog  = 1_000_000
	benchShards   = 4
)

// bigSystem is benchEntities entities, each with a 3-partition topic, a
// mirror that is behind, a recorded verify and a republish run, and an
// outbox of benchBacklog rows across benchShards shards that no relay
// leads.
func bigSystem(b *testing.B) status.Options {
	ctx := context.Background()
	url := pgtest.NewDBURL(b)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	broker := kafkatest.New(b)
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker.Seeds...))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cl.Close)
	adm := kadm.NewClient(cl)
	cfg := &config.Config{Service: "bench", Outbox: config.Outbox{Shards: benchShards}, Entities: map[string]*config.Entity{}}
	var topicNames []string
	for i := range benchEntities {
		name := fmt.Sprintf("entity%03d", i)
		e := &config.Entity{Name: name, Topic: name + ".state", Partitions: 3}
		cfg.Entities[name] = e
		topicNames = append(topicNames, e.Topic)
	}
	compact := "compact"
	if _, err := adm.CreateTopics(ctx, 3, 1, map[string]*string{"cleanup.policy": &compact}, topicNames...); err != nil {
		b.Fatal(err)
	}
	for _, sql := range []string{
		fmt.Sprintf(`INSERT INTO ecst.outbox (shard, topic, key, value, headers)
			SELECT i %% %d, 'entity' || lpad((i %% %d)::text, 3, '0') || '.state', 'k' || i, NULL, ''::bytea
			FROM generate_series(1, %d) i`, benchShards, benchEntities, benchBacklog),
		fmt.Sprintf(`INSERT INTO ecst.consumer_offsets (consumer, topic, partition, next_offset, updated_at)
			SELECT 'mirror:m' || e, 'entity' || lpad(e::text, 3, '0') || '.state', p, 0, now() - interval '10 minutes'
			FROM generate_series(0, %d) e, generate_series(0, 2) p`, benchEntities-1),
		fmt.Sprintf(`INSERT INTO ecst.verify_runs (entity, topic, started_at, finished_at, duration, result, report)
			SELECT 'entity' || lpad(e::text, 3, '0'), 'entity' || lpad(e::text, 3, '0') || '.state', now() - interval '1 hour' - r * interval '1 hour',
				now() - interval '1 hour' - r * interval '1 hour', interval '1 second', 'in_sync', '{"samples": {}}'
			FROM generate_series(0, %d) e, generate_series(0, 9) r`, benchEntities-1),
		fmt.Sprintf(`INSERT INTO ecst.republish_runs (entity, selection, state, rows_selected, rows_written, finished_at)
			SELECT 'entity' || lpad(e::text, 3, '0'), '{}', 'completed', 1000, 1000, now()
			FROM generate_series(0, %d) e, generate_series(0, 4) r`, benchEntities-1),
		`ANALYZE`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			b.Fatal(err)
		}
	}
	return status.Options{DB: pool, Admin: adm, Config: cfg}
}

func checkBig(b *testing.B, s *status.Snapshot) {
	if len(s.Entities) != benchEntities || len(s.ReadModels) != benchEntities || len(s.Shards) != benchShards ||
		!s.Shards[0].Capped || len(s.Republish) != benchEntities || s.Entities[0].LastVerify == nil {
		b.Fatalf("snapshot: %d entities, %d read models, %d shards (%+v), %d runs", len(s.Entities), len(s.ReadModels), len(s.Shards), s.Shards, len(s.Republish))
	}
}

// BenchmarkStatusGather: `ecst status`'s snapshot of 100 entities and a
// 1M-row backlog.
func BenchmarkStatusGather(b *testing.B) {
	o := bigSystem(b)
	ctx := context.Background()
	start := time.Now()
	s, err := status.Gather(ctx, o)
	if err != nil {
		b.Fatal(err)
	}
	checkBig(b, s)
	b.Logf("first gather: %s", time.Since(start))
	for b.Loop() {
		if _, err := status.Gather(ctx, o); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConsoleOverview: the console's overview page of that system,
// served and rendered.
func BenchmarkConsoleOverview(b *testing.B) {
	o := bigSystem(b)
	srv, err := console.New(console.Config{Status: o})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	for b.Loop() {
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		if rec.Code != http.StatusOK {
			b.Fatalf("%d: %s", rec.Code, rec.Body)
		}
	}
}
