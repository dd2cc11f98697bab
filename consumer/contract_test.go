package consumer_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/ecst-io/ecst/consumer"
	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/internal/kafkatest"
	"github.com/ecst-io/ecst/internal/pgtest"
	"github.com/ecst-io/ecst/internal/testkit"
	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/schemas"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// world is a topic with the customer schema registered (an
// ecsttest.World), and a way to write states to it the way the relay does:
// in Kafka transactions.
type world struct {
	t        testing.TB
	w        *ecsttest.World
	topic    string
	reg      *srfake.Registry
	registry *schemas.Registry
	schemaID int
	schema   avro.Schema
	prod     *kgo.Client
	// expected is the latest state per key (nil: deleted).
	expected map[string]map[string]any
	produced int
}

func newWorld(t testing.TB) *world {
	t.Helper()
	ew := ecsttest.New(t, ecsttest.Options{})
	w := &world{t: t, w: ew, topic: ew.Topic, reg: ew.Fake, registry: ew.Registry, schemaID: ew.SchemaID, schema: ew.Schema,
		expected: map[string]map[string]any{}}
	w.prod = ew.Client(kgo.TransactionalID("test-" + w.topic))
	t.Cleanup(w.prod.Close)
	return w
}

func (w *world) opts() []kgo.Opt { return w.w.Kafka() }

// write commits records in one Kafka transaction, and returns once they
// are readable.
func (w *world) write(recs ...*kgo.Record) {
	w.t.Helper()
	ctx := context.Background()
	if err := w.prod.BeginTransaction(); err != nil {
		w.t.Fatal(err)
	}
	var failed error
	var mu sync.Mutex
	for _, r := range recs {
		r.Topic = w.topic
		w.prod.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				failed = err
				mu.Unlock()
			}
		})
	}
	if err := w.prod.Flush(ctx); err != nil {
		w.t.Fatal(err)
	}
	if failed != nil {
		w.t.Fatal(failed)
	}
	if err := w.prod.EndTransaction(ctx, kgo.TryCommit); err != nil {
		w.t.Fatal(err)
	}
	kafkatest.AwaitReadable(w.t, w.prod, w.topic)
	w.produced += len(recs)
}

func (w *world) state(key string, version int64) map[string]any {
	return map[string]any{"id": key, "version": version, "name": "n-" + key + "-" + strconv.FormatInt(version, 10),
		"email": key + "@example.com", "tier": "gold", "updated_at": time.UnixMicro(1_790_000_000_000_000 + version).UTC()}
}

func (w *world) upsert(key string, version int64) *kgo.Record {
	b, err := avro.Marshal(w.schema, w.state(key, version))
	if err != nil {
		w.t.Fatal(err)
	}
	w.expected[key] = w.state(key, version)
	return &kgo.Record{Key: []byte(key), Value: append(schemas.AppendWire(nil, w.schemaID), b...)}
}

func (w *world) tombstone(key string) *kgo.Record {
	w.expected[key] = nil
	return &kgo.Record{Key: []byte(key)}
}

// history writes n random changes over keys, in transactions of up to 50.
func (w *world) history(seed uint64, n, keys int) {
	rng := rand.New(rand.NewPCG(seed, 7))
	var batch []*kgo.Record
	for i := range n {
		key := "k" + strconv.Itoa(rng.IntN(keys))
		if rng.IntN(8) == 0 {
			batch = append(batch, w.tombstone(key))
		} else {
			batch = append(batch, w.upsert(key, int64(i+1)))
		}
		if len(batch) == 50 || i == n-1 {
			w.write(batch...)
			batch = nil
		}
	}
}

// model is a store under test, with a way to read it back.
type model struct {
	store    consumer.Store[map[string]any]
	snapshot func() map[string]map[string]any // key → id, version, name
	durable  bool                             // keeps offsets across processes
	pool     *pgxpool.Pool
}

type storeKind struct {
	name string
	make func(t *testing.T, w *world) *model
}

var stores = []storeKind{
	{"memory", func(t *testing.T, w *world) *model {
		m := consumer.NewMemory[map[string]any]()
		return &model{store: m, snapshot: func() map[string]map[string]any {
			snap, err := m.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			out := map[string]map[string]any{}
			for k, v := range snap {
				out[k] = map[string]any{"id": v["id"], "version": v["version"], "name": v["name"]}
			}
			return out
		}}
	}},
	{"postgres", func(t *testing.T, w *world) *model {
		pool := w.w.Pool // a model per world: the mirror table is the world's
		mirror, err := consumer.NewMirror(w.schema)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(context.Background(), mirror.CreateTable("customers_mirror")); err != nil {
			t.Fatal(err)
		}
		return &model{store: &consumer.Postgres[map[string]any]{Pool: pool, Table: "customers_mirror", Projection: mirror}, durable: true, pool: pool,
			snapshot: func() map[string]map[string]any { return pgSnapshot(t, pool, "customers_mirror") }}
	}},
}

// worldWith is a new world with a seeded history of n changes over keys
// (none when n is 0), and a model of kind sk on it.
func (sk storeKind) worldWith(t *testing.T, seed uint64, n, keys int) (*world, *model) {
	t.Helper()
	w := newWorld(t)
	if n > 0 {
		w.history(seed, n, keys)
	}
	return w, sk.make(t, w)
}

// seed writes n entities, e0 to e<n-1>, at version 1, in transactions of
// batch.
func (w *world) seed(n, batch int) {
	w.t.Helper()
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, w.upsert("e"+strconv.Itoa(i), 1))
		if len(recs) == batch || i == n-1 {
			w.write(recs...)
			recs = nil
		}
	}
}

func pgSnapshot(t *testing.T, pool *pgxpool.Pool, table string) map[string]map[string]any {
	t.Helper()
	rows, err := pool.Query(context.Background(), "SELECT _key, id, version, name FROM "+table)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]any{}
	var k, id, name string
	var v int64
	if _, err := pgx.ForEachRow(rows, []any{&k, &id, &v, &name}, func() error {
		out[k] = map[string]any{"id": id, "version": v, "name": name}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func (w *world) consumer(t *testing.T, m *model, name string, mut ...func(*consumer.Config[map[string]any])) *consumer.Consumer[map[string]any] {
	t.Helper()
	cfg := consumer.Config[map[string]any]{Name: name, Topic: w.topic, KafkaOpts: w.opts(), Registry: w.registry, Store: m.store, MaxBatch: 97}
	for _, f := range mut {
		f(&cfg)
	}
	c, err := consumer.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if mem, ok := m.store.(*consumer.Memory[map[string]any]); ok {
		mem.Bind(c.Ready)
	}
	return c
}

// start runs c until the test ends; stop returns Run's result.
func start(t *testing.T, c *consumer.Consumer[map[string]any]) (stop func() error) {
	return testkit.Background(t, c.Run)
}

func waitReady(t *testing.T, c *consumer.Consumer[map[string]any]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatalf("not ready: %v", err)
	}
}

// assertModel compares the model with the latest state per key.
func (w *world) assertModel(t *testing.T, m *model) {
	t.Helper()
	got := m.snapshot()
	want := 0
	for k, s := range w.expected {
		if s == nil {
			if _, ok := got[k]; ok {
				t.Errorf("deleted key %s is still in the model", k)
			}
			continue
		}
		want++
		g, ok := got[k]
		if !ok {
			t.Errorf("key %s missing from the model", k)
			continue
		}
		if g["version"] != s["version"] || g["name"] != s["name"] || g["id"] != s["id"] {
			t.Errorf("key %s = %v, want version %v name %v", k, g, s["version"], s["name"])
		}
	}
	if len(got) != want {
		t.Errorf("model holds %d keys, want %d", len(got), want)
	}
}

// TestContract runs one behaviour suite on every store.
func TestContract(t *testing.T) {
	t.Parallel()
	for _, sk := range stores {
		t.Run(sk.name, func(t *testing.T) {
			t.Parallel()
			t.Run("replay equals the latest state per key", func(t *testing.T) {
				t.Parallel()
				w, m := sk.worldWith(t, 1, 1500, 200)
				c := w.consumer(t, m, "replay")
				start(t, c)
				waitReady(t, c)
				w.assertModel(t, m) // at once: ready means caught up
			})
			t.Run("follows live changes and tombstones delete", func(t *testing.T) {
				t.Parallel()
				w, m := sk.worldWith(t, 0, 0, 0)
				c := w.consumer(t, m, "live")
				start(t, c)
				waitReady(t, c) // an empty topic is caught up at once
				w.write(w.upsert("a", 1), w.upsert("b", 2))
				wait.Eventually(t, time.Minute, "a and b", func() bool { return len(m.snapshot()) == 2 })
				w.write(w.tombstone("a"), w.upsert("b", 3))
				wait.Eventually(t, time.Minute, "a deleted", func() bool { _, ok := m.snapshot()["a"]; return !ok })
				wait.Eventually(t, time.Minute, "b at version 3", func() bool { return m.snapshot()["b"]["version"] == int64(3) })
				w.assertModel(t, m)
			})
			t.Run("redelivery is harmless", func(t *testing.T) {
				t.Parallel()
				w, m := sk.worldWith(t, 2, 300, 40)
				c := w.consumer(t, m, "redeliver")
				stop := start(t, c)
				waitReady(t, c)
				// The relay delivers at least once: the same states again.
				var again []*kgo.Record
				for k, s := range w.expected {
					if s != nil {
						again = append(again, w.upsert(k, s["version"].(int64)))
					}
				}
				w.write(again...)
				w.write(w.upsert("marker", 1))
				wait.Eventually(t, time.Minute, "the marker", func() bool { _, ok := m.snapshot()["marker"]; return ok })
				if err := stop(); err != nil {
					t.Fatal(err)
				}
				w.assertModel(t, m)
			})
			t.Run("readiness fires only after catch-up", func(t *testing.T) {
				t.Parallel()
				w, m := sk.worldWith(t, 3, 1000, 300)
				gate := &gatedStore{Store: m.store, entered: make(chan struct{}), release: make(chan struct{})}
				c := w.consumer(t, m, "ready", func(cfg *consumer.Config[map[string]any]) { cfg.Store = gate })
				start(t, c)
				<-gate.entered // the first batch is being applied
				if c.Ready() {
					t.Fatal("ready before the first batch was applied")
				}
				if mem, ok := m.store.(*consumer.Memory[map[string]any]); ok {
					if _, _, err := mem.Get("k1"); !errors.Is(err, consumer.ErrNotReady) {
						t.Fatalf("a read before readiness = %v, want ErrNotReady", err)
					}
				}
				close(gate.release)
				waitReady(t, c)
				w.assertModel(t, m)
			})
		})
	}
}

// gatedStore holds the first Apply until released.
type gatedStore struct {
	consumer.Store[map[string]any]
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (g *gatedStore) Apply(ctx context.Context, name string, b *consumer.Batch[map[string]any]) error {
	g.once.Do(func() {
		close(g.entered)
		<-g.release
	})
	return g.Store.Apply(ctx, name, b)
}
