package migrate_test

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/ecst-io/ecst/internal/pgtest"
	"github.com/ecst-io/ecst/migrate"
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
	for _, table := range []string{"ecst.outbox", "ecst.republish_runs", "ecst.consumer_offsets", "ecst.consumer_skipped", "ecst.schema_migrations"} {
		var ok bool
		if err := pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", table).Scan(&ok); err != nil || !ok {
			t.Errorf("table %s missing after migrate (err %v)", table, err)
		}
	}
	var opts []string
	if err := pool.QueryRow(ctx, "SELECT reloptions FROM pg_class WHERE oid = 'ecst.outbox'::regclass").Scan(&opts); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(opts, "autovacuum_vacuum_scale_factor=0") {
		t.Errorf("outbox autovacuum not tuned: %v", opts)
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
