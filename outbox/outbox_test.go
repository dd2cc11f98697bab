package outbox_test

import (
	"bytes"
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/ecst-io/ecst/internal/pgtest"
	"github.com/ecst-io/ecst/outbox"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestMigrateFromEmpty(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t, pgtest.Empty())

	st, err := outbox.Status(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	all, _ := outbox.Migrations()
	if len(st) != len(all) || len(all) == 0 {
		t.Fatalf("status lists %d migrations, want %d", len(st), len(all))
	}
	for _, s := range st {
		if s.Applied() {
			t.Fatalf("migration %d applied on an empty database", s.Version)
		}
	}
	if err := outbox.CheckMigrated(ctx, pool); err == nil {
		t.Fatal("CheckMigrated passed on an empty database")
	}

	applied, err := outbox.Migrate(ctx, pool)
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
	if !contains(opts, "autovacuum_vacuum_scale_factor=0") {
		t.Errorf("outbox autovacuum not tuned: %v", opts)
	}

	// A second run is a no-op.
	again, err := outbox.Migrate(ctx, pool)
	if err != nil || len(again) != 0 {
		t.Fatalf("second migrate applied %d (err %v), want none", len(again), err)
	}
	st, _ = outbox.Status(ctx, pool)
	for _, s := range st {
		if !s.Applied() {
			t.Errorf("migration %d pending after migrate", s.Version)
		}
	}
	if err := outbox.CheckMigrated(ctx, pool); err != nil {
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
			ms, err := outbox.Migrate(ctx, pool)
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
	all, _ := outbox.Migrations()
	if total != len(all) {
		t.Fatalf("migrators applied %d migrations in all, want each of %d exactly once", total, len(all))
	}
	var rows int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM ecst.schema_migrations").Scan(&rows); err != nil || rows != len(all) {
		t.Fatalf("schema_migrations has %d rows (err %v), want %d", rows, err, len(all))
	}
}

func TestInsertRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t)
	hs := []outbox.Header{{Key: "a", Value: []byte("1")}, {Key: "empty", Value: nil}, {Key: "bin", Value: []byte{0, 255, 10}}}
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := outbox.Insert(ctx, tx, outbox.Row{Topic: "t", Key: "k1", Value: []byte("v"), Headers: hs}); err != nil {
			return err
		}
		return outbox.Insert(ctx, tx, outbox.Row{Topic: "t", Key: "k2", Value: nil, Headers: hs})
	})
	if err != nil {
		t.Fatal(err)
	}
	rows, _ := pool.Query(ctx, "SELECT key, value, headers FROM ecst.outbox ORDER BY id")
	type row struct {
		Key     string
		Value   []byte
		Headers []byte
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Key != "k1" || string(got[0].Value) != "v" || got[1].Value != nil {
		t.Fatalf("rows = %+v", got)
	}
	dec, err := outbox.DecodeHeaders(got[0].Headers)
	if err != nil {
		t.Fatal(err)
	}
	if len(dec) != len(hs) {
		t.Fatalf("decoded %d headers, want %d", len(dec), len(hs))
	}
	for i := range hs {
		if dec[i].Key != hs[i].Key || !bytes.Equal(dec[i].Value, hs[i].Value) {
			t.Errorf("header %d = %+v, want %+v", i, dec[i], hs[i])
		}
	}
}

func TestDecodeHeadersRejectsGarbage(t *testing.T) {
	t.Parallel()
	for _, b := range [][]byte{nil, {}, {2}, {1, 5, 'a'}, {1, 1, 'a', 9}, {1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}} {
		if _, err := outbox.DecodeHeaders(b); err == nil {
			t.Errorf("DecodeHeaders(%v) succeeded", b)
		}
	}
}

func FuzzDecodeHeaders(f *testing.F) {
	f.Add(outbox.EncodeHeaders([]outbox.Header{{Key: "k", Value: []byte("v")}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		hs, err := outbox.DecodeHeaders(b)
		if err != nil {
			return
		}
		again, err := outbox.DecodeHeaders(outbox.EncodeHeaders(hs))
		if err != nil || len(again) != len(hs) {
			t.Fatalf("re-encoding %v: %v, %d headers, want %d", b, err, len(again), len(hs))
		}
		for i := range hs {
			if again[i].Key != hs[i].Key || !bytes.Equal(again[i].Value, hs[i].Value) {
				t.Fatalf("header %d changed on re-encoding: %+v, want %+v", i, again[i], hs[i])
			}
		}
	})
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
