package producer_test

import (
	"context"
	"errors"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hamba/avro/v2"
	"github.com/jackc/pgx/v5"

	"github.com/ecst-io/ecst/examples/customers"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/schemas"
)

func customer(id string, version int64) map[string]any {
	return map[string]any{
		"id": id, "version": version, "name": "Ada " + id, "email": id + "@example.com",
		"tier": "gold", "updated_at": time.Date(2026, 11, 24, 10, 0, 0, 123456000, time.UTC),
	}
}

// commit runs fn in a transaction and commits it; an error fails the test.
func (f *fixture) commit(t *testing.T, fn func(tx pgx.Tx) error) {
	t.Helper()
	if err := pgx.BeginFunc(context.Background(), f.pool, fn); err != nil {
		t.Fatal(err)
	}
}

// noRows fails the test if the outbox has rows: what wrote them should not
// have.
func (f *fixture) noRows(t *testing.T, what string) {
	t.Helper()
	if rows := f.rows(t); len(rows) != 0 {
		t.Fatalf("%s left %d outbox rows", what, len(rows))
	}
}

func TestPublishCommitted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, fixtureOpts{})
	state := customer("c1", 3)
	occurred := time.Date(2026, 11, 24, 9, 30, 0, 5, time.FixedZone("CET", 3600))
	before := time.Now()
	f.commit(t, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO customers (id, version, name, email) VALUES ('c1', 3, 'Ada', 'a@x')"); err != nil {
			return err
		}
		return f.pub.Publish(ctx, tx, "customer", "c1", 3, state,
			producer.OccurredAt(occurred),
			producer.TraceParent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
	})
	rows := f.rows(t)
	if len(rows) != 1 {
		t.Fatalf("outbox has %d rows, want 1", len(rows))
	}
	r := rows[0]
	if r.Topic != "customers.state" || r.Key != "c1" {
		t.Errorf("row topic/key = %s/%s", r.Topic, r.Key)
	}
	// The whole wire contract.
	want := map[string]string{
		producer.HeaderEntityVersion: "3",
		producer.HeaderEventType:     "customer.upserted",
		producer.HeaderOccurredAt:    "2026-11-24T08:30:00.000000005Z",
		producer.HeaderSource:        "customers-api",
		producer.HeaderTraceParent:   "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	}
	for k, v := range want {
		if r.Headers[k] != v {
			t.Errorf("header %s = %q, want %q", k, r.Headers[k], v)
		}
	}
	if _, ok := r.Headers[producer.HeaderRepublish]; ok {
		t.Errorf("a live event carries %s", producer.HeaderRepublish)
	}
	id, err := uuid.Parse(r.Headers[producer.HeaderEventID])
	if err != nil || id.Version() != 7 {
		t.Errorf("event id %q is not a UUIDv7 (%v)", r.Headers[producer.HeaderEventID], err)
	}
	if ts := time.Unix(id.Time().UnixTime()); ts.Before(before.Add(-time.Second)) || ts.After(time.Now().Add(time.Second)) {
		t.Errorf("event id time %v is not now", ts)
	}

	// The value: 0x00, the registered id big-endian, Avro binary.
	schemaID, payload, err := schemas.DecodeWire(r.Value)
	if err != nil {
		t.Fatal(err)
	}
	if schemaID != f.id {
		t.Fatalf("schema id in value = %d, want the registered %d", schemaID, f.id)
	}
	if r.Value[0] != 0 || int(r.Value[4]) != f.id || r.Value[1]|r.Value[2]|r.Value[3] != 0 {
		t.Fatalf("wire header bytes = % x", r.Value[:5])
	}
	var got map[string]any
	if err := avro.Unmarshal(avro.MustParse(customers.Schema), payload, &got); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "version", "name", "email"} {
		if got[k] != state[k] {
			t.Errorf("decoded %s = %v, want %v", k, got[k], state[k])
		}
	}
	if got["tier"] != "gold" {
		t.Errorf("decoded tier = %v", got["tier"])
	}
	if !got["updated_at"].(time.Time).Equal(state["updated_at"].(time.Time)) {
		t.Errorf("decoded updated_at = %v", got["updated_at"])
	}
}

func TestPublishTypedAndGenericEncodeAlike(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, fixtureOpts{})
	tier := "gold"
	m := customer("c1", 1)
	typed := customers.Customer{ID: "c1", Version: 1, Name: m["name"].(string), Email: m["email"].(string), Tier: &tier, UpdatedAt: m["updated_at"].(time.Time)}
	f.commit(t, func(tx pgx.Tx) error {
		if err := f.pub.Publish(ctx, tx, "customer", "c1", 1, m); err != nil {
			return err
		}
		return f.pub.Publish(ctx, tx, "customer", "c1", 1, &typed)
	})
	rows := f.rows(t)
	if len(rows) != 2 || string(rows[0].Value) != string(rows[1].Value) {
		t.Fatalf("typed and generic values differ:\n% x\n% x", rows[0].Value, rows[1].Value)
	}
}

func TestPublishRolledBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, fixtureOpts{})
	tx, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.pub.Publish(ctx, tx, "customer", "c1", 1, customer("c1", 1)); err != nil {
		t.Fatal(err)
	}
	if err := f.pub.Delete(ctx, tx, "customer", "c2", 1); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	f.noRows(t, "a rolled-back transaction")
}

func TestDeleteWritesTombstone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, fixtureOpts{})
	f.commit(t, func(tx pgx.Tx) error {
		return f.pub.Delete(ctx, tx, "customer", "c9", 7)
	})
	rows := f.rows(t)
	if len(rows) != 1 {
		t.Fatalf("%d rows", len(rows))
	}
	r := rows[0]
	if r.Value != nil {
		t.Errorf("tombstone value = % x, want NULL", r.Value)
	}
	if r.Headers[producer.HeaderEventType] != "customer.deleted" || r.Headers[producer.HeaderEntityVersion] != "7" {
		t.Errorf("headers = %v", r.Headers)
	}
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$`).MatchString(r.Headers[producer.HeaderOccurredAt]) {
		t.Errorf("occurred-at %q is not RFC 3339 UTC", r.Headers[producer.HeaderOccurredAt])
	}
}

func TestRepublishHeader(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, fixtureOpts{})
	f.commit(t, func(tx pgx.Tx) error {
		return f.pub.Publish(ctx, tx, "customer", "c1", 1, customer("c1", 1), producer.Republish("42"))
	})
	if got := f.rows(t)[0].Headers[producer.HeaderRepublish]; got != "42" {
		t.Fatalf("republish header = %q", got)
	}
}

func TestBadInputWritesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, fixtureOpts{})
	bad := customer("c1", 1)
	delete(bad, "email")
	wrongType := customer("c1", 1)
	wrongType["version"] = "one"
	wrongUnion := customer("c1", 1)
	wrongUnion["tier"] = 5

	cases := []struct {
		name      string
		call      func(tx pgx.Tx) error
		is        error
		field     string
		mentioned []string
	}{
		{"unknown entity", func(tx pgx.Tx) error { return f.pub.Publish(ctx, tx, "invoice", "c1", 1, customer("c1", 1)) }, producer.ErrUnknownEntity, "", []string{"invoice"}},
		{"unknown entity delete", func(tx pgx.Tx) error { return f.pub.Delete(ctx, tx, "invoice", "c1", 1) }, producer.ErrUnknownEntity, "", nil},
		{"empty key", func(tx pgx.Tx) error { return f.pub.Publish(ctx, tx, "customer", "", 1, customer("", 1)) }, producer.ErrEmptyKey, "", nil},
		{"empty key delete", func(tx pgx.Tx) error { return f.pub.Delete(ctx, tx, "customer", "", 1) }, producer.ErrEmptyKey, "", nil},
		{"invalid utf-8 key", func(tx pgx.Tx) error { return f.pub.Delete(ctx, tx, "customer", "\xff", 1) }, producer.ErrInvalidKey, "", nil},
		{"missing field", func(tx pgx.Tx) error { return f.pub.Publish(ctx, tx, "customer", "c1", 1, bad) }, producer.ErrInvalidState, "email", []string{"email"}},
		{"wrong type", func(tx pgx.Tx) error { return f.pub.Publish(ctx, tx, "customer", "c1", 1, wrongType) }, producer.ErrInvalidState, "version", []string{"version"}},
		{"wrong union branch", func(tx pgx.Tx) error { return f.pub.Publish(ctx, tx, "customer", "c1", 1, wrongUnion) }, producer.ErrInvalidState, "tier", []string{"tier"}},
		{"not a record", func(tx pgx.Tx) error { return f.pub.Publish(ctx, tx, "customer", "c1", 1, "a string") }, producer.ErrInvalidState, "", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tx, err := f.pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx) //nolint:errcheck
			err = c.call(tx)
			if !errors.Is(err, c.is) {
				t.Fatalf("error = %v, want %v", err, c.is)
			}
			var ee *producer.EncodeError
			if c.field != "" && (!errors.As(err, &ee) || ee.Field != c.field) {
				t.Errorf("error %v does not name field %q (EncodeError %+v)", err, c.field, ee)
			}
			for _, m := range c.mentioned {
				if !regexp.MustCompile(regexp.QuoteMeta(m)).MatchString(err.Error()) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
			// The caller's transaction is still usable: validation
			// happens before anything is sent.
			if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
				t.Fatalf("transaction unusable after a validation error: %v", err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
	f.noRows(t, "bad input")
}

func TestSchemaNotRegistered(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, fixtureOpts{unregistered: true})
	if err := f.pub.Resolve(ctx); !errors.Is(err, producer.ErrSchemaNotRegistered) {
		t.Fatalf("Resolve = %v, want ErrSchemaNotRegistered", err)
	}
	err := pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error {
		return f.pub.Publish(ctx, tx, "customer", "c1", 1, customer("c1", 1))
	})
	if !errors.Is(err, producer.ErrSchemaNotRegistered) {
		t.Fatalf("Publish = %v, want ErrSchemaNotRegistered", err)
	}
	if !regexp.MustCompile("ecst schema register customer").MatchString(err.Error()) {
		t.Errorf("error %q does not say how to fix it", err)
	}
	if f.reg.SubjectExists("customers.state-value") {
		t.Fatal("the producer registered a schema although auto-registration is off")
	}
	f.noRows(t, "an unregistered schema")

	// Registered later, the same publisher finds it: failures are not cached.
	id, _, err := f.reg.RegisterSchema("customers.state-value", srSchema(customers.Schema))
	if err != nil {
		t.Fatal(err)
	}
	f.commit(t, func(tx pgx.Tx) error {
		return f.pub.Publish(ctx, tx, "customer", "c1", 1, customer("c1", 1))
	})
	if got, _, _ := schemas.DecodeWire(f.rows(t)[0].Value); got != id {
		t.Fatalf("schema id %d, want %d", got, id)
	}
}

func TestAutoRegister(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, fixtureOpts{unregistered: true, autoRegister: true})
	f.commit(t, func(tx pgx.Tx) error {
		return f.pub.Publish(ctx, tx, "customer", "c1", 1, customer("c1", 1))
	})
	ss, ok := f.reg.GetSchema("customers.state-value", 1)
	if !ok {
		t.Fatal("schema was not auto-registered")
	}
	if got, _, _ := schemas.DecodeWire(f.rows(t)[0].Value); got != ss.ID {
		t.Fatalf("schema id %d, want %d", got, ss.ID)
	}
}

func TestClosedTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, fixtureOpts{})
	tx, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.pub.Publish(ctx, tx, "customer", "c1", 1, customer("c1", 1)); !errors.Is(err, pgx.ErrTxClosed) {
		t.Fatalf("Publish on a committed tx = %v, want pgx.ErrTxClosed", err)
	}
	if err := f.pub.Delete(ctx, tx, "customer", "c1", 1); !errors.Is(err, pgx.ErrTxClosed) {
		t.Fatalf("Delete on a committed tx = %v, want pgx.ErrTxClosed", err)
	}
	f.noRows(t, "a closed transaction")
}

func TestVersionHeaderIsDecimal(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, fixtureOpts{})
	const v = int64(-9007199254740993)
	f.commit(t, func(tx pgx.Tx) error { return f.pub.Delete(ctx, tx, "customer", "c1", v) })
	if got := f.rows(t)[0].Headers[producer.HeaderEntityVersion]; got != strconv.FormatInt(v, 10) {
		t.Fatalf("version header %q", got)
	}
}

func TestQueueInTheCallersBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, fixtureOpts{})
	f.commit(t, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue("INSERT INTO customers (id, version, name, email) VALUES ('c1', 4, 'Ada', 'a@x')")
		if err := f.pub.Queue(ctx, b, "customer", "c1", 4, customer("c1", 4)); err != nil {
			return err
		}
		if err := f.pub.QueueDelete(b, "customer", "c2", 9); err != nil {
			return err
		}
		// Invalid input is refused at once and queues nothing.
		n := b.Len()
		bad := customer("c3", 1)
		delete(bad, "email")
		if err := f.pub.Queue(ctx, b, "customer", "c3", 1, bad); !errors.Is(err, producer.ErrInvalidState) {
			t.Errorf("Queue of a bad state = %v", err)
		}
		if err := f.pub.QueueDelete(b, "customer", "", 1); !errors.Is(err, producer.ErrEmptyKey) {
			t.Errorf("QueueDelete of an empty key = %v", err)
		}
		if b.Len() != n {
			t.Errorf("refused events were queued: %d statements, want %d", b.Len(), n)
		}
		return tx.SendBatch(ctx, b).Close()
	})
	rows := f.rows(t)
	if len(rows) != 2 || rows[0].Key != "c1" || rows[0].Headers[producer.HeaderEntityVersion] != "4" ||
		rows[1].Key != "c2" || rows[1].Value != nil || rows[1].Headers[producer.HeaderEventType] != "customer.deleted" {
		t.Fatalf("rows = %+v", rows)
	}
	if id, _, err := schemas.DecodeWire(rows[0].Value); err != nil || id != f.id {
		t.Fatalf("wire id %d, %v", id, err)
	}
}
