// Package stack gives the customers example's tests the parts the two
// services run on: a migrated PostgreSQL database (pgtest), a broker
// (kfake, or the real Kafka of ECST_TEST_BROKERS) with the customer topic,
// an in-process Schema Registry (srfake), and an ecst.yaml naming them.
// Test packages that use it call pgtest.Main from TestMain.
package stack

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/examples/customers"
	"github.com/ecst-io/ecst/internal/kafkatest"
	"github.com/ecst-io/ecst/internal/pgtest"
	"github.com/ecst-io/ecst/internal/topics"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/relay"
	"github.com/ecst-io/ecst/schemas"
)

// Stack is one test's world.
type Stack struct {
	t      testing.TB
	DBURL  string
	Pool   *pgxpool.Pool
	Broker *kafkatest.Broker
	SR     *srfake.Registry
	// Topic and Service are unique to the test, so that tests can share a
	// real broker (topics, relay transactional ids).
	Topic, Service string
	// ConfigPath is an ecst.yaml for the example with Topic and Service;
	// Env holds the ECST_* variables that point it at this stack.
	ConfigPath string
	Env        map[string]string
	// Config is ConfigPath loaded with Env, validated.
	Config *config.Config
	// SchemaID is the customer schema's registry id (0 if not registered).
	SchemaID int
}

// Options adjust New.
type Options struct {
	// Unregistered leaves the customer schema out of the registry.
	Unregistered bool
}

// New builds a stack for t.
func New(t testing.TB, o Options) *Stack {
	t.Helper()
	ctx := context.Background()
	s := &Stack{t: t, Broker: kafkatest.New(t), SR: srfake.New()}
	t.Cleanup(s.SR.Close)
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	s.Topic, s.Service = "customers-example-"+suffix, "customers-api-"+suffix

	s.DBURL = pgtest.NewDBURL(t)
	var err error
	if s.Pool, err = pgxpool.New(ctx, s.DBURL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Pool.Close)

	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "schemas"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "schemas", "customer.avsc"), []byte(customers.Schema), 0o644); err != nil {
		t.Fatal(err)
	}
	yaml := strings.Replace(customers.Config, "topic: customers.state", "topic: "+s.Topic, 1)
	if yaml == customers.Config {
		t.Fatal("stack: examples/customers/ecst.yaml no longer declares topic: customers.state")
	}
	s.ConfigPath = filepath.Join(dir, "ecst.yaml")
	if err := os.WriteFile(s.ConfigPath, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	s.Env = map[string]string{
		"ECST_SERVICE":             s.Service,
		"ECST_DATABASE_URL":        s.DBURL,
		"ECST_BROKERS":             strings.Join(s.Broker.Seeds, ","),
		"ECST_SCHEMA_REGISTRY_URL": s.SR.URL(),
	}
	if s.Config, err = config.Load(s.ConfigPath, s.Getenv); err != nil {
		t.Fatal(err)
	}
	if err := s.Config.Finish(); err != nil {
		t.Fatal(err)
	}

	// As `ecst topics apply` would, with the entity's partitions.
	cl := s.Client()
	defer cl.Close()
	e := s.Config.Entities["customer"]
	e.ReplicationFactor = 1
	if err := topics.Create(ctx, kadm.NewClient(cl), e); err != nil {
		t.Fatal(err)
	}
	if !o.Unregistered {
		if s.SchemaID, _, err = s.SR.RegisterSchema(s.Topic+"-value", sr.Schema{Schema: customers.Schema}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// Getenv is the stack's environment, for config.Load and the services.
func (s *Stack) Getenv(k string) string { return s.Env[k] }

// Registry is a client of the stack's registry.
func (s *Stack) Registry() *schemas.Registry {
	s.t.Helper()
	r, err := schemas.NewRegistry(s.Config.Registry)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(r.Close)
	return r
}

// KafkaOpts are the broker's client options.
func (s *Stack) KafkaOpts() []kgo.Opt { return []kgo.Opt{kgo.SeedBrokers(s.Broker.Seeds...)} }

// Client is a Kafka client of the broker; the caller closes it.
func (s *Stack) Client(opts ...kgo.Opt) *kgo.Client {
	s.t.Helper()
	cl, err := kgo.NewClient(append(s.KafkaOpts(), opts...)...)
	if err != nil {
		s.t.Fatal(err)
	}
	return cl
}

// Drain runs the relay, as `ecst relay --drain` does: everything in the
// outbox is published, then it returns.
func (s *Stack) Drain() {
	s.t.Helper()
	pool, err := pgxpool.New(context.Background(), s.DBURL) // a relay has a pool of its own
	if err != nil {
		s.t.Fatal(err)
	}
	defer pool.Close()
	r, err := relay.New(relay.Config{
		Pool:        pool,
		KafkaOpts:   s.KafkaOpts(),
		Service:     s.Service,
		TotalShards: s.Config.Outbox.Shards,
		Topics:      []string{s.Topic},
		PollMin:     time.Millisecond,
		PollMax:     20 * time.Millisecond,
		Drain:       true,
		Logger:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := r.Run(ctx); err != nil {
		s.t.Fatalf("relay --drain: %v", err)
	}
	if n := s.OutboxLen(); n != 0 {
		s.t.Fatalf("relay --drain left %d rows in the outbox", n)
	}
}

// OutboxLen counts the rows waiting in the outbox: not yet published.
func (s *Stack) OutboxLen() int {
	s.t.Helper()
	n, err := outbox.PendingCount(context.Background(), s.Pool, 0)
	if err != nil {
		s.t.Fatal(err)
	}
	return int(n)
}

// Row is an outbox row with its headers decoded.
type Row struct {
	ID      int64
	Topic   string
	Key     string
	Value   []byte // nil: a tombstone
	Headers map[string]string
}

// Outbox returns the rows waiting in the outbox, in id order.
func (s *Stack) Outbox() []Row {
	s.t.Helper()
	rows, err := s.Pool.Query(context.Background(), "SELECT id, topic, key, value, headers FROM ("+outbox.PendingSQL+") p ORDER BY id")
	if err != nil {
		s.t.Fatal(err)
	}
	var out []Row
	var r Row
	var hb []byte
	_, err = pgx.ForEachRow(rows, []any{&r.ID, &r.Topic, &r.Key, &r.Value, &hb}, func() error {
		hs, err := outbox.DecodeHeaders(hb)
		if err != nil {
			return fmt.Errorf("outbox row %d: %w", r.ID, err)
		}
		row := r
		row.Headers = make(map[string]string, len(hs))
		for _, h := range hs {
			row.Headers[h.Key] = string(h.Value)
		}
		out = append(out, row)
		return nil
	})
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}
