package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/ecst-io/ecst/migrate"
	"github.com/spf13/cobra"
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
			_, pool, err := a.database(ctx)
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
			return nil
		},
	}
	cmd.Flags().BoolVar(&status, "status", false, "list applied and pending migrations; change nothing (exit 1 if any is pending)")
	return cmd
}
