package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/consumer"
	"github.com/ecst-io/ecst/internal/pgident"
	"github.com/ecst-io/ecst/schemas"
)

// mirrorConsumer names a mirror's consumer: its offsets, skipped records.
// It is built from the table's canonical spelling, so that BookMirror and
// bookmirror, which are the same table, are the same consumer.
func mirrorConsumer(table pgident.Name) string { return "mirror:" + table.String() }

// tableNameHelp says how a user writes a table name, for flag help.
const tableNameHelp = `written as in SQL: unquoted folds to lower case, '"Book Mirror"' keeps capitals and spaces, schema.table qualifies it`

// parseTable reads a table name given with flag.
func parseTable(flag, s string) (pgident.Name, error) {
	n, err := pgident.Parse(s)
	if err != nil {
		return pgident.Name{}, fmt.Errorf("%s: %w", flag, err)
	}
	return n, nil
}

// mirrorSetup is what mirror and rebuild share.
type mirrorSetup struct {
	*recoveryClients
	cfg    consumer.Config[map[string]any]
	store  *consumer.Postgres[map[string]any]
	entity *config.Entity
}

func (a *app) mirrorSetup(ctx context.Context, cfg *config.Config, entity *config.Entity, table pgident.Name, poison, group string) (*mirrorSetup, error) {
	schema, err := schemas.Parse(entity.SchemaText)
	if err != nil {
		return nil, err
	}
	mirror, err := consumer.NewMirror(schema)
	if err != nil {
		return nil, err
	}
	c, err := openRecovery(ctx, cfg, false)
	if err != nil {
		return nil, err
	}
	if _, err := c.pool.Exec(ctx, mirror.CreateTable(table.Quoted())); err != nil {
		c.close()
		return nil, fmt.Errorf("create table %s: %w", table, err)
	}
	store := &consumer.Postgres[map[string]any]{Pool: c.pool, Table: table.Quoted(), Projection: mirror}
	return &mirrorSetup{
		recoveryClients: c,
		cfg: consumer.Config[map[string]any]{
			Name: mirrorConsumer(table), Topic: entity.Topic, KafkaOpts: c.kopts, Registry: c.reg,
			Store: store, Poison: consumer.PoisonPolicy(poison), Logger: a.logger(), Group: group,
		},
		store: store, entity: entity,
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

--table is written as in SQL: an unquoted name folds to lower case
(--table BookMirror is the table bookmirror), a double-quoted one is kept as
it is (--table '"Book Mirror"'), and schema.table puts it in a schema
(--table 'analytics."Book Mirror"'). verify --mirror and rebuild take the
same spelling.

With --once it catches up to the end of the topic as it was at start, prints
the records it applied and the table's rows, and exits 0. Interrupted before
that, or stopped by an error that retrying cannot fix (a missing table or
column, a privilege or constraint refused), it says so and exits 2; errors
that may pass (a lost connection) are retried. Without --once it keeps
following, serving /metrics and /readyz.`,
		Example: `  ecst mirror customer --once
  ecst mirror customer --table billing.customers --poison skip
  ecst mirror customer --table 'analytics."Customer Mirror"' --once`,
		Args: entityArg(a),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, entity, err := a.loadEntity(args[0])
			if err != nil {
				return err
			}
			if table == "" {
				table = entity.Name + "_mirror"
			}
			name, err := parseTable("--table", table)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if once && group != "" {
				return errors.New("--once and --group do not go together: a group member catches up on the partitions it is given, not the topic")
			}
			s, err := a.mirrorSetup(ctx, cfg, entity, name, poison, group)
			if err != nil {
				return err
			}
			defer s.close()
			promReg := prometheus.NewRegistry()
			promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			s.cfg.Registerer = promReg
			var p *applyProgress
			if once {
				p = newApplyProgress(cmd.ErrOrStderr(), "mirror "+name.String())
				s.cfg.Progress = p.update
			}
			c, err := consumer.New(s.cfg)
			if err != nil {
				return err
			}
			if once {
				return catchUp(ctx, cmd.OutOrStdout(), c, s, name, p)
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
	cmd.Flags().StringVar(&table, "table", "", "table to mirror into (default <entity>_mirror), "+tableNameHelp)
	cmd.Flags().StringVar(&poison, "poison", "halt", "what to do with a record that cannot be applied: halt, skip (kept in ecst.consumer_skipped) or dead-letter (<topic>.dlq)")
	cmd.Flags().BoolVar(&once, "once", false, "catch up to the end of the topic, then exit 0")
	cmd.Flags().StringVar(&group, "group", "", "share the table among the instances of this consumer group, each applying its own partitions (partitioned mode)")
	return cmd
}

// catchUp is mirror --once: it says what it applied, and never that it
// caught up when it did not.
func catchUp(ctx context.Context, out io.Writer, c *consumer.Consumer[map[string]any], s *mirrorSetup, name pgident.Name, p *applyProgress) error {
	err := c.CatchUp(ctx)
	p.finish()
	topic := s.entity.Topic
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s has not caught up with %s: interrupted with %s; run the same command again to go on from there", name, topic, p.interrupted())
		}
		return fmt.Errorf("%s has not caught up with %s (%s): %w", name, topic, p.summary(), err)
	}
	n, err := countRows(ctx, s.pool, name)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s caught up with %s: %d rows (%s)\n", name, topic, n, p.summary())
	return nil
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

CONSUMER is a mirror's consumer name, mirror:<table> (they are the consumers
in ecst.consumer_offsets), or just the table, written as 'ecst mirror --table'
takes it: unquoted names fold to lower case, double quotes keep a name as it
is, schema.table qualifies it.`,
		Example: `  ecst rebuild mirror:customer_mirror
  ecst rebuild 'analytics."Customer Mirror"'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := parseTable("CONSUMER", strings.TrimPrefix(args[0], "mirror:"))
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			cfg, pool, err := a.database(ctx)
			if err != nil {
				return err
			}
			var topic string
			err = pool.QueryRow(ctx, "SELECT topic FROM ecst.consumer_offsets WHERE consumer = $1 LIMIT 1", mirrorConsumer(name)).Scan(&topic)
			pool.Close()
			if err != nil {
				return fmt.Errorf("consumer %s has no offsets: is it a mirror that has run? (%w)", mirrorConsumer(name), err)
			}
			var entity *config.Entity
			for _, n := range cfg.EntityNames() {
				if cfg.Entities[n].Topic == topic {
					entity = cfg.Entities[n]
				}
			}
			if entity == nil {
				return fmt.Errorf("no entity in the config has topic %s, which %s mirrors", topic, mirrorConsumer(name))
			}
			s, err := a.mirrorSetup(ctx, cfg, entity, name, poison, "")
			if err != nil {
				return err
			}
			defer s.close()
			p := newApplyProgress(cmd.ErrOrStderr(), "rebuild "+name.String())
			s.cfg.Progress = p.update
			err = consumer.Rebuild(ctx, s.cfg, s.store)
			p.finish()
			if err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("rebuild of %s interrupted with %s; the live table is untouched: %w", name, p.interrupted(), err)
				}
				return err
			}
			n, err := countRows(ctx, s.pool, name)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s rebuilt from %s and swapped in: %d rows (%s)\n", name, topic, n, p.summary())
			return nil
		},
	}
	cmd.Flags().StringVar(&poison, "poison", "halt", "what to do with a record that cannot be applied: halt, skip or dead-letter")
	return cmd
}

func countRows(ctx context.Context, pool *pgxpool.Pool, table pgident.Name) (int64, error) {
	var n int64
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+table.Quoted()).Scan(&n); err != nil {
		return 0, fmt.Errorf("count the rows of %s: %w", table, err)
	}
	return n, nil
}
