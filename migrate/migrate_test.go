package migrate_test

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ecst-io/ecst/internal/pgtest"
	"github.com/ecst-io/ecst/migrate"
	"github.com/ecst-io/ecst/outbox"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestMigrateFromEmpty(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t, pgtest.Empty())

	st, err := migrate.Status(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	all, _ := migrate.All()
	if len(st) != len(all) || len(all) == 0 {
		t.Fatalf("status lists %d migrations, want %d", len(st), len(all))
	}
	for _, s := range st {
		if s.Applied() {
			t.Fatalf("migration %d applied on an empty database", s.Version)
		}
	}
	if err := migrate.Check(ctx, pool); err == nil {
		t.Fatal("CheckMigrated passed on an empty database")
	}

	applied, err := migrate.Up(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) != len(all) {
		t.Fatalf("applied %d migrations, want %d", len(applied), len(all))
	}
	for _, table := range []string{"ecst.outbox", "ecst.relay_cursors", "ecst.republish_runs", "ecst.consumer_offsets", "ecst.consumer_skipped", "ecst.schema_migrations"} {
		var ok bool
		if err := pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", table).Scan(&ok); err != nil || !ok {
			t.Errorf("table %s missing after migrate (err %v)", table, err)
		}
	}
	var parts []string
	rows, err := pool.Query(ctx, "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'ecst.outbox'::regclass ORDER BY 1")
	if err == nil {
		parts, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil || !slices.Equal(parts, []string{"ecst.outbox_0", "ecst.outbox_1", "ecst.outbox_2", "ecst.outbox_3", "ecst.outbox_4", "ecst.outbox_5", "ecst.outbox_6", "ecst.outbox_7"}) {
		t.Errorf("outbox partitions %v (err %v)", parts, err)
	}

	// A second run is a no-op.
	again, err := migrate.Up(ctx, pool)
	if err != nil || len(again) != 0 {
		t.Fatalf("second migrate applied %d (err %v), want none", len(again), err)
	}
	st, _ = migrate.Status(ctx, pool)
	for _, s := range st {
		if !s.Applied() {
			t.Errorf("migration %d pending after migrate", s.Version)
		}
	}
	if err := migrate.Check(ctx, pool); err != nil {
		t.Fatal(err)
	}
}

func TestMigrateConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t, pgtest.Empty())
	const n = 4
	var wg sync.WaitGroup
	errs := make([]error, n)
	counts := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ms, err := migrate.Up(ctx, pool)
			errs[i], counts[i] = err, len(ms)
		}()
	}
	wg.Wait()
	total := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("migrator %d: %v", i, errs[i])
		}
		total += counts[i]
	}
	all, _ := migrate.All()
	if total != len(all) {
		t.Fatalf("migrators applied %d migrations in all, want each of %d exactly once", total, len(all))
	}
	var rows int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM ecst.schema_migrations").Scan(&rows); err != nil || rows != len(all) {
		t.Fatalf("schema_migrations has %d rows (err %v), want %d", rows, err, len(all))
	}
}

// TestMigrateMovesPendingRows upgrades a 001 outbox with rows waiting (and
// some already published and deleted, so that ids have gaps): 002 moves
// them into the partitioned outbox with their ids and everything else, they
// are pending, and new ids continue above every id the old sequence drew.
func TestMigrateMovesPendingRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t, pgtest.Empty())
	if _, err := migrate.UpTo(ctx, pool, 1); err != nil {
		t.Fatal(err)
	}
	// 200k ids drawn (three partitions' worth); every third row waits.
	if _, err := pool.Exec(ctx, `INSERT INTO ecst.outbox (shard, topic, key, value, headers, created_at)
		SELECT g % 2, 't', 'k' || g, CASE WHEN g % 7 = 0 THEN NULL ELSE int8send(g) END, '\x01', now() - interval '1 hour'
		FROM generate_series(1, 200000) g;
		DELETE FROM ecst.outbox WHERE id % 3 <> 0`); err != nil {
		t.Fatal(err)
	}
	type row struct {
		ID      int64
		Shard   int16
		Topic   string
		Key     string
		Value   []byte
		Headers []byte
		At      time.Time
	}
	read := func() []row {
		t.Helper()
		rows, err := pool.Query(ctx, "SELECT id, shard, topic, key, value, headers, created_at FROM ecst.outbox ORDER BY id")
		if err != nil {
			t.Fatal(err)
		}
		out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	before := read()
	if len(before) != 66666 {
		t.Fatalf("%d rows before the upgrade", len(before))
	}
	applied, err := migrate.Up(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) == 0 || applied[0].Version != 2 {
		t.Fatalf("applied %v", applied)
	}
	after := read()
	if len(after) != len(before) {
		t.Fatalf("%d rows after the upgrade, %d before", len(after), len(before))
	}
	for i := range before {
		b, a := before[i], after[i]
		if a.ID != b.ID || a.Shard != b.Shard || a.Topic != b.Topic || a.Key != b.Key || !bytes.Equal(a.Value, b.Value) ||
			(a.Value == nil) != (b.Value == nil) || !bytes.Equal(a.Headers, b.Headers) || !a.At.Equal(b.At) {
			t.Fatalf("row %d: %+v after the upgrade, %+v before", i, a, b)
		}
	}
	n, err := outbox.PendingCount(ctx, pool, 0)
	if err != nil || n != int64(len(before)) {
		t.Fatalf("%d rows pending after the upgrade (err %v), want %d", n, err, len(before))
	}
	var id int64
	if err := pool.QueryRow(ctx, `INSERT INTO ecst.outbox (topic, key, headers) VALUES ('t', 'new', '\x01') RETURNING id`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	if id != 200001 {
		t.Fatalf("the first id after the upgrade is %d, want 200001", id)
	}
	if err := migrate.Check(ctx, pool); err != nil {
		t.Fatal(err)
	}
}
