package consumer_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ecst-io/ecst/consumer"
	"github.com/ecst-io/ecst/internal/pgident"
	"github.com/ecst-io/ecst/internal/pgtest"
	"github.com/ecst-io/ecst/internal/wait"
)

// TestMirrorTableNames: a mirror and its rebuild work on a table of any
// name, written as in SQL: mixed case (folded), quoted with capitals and
// spaces, schema-qualified. Batches of both sizes run: statement by
// statement, and COPY through a staging table.
func TestMirrorTableNames(t *testing.T) {
	t.Parallel()
	for label, table := range map[string]string{ // labels name the topic: Kafka takes no quotes or spaces
		"mixed-case": "BookMirror", "quoted": `"Bad Name"`, "quoted-schema": `"My Schema"."Book Mirror"`, "schema": `analytics.BookMirror`,
	} {
		t.Run(label, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			w := newWorld(t)
			w.history(5, 900, 300) // a first batch past the COPY threshold
			name, err := pgident.Parse(table)
			if err != nil {
				t.Fatal(err)
			}
			pool := pgtest.NewDB(t)
			if name.Schema != "" {
				if _, err := pool.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{name.Schema}.Sanitize()); err != nil {
					t.Fatal(err)
				}
			}
			mirror, err := consumer.NewMirror(w.schema)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := pool.Exec(ctx, mirror.CreateTable(name.Quoted())); err != nil {
				t.Fatal(err)
			}
			pg := &consumer.Postgres[map[string]any]{Pool: pool, Table: table, Projection: mirror}
			m := &model{store: pg, durable: true, pool: pool, snapshot: func() map[string]map[string]any { return pgSnapshot(t, pool, name.Quoted()) }}
			cfg := consumer.Config[map[string]any]{Name: "mirror:" + name.String(), Topic: w.topic, KafkaOpts: w.opts(), Registry: w.registry, Store: pg}
			c, err := consumer.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := catchUp(t, c); err != nil {
				t.Fatal(err)
			}
			w.assertModel(t, m)

			// Small batches after the big one. A catch-up goes to the end
			// offsets it sees at start, which a real broker moves past the
			// transaction a moment after it commits: catch up until it has.
			w.write(w.upsert("k1", 10_000), w.tombstone("k2"))
			wait.Eventually(t, time.Minute, "k1 at version 10000 and k2 deleted", func() bool {
				if err := catchUp(t, c); err != nil {
					t.Fatal(err)
				}
				snap := m.snapshot()
				_, k2 := snap["k2"]
				return snap["k1"]["version"] == int64(10_000) && !k2
			})
			w.assertModel(t, m)

			if _, err := pool.Exec(ctx, "DELETE FROM "+name.Quoted()); err != nil {
				t.Fatal(err)
			}
			if err := consumer.Rebuild(ctx, cfg, pg); err != nil {
				t.Fatal(err)
			}
			w.assertModel(t, m)
			var left int
			if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_class WHERE relname LIKE '%ecst%' AND relkind = 'r'`).Scan(&left); err != nil || left != 0 {
				t.Fatalf("%d shadow or old tables left behind (%v)", left, err)
			}
		})
	}
}

// catchUp runs c.CatchUp with a deadline.
func catchUp(t *testing.T, c *consumer.Consumer[map[string]any]) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return c.CatchUp(ctx)
}
