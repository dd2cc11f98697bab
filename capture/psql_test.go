package capture_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/producer"
)

// TestPsqlWrites: with capture enabled and the relay running, writes made
// with psql alone, no ecst code, each leave the topic's last record of
// every key equal to the source, in either transport.
func TestPsqlWrites(t *testing.T) {
	t.Parallel()
	eachTransport(t, psqlWrites)
}

func psqlWrites(t *testing.T, o ecsttest.Options) {
	w := newWorld(t, o)
	w.Exec(`CREATE TABLE customer_tiers (customer_id text PRIMARY KEY, tier text NOT NULL)`)
	w.Entity.Source.Query = `SELECT c.id, c.version, c.name, c.email, t.tier, c.updated_at FROM customers c LEFT JOIN customer_tiers t ON t.customer_id = c.id`
	w.Entity.Source.CaptureFrom = []config.CaptureFrom{{Table: "customer_tiers", Key: "customer_id"}}
	w.enable()
	w.startRelay()

	steps := []struct{ name, sql string }{
		{"INSERT of 10k rows", `INSERT INTO customers (id, version, name, email) SELECT 'c' || lpad(i::text, 5, '0'), 1, 'name ' || i, 'c' || i || '@example.com' FROM generate_series(1, 10000) i`},
		{"one-statement UPDATE of 10k rows", `UPDATE customers SET name = name || ' (renamed)', version = version + 1, updated_at = now()`},
		{"DELETE", `DELETE FROM customers WHERE id LIKE 'c000%'`},
		{"INSERT ... ON CONFLICT", `INSERT INTO customers (id, version, name, email) VALUES ('c00001', 1, 'back', 'back@example.com'), ('c00500', 1, 'clash', 'clash@example.com'), ('n1', 1, 'new', 'new@example.com')
			ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, version = customers.version + 1`},
		{"a capture_from table's rows", `INSERT INTO customer_tiers SELECT id, 'gold' FROM customers WHERE id LIKE 'c001%'; UPDATE customer_tiers SET tier = 'silver' WHERE customer_id = 'c00150'; DELETE FROM customer_tiers WHERE customer_id = 'c00160'`},
	}
	for _, s := range steps {
		w.psql(s.sql + ";\n")
		w.converge(s.name)
	}

	// The resolved events are tagged with their marker, and carry the
	// source's version column as read.
	r := w.Latest()["c05000"]
	hs := map[string]string{}
	for _, h := range r.Headers {
		hs[h.Key] = string(h.Value)
	}
	if hs[producer.HeaderCapture] == "" || hs[producer.HeaderEntityVersion] != "2" || hs[producer.HeaderEventType] != "customer.upserted" {
		t.Fatalf("c05000's last record has headers %v; want an ecst-capture marker id, version 2, customer.upserted", hs)
	}

	// COPY, from psql's stdin.
	var b strings.Builder
	b.WriteString("COPY customers (id, version, name, email) FROM STDIN;\n")
	for i := range 500 {
		fmt.Fprintf(&b, "p%04d\t1\tcopied %d\tp%d@example.com\n", i, i, i)
	}
	b.WriteString("\\.\n")
	w.psql(b.String())
	w.converge("COPY")

	// TRUNCATE: every key of the entity is republished, and the keys the
	// source no longer has are tombstoned.
	w.psql(`BEGIN; TRUNCATE customers; INSERT INTO customers (id, version, name, email) VALUES ('after', 1, 'after truncate', 'a@example.com'); COMMIT;`)
	w.converge("TRUNCATE")
}
