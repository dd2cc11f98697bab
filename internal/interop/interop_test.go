package interop_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ecst-io/ecst/examples/customers"
	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/internal/pgtest"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/producer"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// written is one event as the customers service wrote it, with the headers
// and value bytes of its outbox row: what every reader must see.
type written struct {
	key     string
	version int64
	state   *customers.Customer // nil for a deletion
	headers []outbox.Header
	value   []byte
}

// world is the topic after the customers service wrote to it and the relay
// published it.
type world struct {
	brokers  string // bootstrap.servers
	topic    string
	registry string // the registry's HTTP URL
	schemaID int
	events   []written // in write order
}

// TestForeignReaders writes customers through the real path (Publish and
// Delete in the service's transactions, the relay to the broker, the
// registry over HTTP), then reads the topic with clients that share no code
// with ecst, and checks they see exactly what was written.
func TestForeignReaders(t *testing.T) {
	w := writeCustomers(t)
	t.Run("confluent-kafka-python", func(t *testing.T) {
		t.Parallel()
		checkPython(t, w)
	})
	t.Run("kcat", func(t *testing.T) {
		t.Parallel()
		checkKcat(t, w)
	})
}

func writeCustomers(t *testing.T) *world {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// The example's own ecst.yaml, connections from the environment as in
	// production; the schema registered and the topic created as `ecst
	// schema register` and `ecst topics apply` do. The topic and service
	// are the world's own: a real broker is shared across runs, and the
	// service names the relay's transactional id.
	w := ecsttest.New(t, ecsttest.Options{
		Partitions: 6, // as the example's ecst.yaml declares
		Service:    "customers-api-interop-" + strconv.FormatInt(time.Now().UnixNano(), 36),
	})
	pool, pub := w.Pool, w.Pub
	if err := pub.Resolve(ctx); err != nil {
		t.Fatal(err)
	}

	// The service: each change updates its customers table and publishes
	// in the same transaction.
	var events []written
	last := map[string]int64{} // each key's last version, deletions included
	upsert := func(id, name, email string, tier *string, traceparent string) {
		t.Helper()
		var opts []producer.Option
		if traceparent != "" {
			opts = append(opts, producer.TraceParent(traceparent))
		}
		var c customers.Customer
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if err := tx.QueryRow(ctx, `INSERT INTO customers (id, version, name, email, tier) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (id) DO UPDATE SET version = $2, name = $3, email = $4, tier = $5, updated_at = now()
				RETURNING id, version, name, email, tier, updated_at`, id, last[id]+1, name, email, tier).
				Scan(&c.ID, &c.Version, &c.Name, &c.Email, &c.Tier, &c.UpdatedAt); err != nil {
				return err
			}
			return pub.Publish(ctx, tx, "customer", c.ID, c.Version, &c, opts...)
		})
		if err != nil {
			t.Fatalf("upsert %s: %v", id, err)
		}
		c.UpdatedAt = c.UpdatedAt.UTC()
		last[id] = c.Version
		events = append(events, written{key: id, version: c.Version, state: &c})
	}
	del := func(id, traceparent string) {
		t.Helper()
		var opts []producer.Option
		if traceparent != "" {
			opts = append(opts, producer.TraceParent(traceparent))
		}
		var version int64
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			// The deletion is the entity's next version; a key created
			// again after it goes on from there.
			if err := tx.QueryRow(ctx, `DELETE FROM customers WHERE id = $1 RETURNING version + 1`, id).Scan(&version); err != nil {
				return err
			}
			return pub.Delete(ctx, tx, "customer", id, version, opts...)
		})
		if err != nil {
			t.Fatalf("delete %s: %v", id, err)
		}
		last[id] = version
		events = append(events, written{key: id, version: version})
	}
	gold, platinum := "gold", "platinum"
	const (
		trace1 = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		trace2 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
	)
	upsert("alice", "Alice Liddell", "alice@example.com", &gold, trace1)
	upsert("bob", "Bob", "bob@example.com", nil, "")
	upsert("zoë-7", "Zoë Ñúñez 🚀", "zoe@example.com", &gold, "") // a UTF-8 key and value
	for i := range 20 {
		upsert(fmt.Sprintf("c%02d", i), fmt.Sprintf("Customer %d", i), fmt.Sprintf("c%02d@example.com", i), nil, "")
	}
	upsert("alice", "Alice Liddell", "alice@example.org", &platinum, trace2) // an update
	del("bob", trace1)                                                       // a tombstone, traced
	del("c03", "")                                                           // a tombstone
	upsert("c03", "Customer 3, again", "c03@example.net", &gold, "")         // back after its deletion
	upsert("zoë-7", "Zoë Ñúñez", "zoe@example.com", nil, "")

	// The rows as the outbox holds them, before the relay publishes them:
	// their headers (event ids, timestamps) are what the readers must see.
	rows := w.Outbox()
	for i, r := range rows {
		if i >= len(events) || events[i].key != r.Key {
			t.Fatalf("outbox row %d is key %q, not the event written", i, r.Key)
		}
		events[i].headers, events[i].value = r.Raw, r.Value
	}
	if len(rows) != len(events) {
		t.Fatalf("outbox holds %d rows, %d events were written", len(rows), len(events))
	}

	rc := w.RelayConfig()
	rc.BatchSize = 7 // several Kafka transactions, so the readers see their markers too
	w.DrainWith(rc)
	return &world{
		brokers:  strings.Join(w.Broker.Seeds, ","),
		topic:    w.Topic,
		registry: w.Fake.URL(),
		schemaID: w.SchemaID,
		events:   events,
	}
}

// record is one record as a foreign reader saw it.
type record struct {
	Key       *string     `json:"key"`
	Partition int32       `json:"partition"`
	Offset    int64       `json:"offset"`
	Headers   [][2]string `json:"headers"`
	// Value is the decoded value (Python) or the raw payload (kcat); nil
	// for a tombstone.
	Value json.RawMessage `json:"value"`
	// Size is the payload's length, -1 for a tombstone (kcat only).
	Size     int  `json:"-"`
	SchemaID *int `json:"schema_id"`
}

func (r record) tombstone() bool { return len(r.Value) == 0 || string(r.Value) == "null" }

// matchRecords pairs the records read with the events written: all of
// them, each key's records in its events' order and in one partition, the
// headers exactly as written (names, values, order). It returns, for each
// event, the record that carries it.
func matchRecords(t *testing.T, w *world, got []record) []record {
	t.Helper()
	slices.SortFunc(got, func(a, b record) int {
		if a.Partition != b.Partition {
			return int(a.Partition - b.Partition)
		}
		return int(a.Offset - b.Offset)
	})
	if len(got) != len(w.events) {
		t.Fatalf("read %d records, %d events were written", len(got), len(w.events))
	}
	byKey := map[string][]record{}
	for _, r := range got {
		if r.Key == nil {
			t.Fatalf("a record with a null key at %d/%d", r.Partition, r.Offset)
		}
		byKey[*r.Key] = append(byKey[*r.Key], r)
	}
	seen := map[string]int{}
	out := make([]record, len(w.events))
	for i, ev := range w.events {
		n := seen[ev.key]
		seen[ev.key]++
		rs := byKey[ev.key]
		if n >= len(rs) {
			t.Fatalf("key %q: %d records read, but event %d (version %d) was written", ev.key, len(rs), n+1, ev.version)
		}
		r := rs[n]
		if r.Partition != rs[0].Partition {
			t.Errorf("key %q is in partitions %d and %d", ev.key, rs[0].Partition, r.Partition)
		}
		want := make([][2]string, len(ev.headers))
		for j, h := range ev.headers {
			want[j] = [2]string{h.Key, string(h.Value)}
		}
		if !slices.Equal(r.Headers, want) {
			t.Errorf("key %q version %d at %d/%d: headers\n got %q\nwant %q", ev.key, ev.version, r.Partition, r.Offset, r.Headers, want)
		}
		if r.tombstone() != (ev.state == nil) {
			t.Errorf("key %q version %d at %d/%d: tombstone %v, want %v (value %s)", ev.key, ev.version, r.Partition, r.Offset, r.tombstone(), ev.state == nil, r.Value)
		}
		out[i] = r
	}
	// The wire contract's headers, as a foreign reader sees them.
	for i, ev := range w.events {
		h := map[string]string{}
		for _, kv := range out[i].Headers {
			h[kv[0]] = kv[1]
		}
		typ := "customer.upserted"
		if ev.state == nil {
			typ = "customer.deleted"
		}
		at, err := time.Parse(time.RFC3339Nano, h["ecst-occurred-at"])
		if h["ecst-entity-version"] != strconv.FormatInt(ev.version, 10) || h["ecst-event-type"] != typ ||
			!strings.HasPrefix(h["ecst-source"], "customers-api-interop-") || len(h["ecst-event-id"]) != 36 ||
			err != nil || at.Location() != time.UTC {
			t.Errorf("key %q version %d: headers do not keep the wire contract: %q", ev.key, ev.version, out[i].Headers)
		}
		if _, ok := h["ecst-republish"]; ok {
			t.Errorf("key %q version %d: ecst-republish on a live write", ev.key, ev.version)
		}
	}
	return out
}

func checkPython(t *testing.T, w *world) {
	python := pythonVenv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, filepath.Join("testdata", "read_topic.py"), w.brokers, w.topic, w.registry)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("read_topic.py: %v\n%s", err, stderr.Bytes())
	}
	var got []record
	for _, line := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
		var r record
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("read_topic.py printed %q: %v", line, err)
		}
		got = append(got, r)
	}
	recs := matchRecords(t, w, got)
	for i, ev := range w.events {
		r := recs[i]
		if ev.state == nil {
			if r.SchemaID != nil {
				t.Errorf("key %q: a tombstone with schema id %d", ev.key, *r.SchemaID)
			}
			continue
		}
		if r.SchemaID == nil || *r.SchemaID != w.schemaID {
			t.Errorf("key %q version %d: no Confluent header with schema id %d (value %s)", ev.key, ev.version, w.schemaID, r.Value)
		}
		// Field by field: the decoded value must be the state published.
		var v map[string]any
		if err := json.Unmarshal(r.Value, &v); err != nil {
			t.Fatalf("key %q: value %s: %v", ev.key, r.Value, err)
		}
		s := ev.state
		var tier any
		if s.Tier != nil {
			tier = *s.Tier
		}
		want := map[string]any{"id": s.ID, "version": float64(s.Version), "name": s.Name, "email": s.Email, "tier": tier}
		for f, x := range want {
			if v[f] != x {
				t.Errorf("key %q version %d: field %s = %#v, want %#v", ev.key, ev.version, f, v[f], x)
			}
		}
		at, _ := v["updated_at"].(string)
		if got, err := time.Parse(time.RFC3339Nano, at); err != nil || !got.Equal(s.UpdatedAt) {
			t.Errorf("key %q version %d: updated_at = %q, want %s", ev.key, ev.version, at, s.UpdatedAt.Format(time.RFC3339Nano))
		}
		if len(v) != len(want)+1 {
			t.Errorf("key %q version %d: the decoded value has fields %v", ev.key, ev.version, v)
		}
	}
}

func checkKcat(t *testing.T, w *world) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatal("kcat is not installed: run `make setup-interop` (make test and make test-kafka run it)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := func(format ...string) []byte {
		t.Helper()
		args := append([]string{"-C", "-b", w.brokers, "-t", w.topic, "-o", "beginning", "-e", "-q",
			"-X", "isolation.level=read_committed"}, format...)
		cmd := exec.CommandContext(ctx, kcat, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("kcat %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
		}
		return out
	}

	// -J: key, headers, and null for a tombstone's payload.
	var got []record
	for _, line := range bytes.Split(bytes.TrimSpace(run("-J")), []byte("\n")) {
		var j struct {
			Partition int32           `json:"partition"`
			Offset    int64           `json:"offset"`
			Key       *string         `json:"key"`
			Headers   []string        `json:"headers"` // name, value, name, value...
			Payload   json.RawMessage `json:"payload"`
		}
		if err := json.Unmarshal(line, &j); err != nil {
			t.Fatalf("kcat -J printed %q: %v", line, err)
		}
		r := record{Key: j.Key, Partition: j.Partition, Offset: j.Offset, Value: j.Payload}
		for k := 0; k+1 < len(j.Headers); k += 2 {
			r.Headers = append(r.Headers, [2]string{j.Headers[k], j.Headers[k+1]})
		}
		got = append(got, r)
	}

	// -f: the payload's exact length (-1 for NULL) and its first 5 bytes in
	// hex, which -J cannot carry faithfully for binary data.
	sizes := map[[2]int64]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(run("-f", `%p %o %S\n`))), "\n") {
		var p, o, n int64
		if _, err := fmt.Sscanf(line, "%d %d %d", &p, &o, &n); err != nil {
			t.Fatalf("kcat -f printed %q: %v", line, err)
		}
		sizes[[2]int64{p, o}] = strconv.FormatInt(n, 10)
	}
	recs := matchRecords(t, w, got)
	for i, ev := range w.events {
		r := recs[i]
		want := "-1"
		if ev.state != nil {
			want = strconv.Itoa(len(ev.value))
		}
		if s := sizes[[2]int64{int64(r.Partition), r.Offset}]; s != want {
			t.Errorf("key %q version %d at %d/%d: payload size %s, want %s", ev.key, ev.version, r.Partition, r.Offset, s, want)
		}
		if ev.state != nil {
			// The Confluent header survives JSON: 0x00 and the schema id,
			// here small enough to be printable or escaped as \u00XX.
			var payload string
			if err := json.Unmarshal(r.Value, &payload); err != nil {
				t.Errorf("key %q: payload %s: %v", ev.key, r.Value, err)
				continue
			}
			var hdr [5]byte
			binary.BigEndian.PutUint32(hdr[1:], uint32(w.schemaID)) //nolint:gosec // a small registry id
			if !strings.HasPrefix(payload, string(hdr[:])) {
				t.Errorf("key %q: payload starts %q, want the Confluent header %q", ev.key, payload[:min(5, len(payload))], hdr)
			}
		}
	}
}

// pythonVenv returns the python of a virtualenv holding
// testdata/requirements.txt, building it on first use. It lives in the
// user's cache directory, keyed by the requirements and the interpreter, so
// that later runs start at once.
func pythonVenv(t *testing.T) string {
	t.Helper()
	base, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is not installed: run `make setup-interop` (make test and make test-kafka run it)")
	}
	reqs, err := os.ReadFile(filepath.Join("testdata", "requirements.txt"))
	if err != nil {
		t.Fatal(err)
	}
	ver, err := exec.Command(base, "-c", "import sys; print(sys.executable, sys.version)").Output()
	if err != nil {
		t.Fatalf("%s: %v", base, err)
	}
	dir, err := venvDir(reqs, ver)
	if err != nil {
		t.Fatal(err)
	}
	python := filepath.Join(dir, "bin", "python")
	unlock, err := lockFile(dir + ".lock")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	ready := filepath.Join(dir, "ecst-ready")
	if _, err := os.Stat(ready); err == nil {
		return python
	}
	// A half-built venv (an earlier run died) is rebuilt from scratch.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	t.Logf("building the Python virtualenv %s (once per requirements.txt)", dir)
	for _, args := range [][]string{
		{base, "-m", "venv", dir},
		{python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q", "-r", filepath.Join("testdata", "requirements.txt")},
	} {
		out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s\n(python3 -m venv needs python3-venv on Debian: run `make setup-interop`; pip needs the package index)",
				strings.Join(args, " "), err, out)
		}
	}
	if err := os.WriteFile(ready, reqs, 0o644); err != nil {
		t.Fatal(err)
	}
	return python
}
