package source_test

import (
	"context"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/internal/pgtest"
	"github.com/ecst-io/ecst/internal/source"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestMixedCaseKeyColumn: the key is found among the query's columns
// regardless of case, as the mapper finds it, and read under the name the
// query gives it: a quoted "BookId" is no bookid.
func TestMixedCaseKeyColumn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t, pgtest.Empty())
	if _, err := pool.Exec(ctx, `CREATE SCHEMA "Book Store";
		CREATE TABLE "Book Store"."Books" ("BookId" text PRIMARY KEY, "Version" bigint NOT NULL, title text NOT NULL);
		INSERT INTO "Book Store"."Books" VALUES ('b1', 1, 'One'), ('b2', 3, 'Two')`); err != nil {
		t.Fatal(err)
	}
	e := &config.Entity{Name: "book", SchemaText: `{"type":"record","name":"Book","fields":[
		{"name":"BookId","type":"string"},{"name":"Version","type":"long"},{"name":"title","type":"string"}]}`,
		Source: &config.Source{Table: `"Book Store"."Books"`, Key: "bookid", Version: "version",
			Query: `SELECT "BookId", "Version", title FROM "Book Store"."Books"`}}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	src, err := source.Plan(ctx, conn.Conn(), e)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, src.KeysSQL())
	if err != nil {
		t.Fatal(err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || !slices.Equal(keys, []string{"b1", "b2"}) {
		t.Fatalf("keys %v, %v", keys, err)
	}
	rows, err = conn.Query(ctx, src.RowsSQL(), []string{"b2"})
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		_, version, state, err := src.Mapper.Map(vals)
		if err != nil {
			t.Fatal(err)
		}
		if version != 3 {
			t.Errorf("version %d, want 3", version)
		}
		got = append(got, state)
	}
	if rows.Err() != nil || len(got) != 1 || got[0]["BookId"] != "b2" || got[0]["title"] != "Two" {
		t.Fatalf("rows of b2: %v, %v", got, rows.Err())
	}
}
