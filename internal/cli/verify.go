package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ecst-io/ecst/verify"
)

func newVerifyCmd(a *app) *cobra.Command {
	var (
		o       verify.Options
		jsonOut bool
	)
	cmd := &cobra.Command{
		Use:   "verify ENTITY",
		Short: "Find drift between the source tables, the topic and a read model",
		Long: `Compares, key by key, the entity's source of truth (entities.<name>.source), the latest
record of every key on its topic and, with --mirror, an 'ecst mirror' table, by a
content hash of each state in the canonical Avro encoding under the entity's schema.

  missing  the source has the key; the topic does not (or its latest record is a tombstone)
  extra    the topic has the key alive; the source does not
  stale    both have it, with different content (a poison record counts as stale)

For the mirror the topic is the reference: missing, extra and stale compare the
table with the topic; keys whose latest record the mirror has not consumed yet
are counted as lagging, not drift.

Nothing in flight is drift: keys with rows still in the outbox are counted apart,
and a key that changed while it was compared is checked again (up to three
times) before it is reported. A few stale keys get a field-level diff.

--repair republishes exactly the drifted keys (tombstones for the extra ones),
waits for the relay (and the mirror) to take them (--wait), and verifies again.
The relay, and the mirror when given, must be running.

Exit codes: 0 in sync; 1 drift found (after --repair: drift left); 2 error.`,
		Example: `  ecst verify customer
  ecst verify customer --mirror customer_mirror --json | jq .stale
  ecst verify customer --repair`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			entity, err := cfg.Entity(args[0])
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			c, err := openRecovery(ctx, cfg, o.Repair)
			if err != nil {
				return err
			}
			defer c.close()
			vc := verify.Config{Pool: c.pool, Registry: c.reg, Entity: entity, Kafka: c.kopts, Logger: a.logger(), Publisher: c.pub}
			p := newProgress(cmd.ErrOrStderr(), "verify "+entity.Name)
			o.Progress = func(phase string, n int64) {
				p.mu.Lock()
				p.what = "verify " + entity.Name + ": " + phase
				p.mu.Unlock()
				p.update(n, 0)
			}
			rep, err := verify.Run(ctx, vc, o)
			p.finish()
			if err != nil {
				return err
			}
			if jsonOut {
				if err := json.NewEncoder(cmd.OutOrStdout()).Encode(rep); err != nil {
					return err
				}
			} else {
				printReport(cmd.OutOrStdout(), rep)
			}
			if !rep.InSync() {
				return problem("%s: drift found", entity.Name)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Mirror, "mirror", "", "also compare this 'ecst mirror' table with the topic")
	f.BoolVar(&o.Repair, "repair", false, "republish the drifted keys, wait for them, verify again")
	f.DurationVar(&o.Wait, "wait", 2*time.Minute, "how long --repair waits for the relay and the mirror")
	f.IntVar(&o.Samples, "samples", 10, "sample keys listed per kind of drift")
	f.BoolVar(&jsonOut, "json", false, "print one JSON object (missing, extra, stale counts, samples, diffs)")
	return cmd
}

// printReport writes the report in one Write, so that a line-prefixing
// writer sees whole lines.
func printReport(w io.Writer, r *verify.Report) {
	var b strings.Builder
	writeReport(&b, r)
	_, _ = io.WriteString(w, b.String())
}

func writeReport(w io.Writer, r *verify.Report) {
	fmt.Fprintf(w, "%s: source %d keys, topic %s %d keys alive, %d in flight (in the outbox)\n", r.Entity, r.SourceKeys, r.Topic, r.TopicKeys, r.InFlight)
	printKinds(w, r.Missing, r.Extra, r.Stale, r.Samples, "source", "topic")
	printDiffs(w, r.Diffs, "source", "topic")
	if m := r.Mirror; m != nil {
		fmt.Fprintf(w, "mirror %s: %d rows, %d keys lagging (not consumed yet)\n", m.Table, m.Rows, m.Lagging)
		printKinds(w, m.Missing, m.Extra, m.Stale, m.Samples, "topic", "mirror")
		printDiffs(w, m.Diffs, "topic", "mirror")
	}
	if rr := r.Repair; rr != nil {
		fmt.Fprintf(w, "repair: run %d republished %d keys and tombstoned %d; verified again:\n", rr.RunID, rr.Republished, rr.Tombstoned)
		if rr.After != nil {
			var b strings.Builder
			writeReport(&b, rr.After)
			fmt.Fprint(w, "  "+strings.ReplaceAll(strings.TrimSuffix(b.String(), "\n"), "\n", "\n  ")+"\n")
		}
		return
	}
	if r.InSync() {
		fmt.Fprintf(w, "in sync (%s)\n", r.Elapsed)
		return
	}
	fmt.Fprintf(w, "drift found (%s). Repair it with: ecst verify %s --repair   (or ecst republish %s --all --tombstone-orphans)\n", r.Elapsed, r.Entity, r.Entity)
}

func printKinds(w io.Writer, missing, extra, stale int64, s verify.Sample, want, got string) {
	line := func(name string, n int64, what string, keys []string) {
		fmt.Fprintf(w, "  %-7s %d", name, n)
		if n > 0 {
			fmt.Fprintf(w, "  (%s): %s", what, strings.Join(keys, ", "))
			if int64(len(keys)) < n {
				fmt.Fprint(w, ", …")
			}
		}
		fmt.Fprintln(w)
	}
	line("missing", missing, "in the "+want+", not in the "+got, s.Missing)
	line("extra", extra, "in the "+got+", not in the "+want, s.Extra)
	line("stale", stale, "different content", s.Stale)
}

func printDiffs(w io.Writer, ds []verify.Diff, want, got string) {
	for _, d := range ds {
		for _, f := range d.Fields {
			a, _ := json.Marshal(f.Want)
			b, _ := json.Marshal(f.Got)
			fmt.Fprintf(w, "    %s.%s: %s %s, %s %s\n", d.Key, f.Field, want, a, got, b)
		}
	}
}
