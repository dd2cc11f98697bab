// Package ecsttest is a whole ecst system for a test: a migrated database
// with the customers example's source table, a broker (kfake, or the real
// one under make test-kafka) with the entity's compacted topic, an
// in-process registry holding the schema, a Publisher, and the relay.
// Republish, verify and the convergence property test share it.
package ecsttest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/consumer"
	"github.com/ecst-io/ecst/examples/customers"
	"github.com/ecst-io/ecst/internal/kafkatest"
	"github.com/ecst-io/ecst/internal/pgident"
	"github.com/ecst-io/ecst/internal/pgtest"
	"github.com/ecst-io/ecst/internal/topicscan"
	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/relay"
	"github.com/ecst-io/ecst/schemas"
)

// Partitions of the world's topic.
const Partitions = 3

// World is one test's ecst system.
type World struct {
	T        testing.TB
	Pool     *pgxpool.Pool
	DBURL    string
	Broker   *kafkatest.Broker
	Fake     *srfake.Registry
	Registry *schemas.Registry
	Config   *config.Config
	Entity   *config.Entity
	Pub      *producer.Publisher
	Schema   avro.Schema
	SchemaID int
	Topic    string
}

var seq atomic.Int64

// New builds a world on broker (nil: a new one).
func New(t testing.TB, broker *kafkatest.Broker) *World {
	t.Helper()
	ctx := context.Background()
	if broker == nil {
		broker = kafkatest.New(t)
	}
	w := &World{T: t, Broker: broker, Fake: srfake.New()}
	t.Cleanup(w.Fake.Close)
	w.DBURL = pgtest.NewDBURL(t)
	var err error
	if w.Pool, err = pgxpool.New(ctx, w.DBURL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Pool.Close)
	if _, err := w.Pool.Exec(ctx, customers.TableSQL); err != nil {
		t.Fatal(err)
	}
	suffix := fmt.Sprintf("%d-%d", time.Now().UnixNano(), seq.Add(1))
	w.Topic = "customers-" + suffix
	cfg, err := config.Load(filepath.Join(repoRoot(), "examples", "customers", "ecst.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Service = "svc-" + suffix // the relay's transactional id: unique per world
	cfg.Registry.URL = config.SecretURL(w.Fake.URL())
	cfg.Kafka.Brokers = broker.Seeds
	cfg.Entities["customer"].Topic = w.Topic
	if err := cfg.Finish(); err != nil {
		t.Fatal(err)
	}
	w.Entity = cfg.Entities["customer"]
	w.Config = cfg
	if w.SchemaID, _, err = w.Fake.RegisterSchema(w.Entity.Subject(), sr.Schema{Schema: customers.Schema}); err != nil {
		t.Fatal(err)
	}
	if w.Registry, err = schemas.NewRegistry(cfg.Registry); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Registry.Close)
	if w.Pub, err = producer.FromConfig(cfg, w.Registry); err != nil {
		t.Fatal(err)
	}
	w.Schema, _ = schemas.Parse(customers.Schema)
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker.Seeds...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	compact := "compact"
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, Partitions, 1, map[string]*string{"cleanup.policy": &compact}, w.Topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Kafka is the client configuration of the world's broker.
func (w *World) Kafka() []kgo.Opt { return []kgo.Opt{kgo.SeedBrokers(w.Broker.Seeds...)} }

// Upsert writes key's new state the way the customers service does: the
// row and its event in one transaction. It returns the new version.
func (w *World) Upsert(ctx context.Context, key string) (int64, error) {
	return w.tx(ctx, func(tx pgx.Tx) (int64, error) {
		row := tx.QueryRow(ctx, `INSERT INTO customers (id, version, name, email, tier) VALUES ($1, 1, $2, $3, NULL)
			ON CONFLICT (id) DO UPDATE SET version = customers.version + 1, name = $2 || customers.version, updated_at = now()
			RETURNING id, version, name, email, tier, updated_at`, key, "name-"+key, key+"@example.com")
		state, version, err := scanState(row)
		if err != nil {
			return 0, err
		}
		return version, w.Pub.Publish(ctx, tx, "customer", key, version, state)
	})
}

// Delete deletes key and publishes its tombstone, in one transaction.
func (w *World) Delete(ctx context.Context, key string) error {
	_, err := w.tx(ctx, func(tx pgx.Tx) (int64, error) {
		var version int64
		err := tx.QueryRow(ctx, `DELETE FROM customers WHERE id = $1 RETURNING version`, key).Scan(&version)
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, nil
		}
		if err != nil {
			return 0, err
		}
		return version, w.Pub.Delete(ctx, tx, "customer", key, version+1)
	})
	return err
}

func (w *World) tx(ctx context.Context, fn func(pgx.Tx) (int64, error)) (int64, error) {
	var v int64
	err := pgx.BeginFunc(ctx, w.Pool, func(tx pgx.Tx) error {
		var err error
		v, err = fn(tx)
		return err
	})
	return v, err
}

func scanState(row pgx.Row) (map[string]any, int64, error) {
	var (
		id, name, email string
		tier            *string
		version         int64
		updated         time.Time
	)
	if err := row.Scan(&id, &version, &name, &email, &tier, &updated); err != nil {
		return nil, 0, err
	}
	state := map[string]any{"id": id, "version": version, "name": name, "email": email, "tier": nil, "updated_at": updated}
	if tier != nil {
		state["tier"] = *tier
	}
	return state, version, nil
}

// Exec runs an ad hoc statement (a change that publishes nothing).
func (w *World) Exec(sql string, args ...any) {
	w.T.Helper()
	if _, err := w.Pool.Exec(context.Background(), sql, args...); err != nil {
		w.T.Fatal(err)
	}
}

// RelayConfig is the world's relay configuration.
func (w *World) RelayConfig(drain bool) relay.Config {
	return relay.Config{Pool: w.Pool, KafkaOpts: w.Kafka(), Service: w.Config.Service, Topics: []string{w.Topic},
		Transport: outbox.Transport(w.Config.Outbox.Transport), WALHeartbeat: 200 * time.Millisecond,
		PollMin: time.Millisecond, PollMax: 20 * time.Millisecond, Drain: drain}
}

// UseWAL moves the world to the WAL transport: the database (the slot made,
// the switch done), its config, its Publisher and its relays.
func (w *World) UseWAL() {
	w.T.Helper()
	if _, err := relay.Switch(context.Background(), w.Pool, outbox.TransportWAL, relay.SwitchOptions{Service: w.Config.Service}); err != nil {
		w.T.Fatal(err)
	}
	w.Config.Outbox.Transport = config.TransportWAL
	pub, err := producer.FromConfig(w.Config, w.Registry)
	if err != nil {
		w.T.Fatal(err)
	}
	w.Pub = pub
}

// Drain publishes everything in the outbox.
func (w *World) Drain() {
	w.T.Helper()
	r, err := relay.New(w.RelayConfig(true))
	if err != nil {
		w.T.Fatal(err)
	}
	if err := r.Run(context.Background()); err != nil {
		w.T.Fatalf("relay --drain: %v", err)
	}
}

// StartRelay runs the relay until the returned stop is called; stop
// returns its error (nil when stopped by stop).
func (w *World) StartRelay() (stop func() error) {
	r, err := relay.New(w.RelayConfig(false))
	if err != nil {
		w.T.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	var rerr error
	return func() error {
		once.Do(func() {
			cancel()
			rerr = <-done
			if errors.Is(rerr, context.Canceled) {
				rerr = nil
			}
		})
		return rerr
	}
}

// WaitRelayLeads waits until a relay leads a shard of the world's outbox:
// one just started has then taken its lock.
func (w *World) WaitRelayLeads() {
	w.T.Helper()
	ctx := context.Background()
	if err := wait.Until(ctx, 30*time.Second, 10*time.Millisecond, "a relay to lead a shard", func() (bool, error) {
		if w.Config.Outbox.Transport == config.TransportWAL {
			return relay.LeadsWAL(ctx, w.Pool)
		}
		l, err := relay.Leaders(ctx, w.Pool)
		return len(l) > 0, err
	}); err != nil {
		w.T.Fatal(err)
	}
}

// Latest reads the topic to its end: the latest record per key.
func (w *World) Latest() map[string]*kgo.Record {
	w.T.Helper()
	out := map[string]*kgo.Record{}
	if _, err := topicscan.Scan(context.Background(), w.Kafka(), w.Topic, nil, func(r *kgo.Record) error {
		out[string(r.Key)] = r
		return nil
	}); err != nil {
		w.T.Fatal(err)
	}
	return out
}

// Source reads the source table: key → state.
func (w *World) Source() map[string]map[string]any {
	w.T.Helper()
	rows, err := w.Pool.Query(context.Background(), `SELECT id, version, name, email, tier, updated_at FROM customers`)
	if err != nil {
		w.T.Fatal(err)
	}
	defer rows.Close()
	out := map[string]map[string]any{}
	for rows.Next() {
		s, _, err := scanState(rows)
		if err != nil {
			w.T.Fatal(err)
		}
		out[s["id"].(string)] = s
	}
	if err := rows.Err(); err != nil {
		w.T.Fatal(err)
	}
	return out
}

// Decode decodes a record's value (nil for a tombstone).
func (w *World) Decode(r *kgo.Record) (map[string]any, error) {
	if r.Value == nil {
		return nil, nil
	}
	id, payload, err := schemas.DecodeWire(r.Value)
	if err != nil {
		return nil, err
	}
	if id != w.SchemaID {
		return nil, fmt.Errorf("schema id %d, want %d", id, w.SchemaID)
	}
	var m map[string]any
	if err := avro.Unmarshal(w.Schema, payload, &m); err != nil {
		return nil, err
	}
	return m, nil
}

// TopicMatchesSource returns what differs between the topic's latest
// records and the source, one line per key (empty: they agree).
func (w *World) TopicMatchesSource() []string {
	w.T.Helper()
	src := w.Source()
	latest := w.Latest()
	var diffs []string
	for k, s := range src {
		r, ok := latest[k]
		if !ok {
			diffs = append(diffs, k+": not on the topic")
			continue
		}
		got, err := w.Decode(r)
		if err != nil {
			diffs = append(diffs, fmt.Sprintf("%s: %v", k, err))
			continue
		}
		if got == nil {
			diffs = append(diffs, k+": tombstone on the topic, row in the source")
			continue
		}
		if d := DiffState(s, got); d != "" {
			diffs = append(diffs, k+": "+d)
		}
	}
	for k, r := range latest {
		if _, ok := src[k]; !ok && r.Value != nil {
			diffs = append(diffs, k+": alive on the topic, not in the source")
		}
	}
	return diffs
}

// DiffState compares two customer states field by field.
func DiffState(want, got map[string]any) string {
	var d []string
	for _, f := range []string{"id", "version", "name", "email", "tier", "updated_at"} {
		a, b := fmt.Sprint(want[f]), fmt.Sprint(got[f])
		if t, ok := want[f].(time.Time); ok {
			a = t.UTC().Format(time.RFC3339Nano)
		}
		if t, ok := got[f].(time.Time); ok {
			b = t.UTC().Format(time.RFC3339Nano)
		}
		if a != b {
			d = append(d, fmt.Sprintf("%s %s≠%s", f, a, b))
		}
	}
	return strings.Join(d, ", ")
}

// Keys returns n keys.
func Keys(n int) []string {
	ks := make([]string, n)
	for i := range ks {
		ks[i] = fmt.Sprintf("c%05d", i)
	}
	return ks
}

// Seed upserts every key once, in batches.
func (w *World) Seed(ctx context.Context, keys []string) {
	w.T.Helper()
	for _, k := range keys {
		if _, err := w.Upsert(ctx, k); err != nil {
			w.T.Fatal(err)
		}
	}
}

// Rand returns a seeded generator and logs the seed.
func Rand(t testing.TB, seed uint64) *rand.Rand {
	t.Logf("seed %d", seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// MirrorCatchUp catches the mirror table up with the topic, as `ecst
// mirror --table table --once --poison skip` does, creating the table if
// needed.
func (w *World) MirrorCatchUp(table string) error {
	ctx := context.Background()
	name, err := pgident.Parse(table)
	if err != nil {
		return err
	}
	m, err := consumer.NewMirror(w.Schema)
	if err != nil {
		return err
	}
	if _, err := w.Pool.Exec(ctx, m.CreateTable(name.Quoted())); err != nil {
		return err
	}
	c, err := consumer.New(consumer.Config[map[string]any]{
		Name: "mirror:" + name.String(), Topic: w.Topic, KafkaOpts: w.Kafka(), Registry: w.Registry,
		Store:  &consumer.Postgres[map[string]any]{Pool: w.Pool, Table: name.Quoted(), Projection: m},
		Poison: consumer.Skip,
	})
	if err != nil {
		return err
	}
	return c.CatchUp(ctx)
}

// MirrorMatchesSource returns the keys whose mirror row differs from the
// source row (or exists on one side only). The table is named as `ecst
// mirror --table` takes it.
func (w *World) MirrorMatchesSource(table string) []string {
	w.T.Helper()
	name, err := pgident.Parse(table)
	if err != nil {
		w.T.Fatal(err)
	}
	rows, err := w.Pool.Query(context.Background(), `SELECT coalesce(c.id, m._key) FROM customers c FULL JOIN `+name.Quoted()+` m ON m._key = c.id
		WHERE c.id IS NULL OR m._key IS NULL OR (c.version, c.name, c.email, c.tier, c.updated_at) IS DISTINCT FROM (m.version, m.name, m.email, m.tier, m.updated_at)
		ORDER BY 1`)
	if err != nil {
		w.T.Fatal(err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		w.T.Fatal(err)
	}
	return keys
}
