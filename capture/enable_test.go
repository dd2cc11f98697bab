package capture_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ecst-io/ecst/capture"
	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/relay"
)

// installed lists the capture objects in the database: triggers (table:
// name) and functions in schema ecst named capture_*.
func installed(t *testing.T, w *world) (triggers, functions []string) {
	t.Helper()
	ctx := context.Background()
	rows, err := w.Pool.Query(ctx, `SELECT tgrelid::regclass::text || ': ' || tgname FROM pg_trigger WHERE tgname LIKE 'ecst\_capture\_%' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	if triggers, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	rows, err = w.Pool.Query(ctx, `SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname = 'ecst' AND p.proname LIKE 'capture\_%' AND p.proname <> 'capture_all' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	if functions, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	return triggers, functions
}

func markers(t *testing.T, w *world) []string {
	t.Helper()
	rows, err := w.Pool.Query(context.Background(), `SELECT convert_from(value, 'UTF8') FROM ecst.outbox WHERE topic = $1 ORDER BY id`, relay.MarkerTopic)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// TestEnableDisable: enable installs one trigger per event on each table
// (idempotently), a statement writes one marker however many rows it
// touches, dry runs change nothing, and disable removes every object it
// installed.
func TestEnableDisable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, ecsttest.Options{Offline: true})
	w.Exec(`CREATE TABLE customer_tiers (customer_id text, tier text)`)
	w.Entity.Source.CaptureFrom = []config.CaptureFrom{{Table: "customer_tiers", Key: "customer_id"}}

	p, err := capture.Enable(ctx, w.Pool, w.Entity, true)
	if err != nil {
		t.Fatal(err)
	}
	if trig, fns := installed(t, w); len(trig)+len(fns) != 0 || len(p.DDL) == 0 {
		t.Fatalf("a dry run installed %v %v (DDL %d statements)", trig, fns, len(p.DDL))
	}
	w.enable()
	w.enable() // idempotent
	trig, fns := installed(t, w)
	want := []string{"customer_tiers: ecst_capture_customer_del", "customer_tiers: ecst_capture_customer_ins", "customer_tiers: ecst_capture_customer_trunc", "customer_tiers: ecst_capture_customer_upd",
		"customers: ecst_capture_customer_del", "customers: ecst_capture_customer_ins", "customers: ecst_capture_customer_trunc", "customers: ecst_capture_customer_upd"}
	if fmt.Sprint(trig) != fmt.Sprint(want) || len(fns) != 2 {
		t.Fatalf("installed triggers %v and functions %v; want %v and 2 functions", trig, fns, want)
	}

	w.Exec(`INSERT INTO customers (id, version, name, email) SELECT 'k' || i, 1, 'n', 'e' FROM generate_series(1, 1000) i`)
	w.Exec(`UPDATE customers SET id = 'moved' WHERE id = 'k1'`) // a key change captures both keys
	w.Exec(`UPDATE customers SET name = 'none' WHERE false`)    // no row, no marker
	w.Exec(`SELECT ecst.publish('customer', 'k2')`)
	w.Exec(`SELECT ecst.publish('customer', ARRAY['k3', 'k3', 'k4'])`)
	w.Exec(`TRUNCATE customer_tiers`)
	ms := markers(t, w)
	if len(ms) != 5 || strings.Count(ms[0], `"k`) != 1001 || ms[1] != `{"entity" : "customer", "keys" : ["k1","moved"]}` ||
		ms[3] != `{"entity" : "customer", "keys" : ["k3","k4"]}` || ms[4] != `{"entity" : "customer", "all" : true}` {
		t.Fatalf("markers: %d\n%.200v", len(ms), ms)
	}
	if _, err := w.Pool.Exec(ctx, `SELECT ecst.publish('customer', '')`); err == nil {
		t.Fatal("ecst.publish took an empty key")
	}

	st, err := capture.StatusOf(ctx, w.Pool, w.Config)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || !st[0].Enabled || !st[0].Healthy() || len(st[0].Tables) != 2 || st[0].Pending != 5 {
		t.Fatalf("status %+v", st)
	}
	w.Exec(`DROP TRIGGER ecst_capture_customer_upd ON customers`)
	if st, _ := capture.StatusOf(ctx, w.Pool, w.Config); st[0].Healthy() {
		t.Fatalf("status does not see the dropped trigger: %+v", st)
	}

	if _, err := capture.Disable(ctx, w.Pool, "customer", false); err != nil {
		t.Fatal(err)
	}
	if trig, fns := installed(t, w); len(trig)+len(fns) != 0 {
		t.Fatalf("disable left %v %v", trig, fns)
	}
	if tables, err := capture.Installed(ctx, w.Pool, "customer"); err != nil || len(tables) != 0 {
		t.Fatalf("ecst.capture_tables still has %v (%v)", tables, err)
	}
	if _, err := capture.Disable(ctx, w.Pool, "customer", false); err != nil {
		t.Fatalf("disable again: %v", err)
	}
	w.Exec(`UPDATE customers SET name = 'after'`)
	if n := len(markers(t, w)); n != 5 {
		t.Fatalf("a write after disable left a marker (%d)", n)
	}
}

// TestEnableRefused: each problem is refused with the fix, before any DDL.
func TestEnableRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, ecsttest.Options{Offline: true})
	w.Exec(`CREATE TABLE customer_tiers (customer_id text, tier text)`)
	src := *w.Entity.Source
	cases := []struct {
		name string
		set  func(s *config.Source)
		want string
	}{
		{"no such capture_from table", func(s *config.Source) {
			s.CaptureFrom = []config.CaptureFrom{{Table: "customer_tierz", Key: "customer_id"}}
		}, "table customer_tierz does not exist (entities.customer.source.capture_from[0]): create it, or fix the name"},
		{"no such key column", func(s *config.Source) {
			s.CaptureFrom = []config.CaptureFrom{{Table: "customer_tiers", Key: "customer"}}
		}, `table public.customer_tiers has no column "customer" (entities.customer.source.capture_from[0].key; it has customer_id, tier)`},
		{"a source query that cannot be filtered by key", func(s *config.Source) {
			s.Query = `SELECT id AS customer_id, version, name, email, tier, updated_at FROM customers`
		}, "entities.customer.source.query cannot be filtered by key"},
	}
	for _, c := range cases {
		s := src
		c.set(&s)
		w.Entity.Source = &s
		_, err := capture.Enable(ctx, w.Pool, w.Entity, false)
		if !errors.Is(err, capture.ErrRefused) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v; want capture.ErrRefused saying %q", c.name, err, c.want)
		}
		if trig, fns := installed(t, w); len(trig)+len(fns) != 0 {
			t.Fatalf("%s: DDL ran before the refusal: %v %v", c.name, trig, fns)
		}
	}
	w.Entity.Source = &src

	// A table the role does not own.
	role := "capture_" + strings.ReplaceAll(strings.ReplaceAll(w.Service, "-", "_"), ".", "_")
	w.Exec(fmt.Sprintf(`CREATE ROLE %[1]s LOGIN PASSWORD 'capture'; GRANT USAGE ON SCHEMA ecst TO %[1]s;
		GRANT SELECT ON ALL TABLES IN SCHEMA ecst TO %[1]s; GRANT SELECT ON customers TO %[1]s`, role))
	t.Cleanup(func() {
		_, _ = w.Pool.Exec(context.Background(), fmt.Sprintf("DROP OWNED BY %[1]s; DROP ROLE %[1]s", role))
	})
	u, err := url.Parse(w.DBURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(role, "capture")
	pool, err := pgxpool.New(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	_, err = capture.Enable(ctx, pool, w.Entity, false)
	if !errors.Is(err, capture.ErrRefused) || !strings.Contains(err.Error(), "table public.customers is owned by") || !strings.Contains(err.Error(), "triggers need the owner") {
		t.Errorf("a table the role does not own: got %v", err)
	}
	if trig, fns := installed(t, w); len(trig)+len(fns) != 0 {
		t.Fatalf("DDL ran before the refusal: %v %v", trig, fns)
	}
}
