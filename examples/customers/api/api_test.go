package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/hamba/avro/v2"

	"github.com/ecst-io/ecst/examples/customers"
	"github.com/ecst-io/ecst/examples/customers/api"
	"github.com/ecst-io/ecst/examples/customers/internal/stack"
	"github.com/ecst-io/ecst/internal/pgtest"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/schemas"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// newAPI serves the API of a fresh stack.
func newAPI(t *testing.T, o stack.Options) (*stack.Stack, string) {
	t.Helper()
	s := stack.New(t, o)
	return s, stack.ServeAPI(t, s)
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) customer(t *testing.T) customers.Customer {
	t.Helper()
	var c customers.Customer
	if err := json.Unmarshal(r.body, &c); err != nil {
		t.Fatalf("reply is not a customer: %v\n%s", err, r.body)
	}
	return c
}

func (r reply) error(t *testing.T) (msg, field string) {
	t.Helper()
	var e struct{ Error, Field string }
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error == "" {
		t.Fatalf("reply is not a JSON error (%v): %s", err, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error reply has Content-Type %q", ct)
	}
	return e.Error, e.Field
}

func do(t *testing.T, method, url, body string) reply {
	t.Helper()
	r := stack.Do(t, method, url, body)
	return reply{r.Status, r.Header, r.Body}
}

func want(t *testing.T, r reply, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
}

// decodeValue decodes an outbox value: Confluent wire format under the
// registered schema id.
func decodeValue(t *testing.T, s *stack.Stack, v []byte) customers.Customer {
	t.Helper()
	id, payload, err := schemas.DecodeWire(v)
	if err != nil {
		t.Fatal(err)
	}
	if id != s.SchemaID {
		t.Fatalf("value carries schema id %d, want %d", id, s.SchemaID)
	}
	var c customers.Customer
	if err := avro.Unmarshal(avro.MustParse(customers.Schema), payload, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestWritesPublishFullStates: each write's reply, the customers row and
// the outbox event agree; a deletion is a tombstone at the next version.
func TestWritesPublishFullStates(t *testing.T) {
	t.Parallel()
	s, url := newAPI(t, stack.Options{})

	r := do(t, "POST", url+"/customers", `{"id": "cust-1", "name": " Ada Lovelace ", "email": "ada@example.com", "tier": "gold"}`)
	want(t, r, http.StatusCreated)
	if loc := r.header.Get("Location"); loc != "/customers/cust-1" {
		t.Fatalf("Location %q", loc)
	}
	ada := r.customer(t)
	if ada.ID != "cust-1" || ada.Version != 1 || ada.Name != "Ada Lovelace" || ada.Tier == nil || *ada.Tier != "gold" || ada.UpdatedAt.IsZero() {
		t.Fatalf("created %+v", ada)
	}

	r = do(t, "POST", url+"/customers", `{"name": "Grace Hopper", "email": "grace@example.com"}`)
	want(t, r, http.StatusCreated)
	grace := r.customer(t)
	if _, err := uuid.Parse(grace.ID); err != nil || grace.Tier != nil || grace.Version != 1 {
		t.Fatalf("created without an id: %+v (%v)", grace, err)
	}

	r = do(t, "PUT", url+"/customers/cust-1", `{"id": "cust-1", "name": "Ada King", "email": "ada@example.com", "tier": null}`)
	want(t, r, http.StatusOK)
	ada2 := r.customer(t)
	if ada2.Version != 2 || ada2.Name != "Ada King" || ada2.Tier != nil || ada2.UpdatedAt.Before(ada.UpdatedAt) {
		t.Fatalf("updated %+v (was %+v)", ada2, ada)
	}
	r = do(t, "GET", url+"/customers/cust-1", "")
	want(t, r, http.StatusOK)
	if got := r.customer(t); got != ada2 {
		t.Fatalf("GET %+v, PUT replied %+v", got, ada2)
	}

	want(t, do(t, "DELETE", url+"/customers/"+grace.ID, ""), http.StatusNoContent)
	want(t, do(t, "GET", url+"/customers/"+grace.ID, ""), http.StatusNotFound)

	rows := s.Outbox()
	type ev struct {
		key, typ, version string
		state             *customers.Customer
	}
	wantEvents := []ev{
		{"cust-1", "customer.upserted", "1", &ada},
		{grace.ID, "customer.upserted", "1", &grace},
		{"cust-1", "customer.upserted", "2", &ada2},
		{grace.ID, "customer.deleted", "2", nil},
	}
	if len(rows) != len(wantEvents) {
		t.Fatalf("%d outbox rows, want %d", len(rows), len(wantEvents))
	}
	for i, w := range wantEvents {
		row := rows[i]
		h := row.Headers
		if row.Topic != s.Topic || row.Key != w.key || h[producer.HeaderEventType] != w.typ ||
			h[producer.HeaderEntityVersion] != w.version || h[producer.HeaderSource] != s.Service {
			t.Fatalf("outbox row %d: topic %s key %s headers %v; want %+v", i, row.Topic, row.Key, h, w)
		}
		if w.state == nil {
			if row.Value != nil {
				t.Fatalf("outbox row %d: a deletion with a value", i)
			}
			continue
		}
		if got := decodeValue(t, s, row.Value); !got.UpdatedAt.Equal(w.state.UpdatedAt) || got.Name != w.state.Name || got.Version != w.state.Version {
			t.Fatalf("outbox row %d publishes %+v, the reply was %+v", i, got, *w.state)
		}
	}
}

// TestRefusals: bad requests are 400s naming the field, unknown customers
// 404s, a taken id 409; none of them writes a row or an event.
func TestRefusals(t *testing.T) {
	t.Parallel()
	s, url := newAPI(t, stack.Options{})
	want(t, do(t, "POST", url+"/customers", `{"id": "cust-1", "name": "Ada", "email": "ada@example.com"}`), http.StatusCreated)

	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		field                    string
	}{
		{"no name", "POST", "/customers", `{"name": " ", "email": "a@example.com"}`, 400, "name"},
		{"name too long", "POST", "/customers", `{"name": "` + strings.Repeat("x", 201) + `", "email": "a@example.com"}`, 400, "name"},
		{"control characters", "POST", "/customers", `{"name": "a\u0000b", "email": "a@example.com"}`, 400, "name"},
		{"no email", "POST", "/customers", `{"name": "A"}`, 400, "email"},
		{"not an email", "POST", "/customers", `{"name": "A", "email": "not-an-email"}`, 400, "email"},
		{"email with a display name", "POST", "/customers", `{"name": "A", "email": "A <a@example.com>"}`, 400, "email"},
		{"bad tier", "POST", "/customers", `{"name": "A", "email": "a@example.com", "tier": "Gold!"}`, 400, "tier"},
		{"empty tier", "POST", "/customers", `{"name": "A", "email": "a@example.com", "tier": ""}`, 400, "tier"},
		{"bad id", "POST", "/customers", `{"id": "has space", "name": "A", "email": "a@example.com"}`, 400, "id"},
		{"unknown field", "POST", "/customers", `{"name": "A", "email": "a@example.com", "vip": true}`, 400, ""},
		{"wrong type", "POST", "/customers", `{"name": 7, "email": "a@example.com"}`, 400, ""},
		{"empty body", "POST", "/customers", ``, 400, ""},
		{"two values", "POST", "/customers", `{"name": "A", "email": "a@example.com"} {}`, 400, ""},
		{"not an object", "POST", "/customers", `[1]`, 400, ""},
		{"too large", "POST", "/customers", `{"name": "` + strings.Repeat("x", 70_000) + `", "email": "a@example.com"}`, 400, ""},
		{"id taken", "POST", "/customers", `{"id": "cust-1", "name": "B", "email": "b@example.com"}`, 409, ""},
		{"update unknown", "PUT", "/customers/nobody", `{"name": "A", "email": "a@example.com"}`, 404, ""},
		{"update with another id", "PUT", "/customers/cust-1", `{"id": "cust-2", "name": "A", "email": "a@example.com"}`, 400, "id"},
		{"update without a name", "PUT", "/customers/cust-1", `{"email": "a@example.com"}`, 400, "name"},
		{"delete unknown", "DELETE", "/customers/nobody", ``, 404, ""},
		{"get unknown", "GET", "/customers/nobody", ``, 404, ""},
	} {
		r := do(t, tc.method, url+tc.path, tc.body)
		if r.status != tc.status {
			t.Errorf("%s: status %d, want %d: %s", tc.name, r.status, tc.status, r.body)
			continue
		}
		if _, field := r.error(t); field != tc.field {
			t.Errorf("%s: field %q, want %q: %s", tc.name, field, tc.field, r.body)
		}
	}
	if rows := s.Outbox(); len(rows) != 1 {
		t.Fatalf("%d outbox rows after refused requests, want the 1 of the create", len(rows))
	}
	var n, version int64
	if err := s.Pool.QueryRow(context.Background(), "SELECT count(*), max(version) FROM customers").Scan(&n, &version); err != nil || n != 1 || version != 1 {
		t.Fatalf("customers: %d rows at version %d (%v), want 1 at 1", n, version, err)
	}
}

// TestFailedPublishRollsBack: when the event cannot be written (here the
// schema is not registered), the customer is not written either.
func TestFailedPublishRollsBack(t *testing.T) {
	t.Parallel()
	s, url := newAPI(t, stack.Options{Unregistered: true})
	r := do(t, "POST", url+"/customers", `{"id": "cust-1", "name": "Ada", "email": "ada@example.com"}`)
	want(t, r, http.StatusInternalServerError)
	if msg, _ := r.error(t); strings.Contains(msg, "schema") {
		t.Fatalf("a 500 tells the client about the server's insides: %q", msg)
	}
	var n int
	if err := s.Pool.QueryRow(context.Background(), "SELECT count(*) FROM customers").Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d customers after a failed publish (%v), want 0", n, err)
	}
	if rows := s.Outbox(); len(rows) != 0 {
		t.Fatalf("%d outbox rows after a failed publish", len(rows))
	}
}

// TestRun: the service as main runs it, from ecst.yaml and ECST_*
// variables; it stops cleanly when its context ends.
func TestRun(t *testing.T) {
	t.Parallel()
	s := stack.New(t, stack.Options{})
	svc := stack.Start(t, func(ctx context.Context, ln net.Listener) error {
		return api.Run(ctx, api.Options{ConfigPath: s.ConfigPath, Env: s.Getenv, Listener: ln})
	})
	want(t, do(t, "GET", svc.URL+"/readyz", ""), http.StatusOK)
	want(t, do(t, "POST", svc.URL+"/customers", `{"id": "cust-1", "name": "Ada", "email": "ada@example.com"}`), http.StatusCreated)
	if rows := s.Outbox(); len(rows) != 1 || rows[0].Key != "cust-1" || rows[0].Headers[producer.HeaderSource] != s.Service {
		t.Fatalf("outbox after a POST: %+v", rows)
	}
	if err := svc.Stop(t); err != nil {
		t.Fatalf("Run after its context ended: %v", err)
	}
}

// TestRunRefusesToStart: a missing schema and an unreachable database stop
// the service at start, with errors that say what to fix and no password.
func TestRunRefusesToStart(t *testing.T) {
	t.Parallel()
	s := stack.New(t, stack.Options{Unregistered: true})
	ctx := context.Background()
	err := api.Run(ctx, api.Options{ConfigPath: s.ConfigPath, Env: s.Getenv, Addr: "127.0.0.1:0"})
	if !errors.Is(err, producer.ErrSchemaNotRegistered) || !strings.Contains(err.Error(), "ecst schema register customer") {
		t.Fatalf("Run without the schema registered: %v", err)
	}

	env := func(k string) string {
		if k == "ECST_DATABASE_URL" {
			return "postgres://app:s3cr3t-pw@127.0.0.1:1/app?connect_timeout=2"
		}
		return s.Getenv(k)
	}
	err = api.Run(ctx, api.Options{ConfigPath: s.ConfigPath, Env: env, Addr: "127.0.0.1:0"})
	if err == nil || !strings.Contains(err.Error(), "ECST_DATABASE_URL") || strings.Contains(err.Error(), "s3cr3t-pw") {
		t.Fatalf("Run with an unreachable database: %v", err)
	}
}
