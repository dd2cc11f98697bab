package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/config/kafkaopts"
	"github.com/ecst-io/ecst/consumer"
	"github.com/ecst-io/ecst/schemas"
)

// mirrorConsumer names a mirror's consumer: its offsets, skipped records.
func mirrorConsumer(table string) string { return "mirror:" + table }

// mirrorSetup is what mirror and rebuild share.
type mirrorSetup struct {
	cfg    consumer.Config[map[string]any]
	store  *consumer.Postgres[map[string]any]
	pool   *pgxpool.Pool
	reg    *schemas.Registry
	entity *config.Entity
}

func (s *mirrorSetup) close() {
	s.pool.Close()
	s.reg.Close()
}

func (a *app) mirrorSetup(ctx context.Context, cfg *config.Config, entity *config.Entity, table, poison, group string) (*mirrorSetup, error) {
	kopts, err := kafkaopts.Client(cfg.Kafka)
	if err != nil {
		return nil, err
	}
	reg, err := schemas.NewRegistry(cfg.Registry)
	if err != nil {
		return nil, err
	}
	schema, err := schemas.Parse(entity.SchemaText)
	if err != nil {
		reg.Close()
		return nil, err
	}
	mirror, err := consumer.NewMirror(schema)
	if err != nil {
		reg.Close()
		return nil, err
	}
	pool, err := connect(ctx, cfg.Database)
	if err != nil {
		reg.Close()
		return nil, err
	}
	if _, err := pool.Exec(ctx, mirror.CreateTable(table)); err != nil {
		pool.Close()
		reg.Close()
		return nil, fmt.Errorf("create table %s: %w", table, err)
	}
	store := &consumer.Postgres[map[string]any]{Pool: pool, Table: table, Projection: mirror}
	return &mirrorSetup{
		cfg: consumer.Config[map[string]any]{
			Name: mirrorConsumer(table), Topic: entity.Topic, KafkaOpts: kopts, Registry: reg,
			Store: store, Poison: consumer.PoisonPolicy(poison), Logger: a.logger(), Group: group,
		},
		store: store, pool: pool, reg: reg, entity: entity,
	}, nil
}

func newMirrorCmd(a *app) *cobra.Command {
	var table, poison, group string
	var once bool
	cmd := &cobra.Command{
		Use:   "mirror ENTITY",
		Short: "Mirror an entity's state topic into a PostgreSQL table, with no code",
		Long: `Keeps a table equal to the latest state of every key on the entity's topic: a read
model with no code. The table (default <entity>_mirror) is created from the
entity's Avro schema: a _key text primary key, and a column per field with a
proper PostgreSQL type (string text, int integer, long bigint, double double
precision, boolean, bytes bytea, enum text, timestamp-millis/micros timestamptz,
date, time, uuid, decimal numeric(p,s); a nullable union is the nullable
column; records, arrays, maps and other unions are jsonb).

Each batch's upserts and deletes commit in one transaction with the mirror's
offsets (consumer mirror:<table> in ecst.consumer_offsets), so a crash never
loses or repeats an effect, and a restart resumes where it stopped. A new
compatible schema version adds columns; nothing is dropped.

With --once it catches up to the end of the topic as it was at start and
exits 0; without, it keeps following, serving /metrics and /readyz.`,
		Example: `  ecst mirror customer --once
  ecst mirror customer --table billing.customers --poison skip`,
		Args: entityArg(a),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			entity, err := cfg.Entity(args[0])
			if err != nil {
				return err
			}
			if table == "" {
				table = entity.Name + "_mirror"
			}
			ctx := cmd.Context()
			if once && group != "" {
				return errors.New("--once and --group do not go together: a group member catches up on the partitions it is given, not the topic")
			}
			s, err := a.mirrorSetup(ctx, cfg, entity, table, poison, group)
			if err != nil {
				return err
			}
			defer s.close()
			promReg := prometheus.NewRegistry()
			promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			s.cfg.Registerer = promReg
			var p *progress
			if once {
				p = newProgress(cmd.ErrOrStderr(), "mirror "+table)
				s.cfg.Progress = p.update
			}
			c, err := consumer.New(s.cfg)
			if err != nil {
				return err
			}
			if once {
				if err := c.CatchUp(ctx); err != nil {
					return err
				}
				p.finish()
				var n int64
				_ = s.pool.QueryRow(ctx, "SELECT count(*) FROM "+quoteIdent(table)).Scan(&n)
				fmt.Fprintf(cmd.OutOrStdout(), "%s caught up with %s: %d rows\n", table, entity.Topic, n)
				return nil
			}
			if cfg.Relay.MetricsAddr != "" {
				stop, err := serveOps(ctx, cfg.Relay.MetricsAddr, promReg, c.Ready, noSlot)
				if err != nil {
					return err
				}
				defer stop()
			}
			return c.Run(ctx)
		},
	}
	cmd.Flags().StringVar(&table, "table", "", "table to mirror into, optionally schema-qualified (default <entity>_mirror)")
	cmd.Flags().StringVar(&poison, "poison", "halt", "what to do with a record that cannot be applied: halt, skip (kept in ecst.consumer_skipped) or dead-letter (<topic>.dlq)")
	cmd.Flags().BoolVar(&once, "once", false, "catch up to the end of the topic, then exit 0")
	cmd.Flags().StringVar(&group, "group", "", "share the table among the instances of this consumer group, each applying its own partitions (partitioned mode)")
	return cmd
}

func newRebuildCmd(a *app) *cobra.Command {
	var poison string
	cmd := &cobra.Command{
		Use:   "rebuild CONSUMER",
		Short: "Rebuild a mirror from offset 0 into a shadow table, then swap it in",
		Long: `Replays the consumer's topic from offset 0 into a shadow table (<table>` + consumer.RebuildSuffix + `)
and swaps it in, together with its offsets, in one transaction. The live table
keeps serving throughout: readers see the old model or the new one, never a
half-built one; a running 'ecst mirror' notices the swap and follows on from
the new table. Progress is shown while it runs.

CONSUMER is a mirror's consumer name, mirror:<table> (ecst mirror prints it;
they are the consumers in ecst.consumer_offsets), or just the table.`,
		Example: `  ecst rebuild mirror:customer_mirror`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			table := strings.TrimPrefix(args[0], "mirror:")
			ctx := cmd.Context()
			pool, err := connect(ctx, cfg.Database)
			if err != nil {
				return err
			}
			var topic string
			err = pool.QueryRow(ctx, "SELECT topic FROM ecst.consumer_offsets WHERE consumer = $1 LIMIT 1", mirrorConsumer(table)).Scan(&topic)
			pool.Close()
			if err != nil {
				return fmt.Errorf("consumer %s has no offsets: is it a mirror that has run? (%w)", mirrorConsumer(table), err)
			}
			var entity *config.Entity
			for _, n := range cfg.EntityNames() {
				if cfg.Entities[n].Topic == topic {
					entity = cfg.Entities[n]
				}
			}
			if entity == nil {
				return fmt.Errorf("no entity in the config has topic %s, which %s mirrors", topic, mirrorConsumer(table))
			}
			s, err := a.mirrorSetup(ctx, cfg, entity, table, poison, "")
			if err != nil {
				return err
			}
			defer s.close()
			p := newProgress(cmd.ErrOrStderr(), "rebuild "+table)
			s.cfg.Progress = p.update
			if err := consumer.Rebuild(ctx, s.cfg, s.store); err != nil {
				if errors.Is(err, context.Canceled) {
					return fmt.Errorf("rebuild interrupted; the live table is untouched: %w", err)
				}
				return err
			}
			p.finish()
			var n int64
			_ = s.pool.QueryRow(ctx, "SELECT count(*) FROM "+quoteIdent(table)).Scan(&n)
			fmt.Fprintf(cmd.OutOrStdout(), "%s rebuilt from %s and swapped in: %d rows\n", table, topic, n)
			return nil
		},
	}
	cmd.Flags().StringVar(&poison, "poison", "halt", "what to do with a record that cannot be applied: halt, skip or dead-letter")
	return cmd
}

func quoteIdent(t string) string {
	parts := strings.Split(t, ".")
	for i, p := range parts {
		parts[i] = `"` + strings.ReplaceAll(p, `"`, `""`) + `"`
	}
	return strings.Join(parts, ".")
}
