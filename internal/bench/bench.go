// Package bench is the machinery behind `ecst bench`: the throwaway parts a
// benchmark runs on (a broker, a durable PostgreSQL, a schema registry) and
// the measurements, each a step that returns its figures for the command to
// print. docs/benchmarks.md has the figures.
//
//   - relay: an outbox drained by the raw ceiling of a minimal
//     read-produce loop and by ecst's relay, steady-state latency
//     under live writes, and the relay's memory on a large backlog (Outbox,
//     RelayRSS);
//   - consumer: the rebuild speed of the read-model stores against raw
//     consumption of the same topic (FillTopic, Raw, MemoryModel,
//     PostgresMirror);
//   - e2e: commit-to-read-model latency with the relay and a consumer
//     running (E2E);
//   - recovery: republish and verify of a large source table against COPY
//     and a raw topic scan (Recovery).
package bench

import (
	"context"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/config/kafkaopts"
	"github.com/ecst-io/ecst/internal/pgcluster"
	"github.com/ecst-io/ecst/migrate"
	"github.com/ecst-io/ecst/schemas"
)

// Broker is the Kafka a benchmark talks to: the configured brokers, or an
// in-process kfake broker when none is configured.
type Broker struct {
	Opts  []kgo.Opt
	Seeds []string // for a child process
	Name  string   // for the report
	stop  func()
}

// StartBroker returns the configured brokers, or starts a kfake broker.
func StartBroker(k config.Kafka) (*Broker, error) {
	if len(k.Brokers) > 0 {
		opts, err := kafkaopts.Client(k)
		if err != nil {
			return nil, err
		}
		return &Broker{Opts: opts, Seeds: k.Brokers, Name: "Kafka at " + strings.Join(k.Brokers, ","), stop: func() {}}, nil
	}
	fake, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		return nil, err
	}
	seeds := fake.ListenAddrs()
	return &Broker{Opts: []kgo.Opt{kgo.SeedBrokers(seeds...)}, Seeds: seeds, Name: "kfake (in process)", stop: fake.Close}, nil
}

// Close stops the kfake broker, if it started one.
func (b *Broker) Close() { b.stop() }

// Database is a throwaway durable PostgreSQL cluster (fsync on, as in
// production), migrated.
type Database struct {
	URL     string
	Pool    *pgxpool.Pool
	cluster *pgcluster.Cluster
}

// StartDatabase starts the cluster, migrates it, and opens a pool of
// maxConns connections (0: pgxpool's default). It runs wal_level = logical
// whatever the transport measured, so that both pay the same WAL level.
func StartDatabase(ctx context.Context, maxConns int) (*Database, error) {
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{Durable: true, Logical: true})
	if err != nil {
		return nil, err
	}
	url := cluster.URL("postgres")
	pcfg, err := config.Database{URL: config.SecretURL(url)}.PoolConfig()
	if err == nil && maxConns > 0 {
		pcfg.MaxConns = int32(maxConns) //nolint:gosec // small
	}
	var pool *pgxpool.Pool
	if err == nil {
		pool, err = pgxpool.NewWithConfig(ctx, pcfg)
	}
	if err != nil {
		_ = cluster.Stop()
		return nil, err
	}
	db := &Database{URL: url, Pool: pool, cluster: cluster}
	if _, err := migrate.Up(ctx, pool); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Close closes the pool and removes the cluster.
func (d *Database) Close() {
	d.Pool.Close()
	_ = d.cluster.Stop()
}

// Registry is an in-process schema registry.
type Registry struct {
	fake *srfake.Registry
}

// StartRegistry starts one.
func StartRegistry() *Registry { return &Registry{fake: srfake.New()} }

// Register registers schema under subject and returns its id.
func (r *Registry) Register(subject, schema string) (int, error) {
	id, _, err := r.fake.RegisterSchema(subject, sr.Schema{Schema: schema})
	return id, err
}

// Client returns a new client of the registry; the caller closes it.
func (r *Registry) Client() (*schemas.Registry, error) {
	return schemas.NewRegistry(config.Registry{URL: config.SecretURL(r.fake.URL())})
}

// Close stops the registry.
func (r *Registry) Close() { r.fake.Close() }
