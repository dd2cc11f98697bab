package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ecst-io/ecst/capture"
)

func newCaptureCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "capture",
		Short: "Publish the entity's full state on every write to its source tables, whatever wrote it",
		Long: `Capture makes every write to an entity's source tables publish the entity's full
state: an UPDATE in psql, a migration's backfill, COPY, a service in another language.

ecst capture enable ENTITY installs, on entities.<name>.source.table and on each
table of entities.<name>.source.capture_from, statement-level triggers that record,
in the writing transaction, which keys changed: one marker per statement, however
many rows it touched. ecst relay resolves each marker: under the keys' locks it reads
their current state through the entity's source query and writes it to the outbox,
behind everything already there (a key whose row is gone becomes a tombstone; the
events carry the header ecst-capture: <marker id>). A TRUNCATE republishes every key
and tombstones the rest.

Services in any language can publish explicitly, in their own transaction, with no
Avro in the client: SELECT ecst.publish('customer', $1).`,
	}
	cmd.AddCommand(newCaptureEnableCmd(a), newCaptureDisableCmd(a), newCaptureStatusCmd(a))
	return cmd
}

func newCaptureEnableCmd(a *app) *cobra.Command {
	var dry bool
	cmd := &cobra.Command{
		Use:   "enable ENTITY",
		Short: "Install the entity's capture triggers (idempotent)",
		Long: `Installs the entity's capture in one transaction: per table, a trigger function and
four statement-level triggers (INSERT, UPDATE, DELETE with transition tables, and
TRUNCATE), recorded in ecst.capture_tables. Running it again replaces them, and
removes the capture of tables ecst.yaml no longer lists.

Refused before any DDL, with the fix: a table or key column that does not exist, a
table this role does not own (triggers need the owner), a source query that cannot
be read by key (SELECT * FROM (query) src WHERE src.key = ANY($1)).`,
		Example: `  ecst capture enable customer --dry-run   # print the DDL
  ecst capture enable customer`,
		Args: entityArg(a),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			e, err := cfg.Entity(args[0])
			if err != nil {
				return err
			}
			pool, err := connect(cmd.Context(), cfg.Database)
			if err != nil {
				return err
			}
			defer pool.Close()
			p, err := capture.Enable(cmd.Context(), pool, e, dry)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if dry {
				printDDL(out, p.DDL)
				return nil
			}
			for _, t := range p.Stale {
				fmt.Fprintf(out, "removed the capture of %s from %s (no longer in ecst.yaml)\n", e.Name, t.Name)
			}
			for _, t := range p.Tables {
				fmt.Fprintf(out, "capturing %s on %s (key %s)\n", e.Name, t.Name, t.Key)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&dry, "dry-run", false, "print the DDL; change nothing")
	return cmd
}

func newCaptureDisableCmd(a *app) *cobra.Command {
	var dry bool
	cmd := &cobra.Command{
		Use:   "disable ENTITY",
		Short: "Remove every object capture installed for the entity (idempotent)",
		Long: `Removes, in one transaction, every trigger and function ecst capture enable installed
for the entity, as ecst.capture_tables records them, whatever ecst.yaml says now.
Markers already written are still resolved by the relay.`,
		Example: `  ecst capture disable customer --dry-run
  ecst capture disable customer`,
		Args: entityArg(a),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			pool, err := connect(cmd.Context(), cfg.Database)
			if err != nil {
				return err
			}
			defer pool.Close()
			p, err := capture.Disable(cmd.Context(), pool, args[0], dry)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch {
			case dry:
				printDDL(out, p.DDL)
			case len(p.Stale) == 0:
				fmt.Fprintf(out, "%s has no capture installed\n", args[0])
			default:
				for _, t := range p.Stale {
					fmt.Fprintf(out, "removed the capture of %s from %s\n", args[0], t.Name)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&dry, "dry-run", false, "print the DDL; change nothing")
	return cmd
}

func printDDL(w io.Writer, ddl []string) {
	if len(ddl) == 0 {
		fmt.Fprintln(w, "-- nothing to do")
		return
	}
	fmt.Fprintln(w, "BEGIN;")
	for _, s := range ddl {
		fmt.Fprintln(w, s+";")
	}
	fmt.Fprintln(w, "COMMIT;")
}

func newCaptureStatusCmd(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show, per entity, whether capture is enabled, its triggers, and the markers waiting",
		Long: `Per entity: whether capture is installed, on which tables, whether each trigger and
function is present (a trigger someone dropped shows as missing), the tables ecst.yaml
lists that have no capture yet, and the markers the relay has not resolved yet.
Exits 1 when something installed is missing.`,
		Example: `  ecst capture status
  ecst capture status --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			pool, err := connect(cmd.Context(), cfg.Database)
			if err != nil {
				return err
			}
			defer pool.Close()
			st, err := capture.StatusOf(cmd.Context(), pool, cfg)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(st); err != nil {
					return err
				}
			} else {
				printCaptureStatus(out, st)
			}
			var broken []string
			for _, s := range st {
				if !s.Healthy() {
					broken = append(broken, s.Entity)
				}
			}
			if len(broken) > 0 {
				return fmt.Errorf("capture of %s is incomplete: run `ecst capture enable %s` to reinstall it", strings.Join(broken, ", "), broken[0])
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")
	return cmd
}

func printCaptureStatus(w io.Writer, st []capture.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ENTITY\tCAPTURE\tTABLE\tKEY\tTRIGGERS\tMARKERS PENDING")
	for _, s := range st {
		if !s.Enabled {
			fmt.Fprintf(tw, "%s\toff\t-\t-\t-\t%s\n", s.Entity, s.PendingText())
			continue
		}
		for _, t := range s.Tables {
			var missing []string
			for _, name := range slices.Sorted(maps.Keys(t.TriggersPresent)) {
				if !t.TriggersPresent[name] {
					missing = append(missing, name)
				}
			}
			if !t.FunctionPresent {
				missing = append(missing, t.Function)
			}
			trig := fmt.Sprintf("%d present", len(t.Triggers))
			if len(missing) > 0 {
				trig = "MISSING " + strings.Join(missing, ", ")
			}
			fmt.Fprintf(tw, "%s\ton\t%s\t%s\t%s\t%s\n", s.Entity, t.Name, t.Key, trig, s.PendingText())
		}
		for _, m := range s.Missing {
			fmt.Fprintf(tw, "%s\ton\t%s\t-\tNOT INSTALLED (in ecst.yaml)\t%s\n", s.Entity, m, s.PendingText())
		}
	}
	tw.Flush()
}
