package consumer_test

import (
	"context"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ecst-io/ecst/consumer"
	"github.com/ecst-io/ecst/internal/ecsttest"
)

// auditing wraps the mirror projection and records every (partition,
// offset) it applies; applying one twice bumps dup.
type auditing struct{ *consumer.Mirror }

func (a auditing) Upsert(b *pgx.Batch, table, key string, state map[string]any, c *consumer.Change[map[string]any]) {
	a.Mirror.Upsert(b, table, key, state, c)
	audit(b, c)
}

func (a auditing) Delete(b *pgx.Batch, table, key string) {
	a.Mirror.Delete(b, table, key)
}

func audit(b *pgx.Batch, c *consumer.Change[map[string]any]) {
	b.Queue(`INSERT INTO applied (partition, "offset") VALUES ($1, $2)
		ON CONFLICT (partition, "offset") DO UPDATE SET dup = applied.dup + 1`, c.Partition, c.Offset)
}

// TestPostgresKilledMidBatch stops the consumer at random moments while it
// replays, again and again; the model ends equal to the topic, and no
// record's effect is applied twice.
func TestPostgresKilledMidBatch(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.history(11, 3000, 400)
	m := stores[1].make(t, w) // postgres
	ctx := context.Background()
	if _, err := m.pool.Exec(ctx, `CREATE TABLE applied (partition int, "offset" bigint, dup int NOT NULL DEFAULT 0, PRIMARY KEY (partition, "offset"))`); err != nil {
		t.Fatal(err)
	}
	pg := m.store.(*consumer.Postgres[map[string]any])
	pg.Projection = auditing{pg.Projection.(*consumer.Mirror)}
	// The kill moments come from a seed, logged: ECST_KILL_SEED replays them.
	seed, _, err := ecsttest.SeedFrom(os.Getenv, "ECST_KILL_SEED")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("seed %d (ECST_KILL_SEED=%d go test -run TestPostgresKilledMidBatch ./consumer/ replays its kill moments)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	for round := 0; round < 8; round++ {
		c := w.consumer(t, m, "killed")
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- c.Run(rctx) }()
		time.Sleep(time.Duration(rng.IntN(40)) * time.Millisecond) // a kill at a random moment
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
	c := w.consumer(t, m, "killed")
	start(t, c)
	waitReady(t, c)
	w.assertModel(t, m)
	var dups, applied int
	if err := m.pool.QueryRow(ctx, "SELECT coalesce(sum(dup), 0), count(*) FROM applied").Scan(&dups, &applied); err != nil {
		t.Fatal(err)
	}
	if dups != 0 {
		t.Fatalf("%d record effects applied twice", dups)
	}
	t.Logf("%d records, %d effects applied once each (later states of a key within a batch supersede earlier ones)", w.produced, applied)
}
