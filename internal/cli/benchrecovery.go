package cli

import (
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/examples/customers"
	"github.com/ecst-io/ecst/internal/topicscan"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/relay"
	"github.com/ecst-io/ecst/republish"
	"github.com/ecst-io/ecst/schemas"
	"github.com/ecst-io/ecst/verify"
)

func newBenchRecoveryCmd(a *app) *cobra.Command {
	var rows, batch int
	cmd := &cobra.Command{
		Use:   "recovery",
		Short: "Republish and verify of a large source table, against COPY and a raw topic scan",
		Long: `Fills a customers table of --rows rows (values of about 300 bytes) on a throwaway
durable PostgreSQL cluster, then measures in one run:

  copy        the same rows COPYed into a plain table (no index): the baseline
  republish   'ecst republish --all' of every row into the outbox (--batch keys per
              transaction), as rows/s and as a ratio of the COPY
  verify      'ecst verify' of source ⇄ topic after the relay drained the outbox to
              the broker named by ECST_BROKERS (or an in-process kfake), against a raw
              scan of the same topic (records counted, not decoded)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			out := cmd.OutOrStdout()
			parts, err := a.benchParts(ctx, out, 0)
			if err != nil {
				return err
			}
			defer parts.stop()
			kopts, brokerName, pool := parts.kopts, parts.broker, parts.pool
			fake := srfake.New()
			defer fake.Close()
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
				return err
			}
			entity := bcfg.Entities["customer"]
			entity.Name = "customer"
			entity.SchemaText = customers.Schema
			if _, _, err := fake.RegisterSchema(entity.Subject(), srSchema(customers.Schema)); err != nil {
				return err
			}
			reg, err := schemas.NewRegistry(config.Registry{URL: config.SecretURL(fake.URL())})
			if err != nil {
				return err
			}
			defer reg.Close()
			pub, err := producer.New(producer.Config{Service: bcfg.Service, Entities: bcfg.Entities, Registry: reg})
			if err != nil {
				return err
			}

			fmt.Fprintf(out, "filling customers with %d rows...\n", rows)
			if _, err := pool.Exec(ctx, customers.TableSQL); err != nil {
				return err
			}
			if _, err := pool.Exec(ctx, `INSERT INTO customers (id, version, name, email, tier, updated_at)
				SELECT 'c' || lpad(i::text, 9, '0'), 1, 'name ' || i || ' ' || repeat('x', 200), 'customer' || i || '@example.com',
				       CASE WHEN i % 3 = 0 THEN 'gold' END, now()
				FROM generate_series(1, $1) AS i`, rows); err != nil {
				return err
			}
			if _, err := pool.Exec(ctx, `VACUUM ANALYZE customers`); err != nil {
				return err
			}

			// Baseline: the same rows, COPYed into a plain table.
			src, err := pool.Query(ctx, `SELECT id, version, name, email, tier, updated_at FROM customers`)
			if err != nil {
				return err
			}
			all, err := pgx.CollectRows(src, func(r pgx.CollectableRow) ([]any, error) { return r.Values() })
			if err != nil {
				return err
			}
			if _, err := pool.Exec(ctx, `CREATE TABLE plain (LIKE customers)`); err != nil {
				return err
			}
			start := time.Now()
			if _, err := pool.CopyFrom(ctx, pgx.Identifier{"plain"}, []string{"id", "version", "name", "email", "tier", "updated_at"}, pgx.CopyFromRows(all)); err != nil {
				return err
			}
			copyD := time.Since(start)
			all = nil
			copyRate := float64(rows) / copyD.Seconds()
			fmt.Fprintf(out, "copy       %9.0f rows/s  (%s)\n", copyRate, copyD.Round(time.Millisecond))

			start = time.Now()
			res, err := republish.Run(ctx, republish.Config{Pool: pool, Publisher: pub, Entity: entity, Kafka: kopts},
				republish.Options{All: true, Batch: batch, MaxBacklog: -1})
			if err != nil {
				return err
			}
			repD := time.Since(start)
			repRate := float64(res.Written) / repD.Seconds()
			fmt.Fprintf(out, "republish  %9.0f rows/s  (%s, %d rows, batch %d) = %.2f× copy\n", repRate, repD.Round(time.Millisecond), res.Written, batch, repRate/copyRate)

			cl, err := kgo.NewClient(kopts...)
			if err != nil {
				return err
			}
			compact := "compact"
			resp, err := kadm.NewClient(cl).CreateTopic(ctx, 6, -1, map[string]*string{"cleanup.policy": &compact}, topic)
			cl.Close()
			if err == nil {
				err = resp.Err
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "relaying %d rows to %s...\n", res.Written, brokerName)
			relay, err := relay.New(relay.Config{Pool: pool, KafkaOpts: kopts, Service: bcfg.Service, Topics: []string{topic}, Drain: true})
			if err != nil {
				return err
			}
			start = time.Now()
			if err := relay.Run(ctx); err != nil {
				return err
			}
			fmt.Fprintf(out, "relay      %9.0f rows/s  (%s)\n", float64(res.Written)/time.Since(start).Seconds(), time.Since(start).Round(time.Millisecond))

			start = time.Now()
			var n int64
			if _, err := topicscan.Scan(ctx, kopts, topic, nil, func(*kgo.Record) error { n++; return nil }); err != nil {
				return err
			}
			scanD := time.Since(start)
			fmt.Fprintf(out, "raw scan   %9.0f records/s  (%s, %d records)\n", float64(n)/scanD.Seconds(), scanD.Round(time.Millisecond), n)
			start = time.Now()
			rep, err := verify.Run(ctx, verify.Config{Pool: pool, Registry: reg, Entity: entity, Kafka: kopts}, verify.Options{})
			if err != nil {
				return err
			}
			verD := time.Since(start)
			fmt.Fprintf(out, "verify     %9.0f keys/s  (%s for %d keys; in sync: %v) = %.1f× the raw scan's time\n",
				float64(rep.SourceKeys)/verD.Seconds(), verD.Round(time.Millisecond), rep.SourceKeys, rep.InSync(), verD.Seconds()/scanD.Seconds())
			if !rep.InSync() {
				return problem("verify found drift in a quiet benchmark: %+v", rep)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&rows, "rows", 1_000_000, "source rows")
	cmd.Flags().IntVar(&batch, "batch", 500, "republish keys per transaction")
	return cmd
}
