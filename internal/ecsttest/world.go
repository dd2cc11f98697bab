// Package ecsttest is a whole ecst system for a test: a migrated database
// with the customers example's source table, a broker (kfake, or the real
// one under make test-kafka) with the entity's compacted topic, an
// in-process registry holding the schema, the example's ecst.yaml pointed
// at all of them, a Publisher, and the relay. Every package's tests build
// their system here; Options says what a test needs that others do not.
//
// Test packages that use it call pgtest.Main from TestMain.
package ecsttest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/config/kafkaopts"
	"github.com/ecst-io/ecst/examples/customers"
	"github.com/ecst-io/ecst/internal/kafkatest"
	"github.com/ecst-io/ecst/internal/pgtest"
	"github.com/ecst-io/ecst/internal/testkit"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/schemas"
)

// Partitions of a world's topic unless Options say otherwise.
const Partitions = 3

// Options adjust New. The zero value is a world on a new broker, with a
// topic and service unique to it and the schema registered.
type Options struct {
	// Broker is a broker to share with other worlds (nil: a new one).
	Broker *kafkatest.Broker
	// SASL asks for a new broker that requires SASL; the world's clients
	// and ecst.yaml authenticate with SCRAM-SHA-512.
	SASL bool
	// Restartable asks for a new broker that Broker.Restart can stop and
	// start on the same data.
	Restartable bool
	// Offline: no broker and no topic; the outbox is as far as events go.
	// For the write path's tests, which need no Kafka client.
	Offline bool
	// Partitions of the topic (0: Partitions).
	Partitions int
	// Shards of the outbox (0: the config's default).
	Shards int
	// DBURL is a migrated database of the test's choosing (empty: a new one
	// from pgtest).
	DBURL string
	// Topic is the entity's topic (empty: a name unique to the world, so
	// that tests can share a real broker).
	Topic string
	// Service is the producing service (empty: a name unique to the world:
	// it is the relay's transactional id).
	Service string
	// Unregistered leaves the entity's schema out of the registry.
	Unregistered bool
	// AutoRegister lets the Publisher register the schema itself.
	AutoRegister bool
	// WAL runs the world on the WAL transport, as UseWAL moves it.
	WAL bool
}

// World is one test's ecst system.
type World struct {
	T      testing.TB
	Pool   *pgxpool.Pool
	DBURL  string
	Broker *kafkatest.Broker // nil when Offline
	// Fake is the in-process registry; Registry is ecst's client of it.
	Fake     *srfake.Registry
	Registry *schemas.Registry
	// ConfigPath is the example's ecst.yaml with the world's topic and
	// partitions; Env holds the ECST_* variables that point it at the
	// world. Config is ConfigPath loaded with Env.
	ConfigPath string
	Env        map[string]string
	Config     *config.Config
	Entity     *config.Entity
	Pub        *producer.Publisher
	Schema     avro.Schema
	SchemaID   int // 0 when Unregistered
	Topic      string
	Service    string
	Partitions int

	kafka    []kgo.Opt
	relayLog *testkit.Buffer
}

var seq atomic.Int64

// decoySubject is registered before the entity's, so that the entity's
// schema id is not trivially 1.
const decoySubject = "ecsttest-decoy-value"

// New builds a world for t.
func New(t testing.TB, o Options) *World {
	t.Helper()
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + strconv.FormatInt(seq.Add(1), 10)
	w := &World{T: t, Topic: o.Topic, Service: o.Service, Partitions: o.Partitions, DBURL: o.DBURL, Fake: srfake.New()}
	t.Cleanup(w.Fake.Close)
	if w.Topic == "" {
		w.Topic = topicName(t.Name()) + "-" + suffix
	}
	if w.Service == "" {
		w.Service = "svc-" + suffix
	}
	if w.Partitions == 0 {
		w.Partitions = Partitions
	}
	w.openDB(o)
	w.startBroker(o)
	w.writeConfig(o)
	if err := w.register(o); err != nil {
		t.Fatal(err)
	}
	w.Schema = avro.MustParse(customers.Schema)
	var err error
	if w.Registry, err = schemas.NewRegistry(w.Config.Registry); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Registry.Close)
	if w.Pub, err = producer.FromConfig(w.Config, w.Registry); err != nil {
		t.Fatal(err)
	}
	if w.Broker != nil {
		// As `ecst topics apply` does: the entity's partitions and topic configs.
		w.Broker.CreateTopic(t, w.Topic, w.Entity.Partitions, w.Entity.WantTopicConfig())
	}
	if o.WAL {
		w.UseWAL()
	}
	return w
}

var unsafeTopic = regexp.MustCompile(`[^a-z0-9]+`)

// topicName makes a test's name a topic name's readable part.
func topicName(test string) string {
	s := strings.Trim(unsafeTopic.ReplaceAllString(strings.ToLower(test), "-"), "-")
	return "ecst-" + s[:min(len(s), 180)]
}

func (w *World) openDB(o Options) {
	t := w.T
	t.Helper()
	if w.DBURL == "" {
		w.DBURL = pgtest.NewDBURL(t)
	}
	var err error
	if w.Pool, err = pgxpool.New(context.Background(), w.DBURL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Pool.Close)
	if _, err := w.Pool.Exec(context.Background(), customers.TableSQL); err != nil {
		t.Fatal(err)
	}
}

func (w *World) startBroker(o Options) {
	t := w.T
	t.Helper()
	switch {
	case o.Offline:
	case o.Broker != nil:
		w.Broker = o.Broker
	case o.SASL:
		w.Broker = kafkatest.NewSASL(t)
	case o.Restartable:
		w.Broker = kafkatest.NewRestartable(t)
	default:
		w.Broker = kafkatest.New(t)
	}
}

// writeConfig writes the world's ecst.yaml and loads it, as a service
// started with Env would.
func (w *World) writeConfig(o Options) {
	t := w.T
	t.Helper()
	w.Env = map[string]string{
		"ECST_SERVICE":             w.Service,
		"ECST_DATABASE_URL":        w.DBURL,
		"ECST_SCHEMA_REGISTRY_URL": w.Fake.URL(),
		"ECST_METRICS_ADDR":        "off", // parallel relays would all want :9464
	}
	if w.Broker != nil {
		w.Env["ECST_BROKERS"] = strings.Join(w.Broker.Seeds, ",")
		if w.Broker.SASL {
			w.Env["ECST_KAFKA_SASL_MECHANISM"] = "SCRAM-SHA-512"
			w.Env["ECST_KAFKA_SASL_USERNAME"] = kafkatest.SASLUser
			w.Env["ECST_KAFKA_SASL_PASSWORD"] = kafkatest.SASLPassword
		}
	}
	if o.Shards > 0 {
		w.Env["ECST_OUTBOX_SHARDS"] = strconv.Itoa(o.Shards)
	}
	w.ConfigPath = w.WriteConfig(t.TempDir(), "")
	cfg, err := config.Load(w.ConfigPath, w.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Registry.AutoRegister = o.AutoRegister
	if err := cfg.Finish(); err != nil {
		t.Fatal(err)
	}
	w.Config, w.Entity = cfg, cfg.Entities["customer"]
	if w.Broker != nil {
		if w.kafka, err = kafkaopts.Client(cfg.Kafka); err != nil {
			t.Fatal(err)
		}
	}
}

// WriteConfig writes the world's ecst.yaml, and the schema it names, in
// dir, and returns the file's path. Load it with Getenv. extra is YAML
// added at the end of the file: top-level sections, such as relay.
func (w *World) WriteConfig(dir, extra string) string {
	w.T.Helper()
	yaml := customers.Config
	for _, r := range [][2]string{
		{"topic: customers.state", "topic: " + w.Topic},
		{"partitions: 6", "partitions: " + strconv.Itoa(w.Partitions) + "\n    replication_factor: 1"},
	} {
		if !strings.Contains(yaml, r[0]) {
			w.T.Fatalf("ecsttest: examples/customers/ecst.yaml no longer says %q", r[0])
		}
		yaml = strings.Replace(yaml, r[0], r[1], 1)
	}
	if err := os.MkdirAll(filepath.Join(dir, "schemas"), 0o755); err != nil {
		w.T.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "schemas", "customer.avsc"), []byte(customers.Schema), 0o644); err != nil {
		w.T.Fatal(err)
	}
	path := filepath.Join(dir, "ecst.yaml")
	if err := os.WriteFile(path, []byte(yaml+extra), 0o644); err != nil {
		w.T.Fatal(err)
	}
	return path
}

func (w *World) register(o Options) error {
	if _, _, err := w.Fake.RegisterSchema(decoySubject, sr.Schema{Schema: `"string"`}); err != nil {
		return fmt.Errorf("register the decoy schema: %w", err)
	}
	if o.Unregistered {
		return nil
	}
	var err error
	if w.SchemaID, _, err = w.Fake.RegisterSchema(w.Entity.Subject(), sr.Schema{Schema: customers.Schema}); err != nil {
		return fmt.Errorf("register %s: %w", w.Entity.Subject(), err)
	}
	return nil
}

// Getenv is the world's environment, for config.Load and the services.
func (w *World) Getenv(k string) string { return w.Env[k] }

// Kafka is the client configuration of the world's broker, built from its
// ecst.yaml as every ecst client's is (nil when Offline).
func (w *World) Kafka() []kgo.Opt { return append([]kgo.Opt(nil), w.kafka...) }

// Client is a Kafka client of the world's broker with opts added; the
// caller closes it.
func (w *World) Client(opts ...kgo.Opt) *kgo.Client {
	w.T.Helper()
	cl, err := kgo.NewClient(append(w.Kafka(), opts...)...)
	if err != nil {
		w.T.Fatal(err)
	}
	return cl
}
