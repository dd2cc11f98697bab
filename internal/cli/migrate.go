package cli

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/migrate"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/relay"
)

func newMigrateCmd(a *app) *cobra.Command {
	var status bool
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Create or upgrade the ecst schema (outbox, republish runs, consumer offsets)",
		Long: `Creates or upgrades the ecst schema in the database named by ECST_DATABASE_URL:
ecst.outbox (and its partitions), ecst.relay_cursors, ecst.republish_runs,
ecst.consumer_offsets, ecst.consumer_skipped and ecst.schema_migrations, which
records what has been applied.

With outbox.transport: wal it also sets up the WAL transport: it checks that
the server runs wal_level = logical (and says how to set it if not), creates the
publication ecst_messages and the replication slot ecst_<service>, records the
slot in ecst.wal_slots, and moves a database that has nothing pending in the
outbox table to the WAL transport (one with rows pending needs
'ecst outbox switch wal', which waits for the table relay to publish them).

Each migration runs in its own transaction together with the row that records
it, so a failed migration leaves nothing half-applied. Running migrate again is
a no-op; concurrent runs (several replicas starting at once) wait for each
other on an advisory lock and apply each migration exactly once.

With --status nothing is changed: it lists applied and pending migrations and
exits 1 when any is pending, so scripts can check before they deploy.`,
		Example: `  ECST_DATABASE_URL=postgres://app@localhost/app ecst migrate
  ecst migrate --status`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cfg, pool, err := a.database(ctx)
			if err != nil {
				return err
			}
			defer pool.Close()
			out := cmd.OutOrStdout()
			if status {
				st, err := migrate.Status(ctx, pool)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "VERSION\tNAME\tSTATUS\tAPPLIED AT")
				pending := 0
				for _, s := range st {
					state, at := "pending", "-"
					if s.Applied() {
						state, at = "applied", s.AppliedAt.UTC().Format(time.RFC3339)
					} else {
						pending++
					}
					fmt.Fprintf(tw, "%03d\t%s\t%s\t%s\n", s.Version, s.Name, state, at)
				}
				tw.Flush()
				if pending > 0 {
					return problem("%d migration(s) pending: run `ecst migrate`", pending)
				}
				return nil
			}
			applied, err := migrate.Up(ctx, pool)
			for _, m := range applied {
				fmt.Fprintf(out, "applied %03d_%s\n", m.Version, m.Name)
			}
			if err != nil {
				return err
			}
			all, _ := migrate.All()
			if len(applied) == 0 {
				fmt.Fprintf(out, "ecst schema is up to date (version %03d)\n", all[len(all)-1].Version)
			} else {
				fmt.Fprintf(out, "ecst schema migrated to version %03d\n", all[len(all)-1].Version)
			}
			return migrateTransport(ctx, cmd, cfg, pool)
		},
	}
	cmd.Flags().BoolVar(&status, "status", false, "list applied and pending migrations; change nothing (exit 1 if any is pending)")
	return cmd
}

// migrateTransport sets up the transport ecst.yaml names: for wal, the
// slot, and the switch of a database with nothing pending.
func migrateTransport(ctx context.Context, cmd *cobra.Command, cfg *config.Config, pool *pgxpool.Pool) error {
	out := cmd.OutOrStdout()
	want := outbox.Transport(cfg.Outbox.Transport)
	db, err := outbox.DatabaseTransport(ctx, pool)
	if err != nil {
		return err
	}
	slot := relay.SlotName(cfg.Service)
	if want == outbox.TransportTable {
		if db == outbox.TransportWAL {
			fmt.Fprintf(cmd.ErrOrStderr(), "warning: the database runs the WAL transport and outbox.transport is table: writers and relays on table will fail; "+
				"set outbox.transport: wal, or move the database with `ecst outbox switch table`\n")
		}
		return nil
	}
	if cfg.Service == "" {
		return errors.New("service is required with outbox.transport: wal: it names the replication slot (service in ecst.yaml or ECST_SERVICE)")
	}
	if db == outbox.TransportWAL {
		created, err := relay.EnsureSlot(ctx, pool, cfg.Service)
		if err != nil {
			return err
		}
		if created {
			fmt.Fprintf(out, "created replication slot %s\n", slot)
		}
		fmt.Fprintf(out, "the database runs the WAL transport (slot %s)\n", slot)
		return nil
	}
	if err := relay.CheckWALLevel(ctx, pool); err != nil {
		return err
	}
	pending, err := relay.TablePending(ctx, pool)
	if err != nil {
		return err
	}
	if pending {
		return problem("outbox.transport is wal, and the outbox table holds rows the table relay has not published: run `ecst outbox switch wal`, which waits for them")
	}
	res, err := relay.Switch(ctx, pool, outbox.TransportWAL, relay.SwitchOptions{Service: cfg.Service})
	if err != nil {
		return err
	}
	if res.SlotCreated {
		fmt.Fprintf(out, "created replication slot %s\n", slot)
	}
	fmt.Fprintf(out, "the database runs the WAL transport (slot %s)\n", slot)
	return nil
}
