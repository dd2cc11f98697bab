package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/internal/customers"
	"github.com/ecst-io/ecst/internal/topicscan"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/relay"
	"github.com/ecst-io/ecst/republish"
	"github.com/ecst-io/ecst/schemas"
	"github.com/ecst-io/ecst/verify"
)

// Recovery is the recovery benchmark: a customers table to republish, and
// its topic to verify against, each step timed against its baseline.
type Recovery struct {
	pool    *pgxpool.Pool
	kopts   []kgo.Opt
	reg     *schemas.Registry
	service string
	entity  *config.Entity
	pub     *producer.Publisher
}

// NewRecovery declares the customer entity on a topic of its own, with its
// schema registered on registry; Close releases it.
func NewRecovery(pool *pgxpool.Pool, kopts []kgo.Opt, registry *Registry) (*Recovery, error) {
	topic := fmt.Sprintf("bench-recovery-%d", time.Now().UnixNano())
	bcfg, err := config.Parse([]byte(fmt.Sprintf(`service: bench-recovery-%d
entities:
  customer:
    topic: %s
    schema: customer.avsc
    source:
      table: customers
      key: id
      version: version
      query: SELECT id, version, name, email, tier, updated_at FROM customers
`, time.Now().UnixNano(), topic)))
	if err != nil {
		return nil, err
	}
	entity := bcfg.Entities["customer"]
	entity.Name = "customer"
	entity.SchemaText = customers.Schema
	if _, err := registry.Register(entity.Subject(), customers.Schema); err != nil {
		return nil, err
	}
	reg, err := registry.Client()
	if err != nil {
		return nil, err
	}
	pub, err := producer.New(producer.Config{Service: bcfg.Service, Entities: bcfg.Entities, Registry: reg})
	if err != nil {
		reg.Close()
		return nil, err
	}
	return &Recovery{pool: pool, kopts: kopts, reg: reg, service: bcfg.Service, entity: entity, pub: pub}, nil
}

// Close closes the registry client.
func (r *Recovery) Close() { r.reg.Close() }

// Fill creates the customers table with rows rows, values of about 300
// bytes.
func (r *Recovery) Fill(ctx context.Context, rows int) error {
	if _, err := r.pool.Exec(ctx, customers.TableSQL); err != nil {
		return err
	}
	if _, err := r.pool.Exec(ctx, `INSERT INTO customers (id, version, name, email, tier, updated_at)
		SELECT 'c' || lpad(i::text, 9, '0'), 1, 'name ' || i || ' ' || repeat('x', 200), 'customer' || i || '@example.com',
		       CASE WHEN i % 3 = 0 THEN 'gold' END, now()
		FROM generate_series(1, $1) AS i`, rows); err != nil {
		return err
	}
	_, err := r.pool.Exec(ctx, `VACUUM ANALYZE customers`)
	return err
}

// Copy is the baseline: the same rows, COPYed into a plain table (no
// index). It returns how long the COPY took.
func (r *Recovery) Copy(ctx context.Context) (time.Duration, error) {
	src, err := r.pool.Query(ctx, `SELECT id, version, name, email, tier, updated_at FROM customers`)
	if err != nil {
		return 0, err
	}
	all, err := pgx.CollectRows(src, func(r pgx.CollectableRow) ([]any, error) { return r.Values() })
	if err != nil {
		return 0, err
	}
	if _, err := r.pool.Exec(ctx, `CREATE TABLE plain (LIKE customers)`); err != nil {
		return 0, err
	}
	return timed(func() error {
		_, err := r.pool.CopyFrom(ctx, pgx.Identifier{"plain"}, []string{"id", "version", "name", "email", "tier", "updated_at"}, pgx.CopyFromRows(all))
		return err
	})
}

// Republish writes every row's state to the outbox, batch keys per
// transaction, and says how long it took.
func (r *Recovery) Republish(ctx context.Context, batch int) (*republish.Result, time.Duration, error) {
	start := time.Now()
	res, err := republish.Run(ctx, republish.Config{Pool: r.pool, Publisher: r.pub, Entity: r.entity, Kafka: r.kopts},
		republish.Options{All: true, Batch: batch, MaxBacklog: -1})
	return res, time.Since(start), err
}

// Relay creates the compacted topic and drains the outbox to it with
// ecst's relay; it says how long the drain took.
func (r *Recovery) Relay(ctx context.Context) (time.Duration, error) {
	cl, err := kgo.NewClient(r.kopts...)
	if err != nil {
		return 0, err
	}
	compact := "compact"
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, 6, -1, map[string]*string{"cleanup.policy": &compact}, r.entity.Topic)
	cl.Close()
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return 0, err
	}
	rl, err := relay.New(relay.Config{Pool: r.pool, KafkaOpts: r.kopts, Service: r.service, Topics: []string{r.entity.Topic}, Drain: true})
	if err != nil {
		return 0, err
	}
	return timed(func() error { return rl.Run(ctx) })
}

// Scan reads the whole topic, records counted, not decoded, and says how
// many and how long it took.
func (r *Recovery) Scan(ctx context.Context) (int64, time.Duration, error) {
	start := time.Now()
	var n int64
	if _, err := topicscan.Scan(ctx, r.kopts, r.entity.Topic, nil, func(*kgo.Record) error { n++; return nil }); err != nil {
		return 0, 0, err
	}
	return n, time.Since(start), nil
}

// Verify verifies source ⇄ topic, and says how long it took.
func (r *Recovery) Verify(ctx context.Context) (*verify.Report, time.Duration, error) {
	start := time.Now()
	rep, err := verify.Run(ctx, verify.Config{Pool: r.pool, Registry: r.reg, Entity: r.entity, Kafka: r.kopts}, verify.Options{})
	return rep, time.Since(start), err
}
