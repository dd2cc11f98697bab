package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/ecst-io/ecst/verify"
)

func newVerifyCmd(a *app) *cobra.Command {
	var (
		o       verify.Options
		jsonOut bool
		every   time.Duration
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

On drift it prints the commands that repair it, ready to run.

--repair republishes exactly the drifted keys (tombstones for the extra ones),
waits for the relay (and the mirror) to take them (--wait), and verifies again.
The relay, and the mirror when given, must be running: with no relay running
(no session holds a relay leader lock) it writes nothing and says so within
seconds. While it waits it says what for: the outbox rows the relay has left
to publish, then the offsets the mirror has left to consume.

Every run is recorded in ecst.verify_runs (when, the verdict, the counts,
the samples and field diffs), so that the last one of each entity outlives
the process; a run that cannot be recorded (the schema predates the table:
run 'ecst migrate') says so in a warning and stands.

--every runs continuously: each ENTITY (several may be given) is verified,
then again --every after that round started, until SIGINT or SIGTERM, which
stop it between runs or during one (the run in flight is dropped, unrecorded)
and exit 0. It serves /metrics and /healthz on verify.metrics_addr
(--verify-metrics-addr, default :9465): ecst_verify_drift_keys{entity,kind}
as the last run left them, ecst_verify_last_success_timestamp_seconds{entity},
ecst_verify_runs_total{entity,result}, ecst_verify_every_seconds{entity}, and
the state of each entity's latest republish run (ecst_republish_*). A run
that fails is logged, recorded and counted, and the next one runs on time.

Exit codes: 0 in sync; 1 drift found (after --repair: drift left); 2 error
(a repair that could not finish included). With --every: 0 once stopped by a
signal, 2 when it cannot start.`,
		Example: `  ecst verify customer
  ecst verify customer --mirror customer_mirror --json | jq .stale
  ecst verify customer --repair
  ecst verify customer order --every 1h --verify-metrics-addr :9465`,
		Args: func(cmd *cobra.Command, args []string) error {
			if every > 0 && len(args) > 0 {
				return nil
			}
			err := entityArg(a)(cmd, args)
			if err != nil && len(args) > 1 {
				return fmt.Errorf("%w\nwith --every, several entities are verified in turn", err)
			}
			return err
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			if every < 0 {
				return fmt.Errorf("--every: %s is negative; give the interval between verifications, such as 1h", every)
			}
			if every > 0 {
				return a.verifyEvery(cmd, cfg, args, o, every, jsonOut)
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
			w := verifyWatch{a: a, entity: entity.Name, topic: entity.Topic, mirror: o.Mirror}
			w.status = newStatus(cmd.ErrOrStderr(), w.line)
			o.Progress = w.progress
			rep, err := verify.Run(ctx, vc, o)
			w.status.finish()
			if rep != nil {
				if jsonOut {
					if err := json.NewEncoder(cmd.OutOrStdout()).Encode(rep); err != nil {
						return err
					}
				} else {
					hint := a.repairHint
					if o.Repair {
						hint = nil // the repair ran; what it says is in err
					}
					printReport(cmd.OutOrStdout(), rep, hint)
				}
			}
			if err != nil {
				return inFlags(err, entity.Name)
			}
			if !rep.InSync() {
				return problem("%s: drift found", entity.Name)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Mirror, "mirror", "", "also compare this 'ecst mirror' table with the topic, named as 'ecst mirror --table' takes it")
	f.BoolVar(&o.Repair, "repair", false, "republish the drifted keys, wait for them, verify again")
	f.DurationVar(&o.Wait, "wait", 2*time.Minute, "how long --repair waits for the relay and the mirror")
	f.IntVar(&o.Samples, "samples", 10, "sample keys listed per kind of drift")
	f.BoolVar(&jsonOut, "json", false, "print one JSON object (missing, extra, stale counts, samples, diffs); with --every, one per run")
	f.DurationVar(&every, "every", 0, "verify continuously, a round of the ENTITY arguments this often (1h, say), serving /metrics on verify.metrics_addr")
	return cmd
}

// verifyWatch follows a verification's progress for a person: counts of
// what was read while it reads, and what a repair waits for, said as soon
// as it starts waiting.
type verifyWatch struct {
	a                     *app
	entity, topic, mirror string
	status                *status

	mu    sync.Mutex
	phase verify.Phase
	done  map[verify.Phase]int64
	total int64
}

func (w *verifyWatch) progress(p verify.Progress) {
	w.mu.Lock()
	if w.done == nil {
		w.done = map[verify.Phase]int64{}
	}
	started := p.Phase != w.phase && p.Phase != verify.PhaseSource && p.Phase != verify.PhaseTopic && p.Phase != verify.PhaseMirror
	w.phase, w.done[p.Phase], w.total = p.Phase, p.Done, p.Total
	w.mu.Unlock()
	if started {
		switch p.Phase {
		case verify.PhaseRelay:
			w.status.say("repair: waiting for the relay to publish %d outbox rows to %s", p.Total, w.topic)
		case verify.PhaseCatchUp:
			w.status.say("repair: waiting for mirror %s to consume %d offsets of %s (`%s` must be running)",
				w.mirror, p.Total, w.topic, w.a.command("mirror", w.entity, "--table", w.mirror))
		}
	}
	w.status.tick()
}

func (w *verifyWatch) line() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch w.phase {
	case verify.PhaseRepublish:
		return fmt.Sprintf("repair: %d/%d drifted keys written to the outbox", w.done[w.phase], w.total)
	case verify.PhaseRelay:
		return fmt.Sprintf("repair: the relay has published %d/%d outbox rows", w.done[w.phase], w.total)
	case verify.PhaseCatchUp:
		return fmt.Sprintf("repair: mirror %s has consumed %d/%d offsets", w.mirror, w.done[w.phase], w.total)
	}
	l := fmt.Sprintf("verify %s: read %d source keys, %d topic records", w.entity, w.done[verify.PhaseSource], w.done[verify.PhaseTopic])
	if w.mirror != "" {
		l += fmt.Sprintf(", %d mirror rows", w.done[verify.PhaseMirror])
	}
	return l
}

// printReport writes the report in one Write, so that a line-prefixing
// writer sees whole lines. hint, if set, says how to repair the drift.
func printReport(w io.Writer, r *verify.Report, hint func(*verify.Report) string) {
	var b strings.Builder
	writeReport(&b, r)
	if !r.InSync() && hint != nil && r.Repair == nil {
		b.WriteString(hint(r))
	}
	_, _ = io.WriteString(w, b.String())
}

func writeReport(w io.Writer, r *verify.Report) {
	fmt.Fprintf(w, "%s: source %d keys, topic %s %d keys alive in %d records, %d in flight (in the outbox)\n",
		r.Entity, r.SourceKeys, r.Topic, r.TopicKeys, r.TopicRecords, r.InFlight)
	printKinds(w, r.Missing, r.Extra, r.Stale, r.Samples, "source", "topic")
	printDiffs(w, r.Diffs, "source", "topic")
	if m := r.Mirror; m != nil {
		fmt.Fprintf(w, "mirror %s: %d rows, %d keys lagging (not consumed yet)\n", m.Table, m.Rows, m.Lagging)
		printKinds(w, m.Missing, m.Extra, m.Stale, m.Samples, "topic", "mirror")
		printDiffs(w, m.Diffs, "topic", "mirror")
	}
	if rr := r.Repair; rr != nil {
		fmt.Fprintf(w, "repair: run %d republished %d keys and tombstoned %d", rr.RunID, rr.Republished, rr.Tombstoned)
		if rr.After == nil {
			fmt.Fprintln(w, "; it did not finish (see the error)")
			return
		}
		fmt.Fprintln(w, "; verified again:")
		var b strings.Builder
		writeReport(&b, rr.After)
		fmt.Fprint(w, "  "+strings.ReplaceAll(strings.TrimSuffix(b.String(), "\n"), "\n", "\n  ")+"\n")
		return
	}
	fmt.Fprintln(w, summary(r))
}

// summary is a report's last line: the verdict, with the totals.
func summary(r *verify.Report) string {
	totals := fmt.Sprintf("source %d keys, topic %d keys alive in %d records", r.SourceKeys, r.TopicKeys, r.TopicRecords)
	if m := r.Mirror; m != nil {
		totals += fmt.Sprintf(", mirror %d rows", m.Rows)
	}
	totals += fmt.Sprintf(", %d in flight; %s", r.InFlight, r.Elapsed)
	if r.InSync() {
		return "in sync: " + totals
	}
	var drift []string
	if k := kinds(r.Missing, r.Extra, r.Stale); k != "" {
		drift = append(drift, k+" on the topic")
	}
	if m := r.Mirror; m != nil {
		if k := kinds(m.Missing, m.Extra, m.Stale); k != "" {
			drift = append(drift, k+" in mirror "+m.Table)
		}
	}
	return "drift found: " + strings.Join(drift, "; ") + " (of " + totals + ")"
}

func kinds(missing, extra, stale int64) string {
	var out []string
	for _, k := range []struct {
		n    int64
		name string
	}{{missing, "missing"}, {extra, "extra"}, {stale, "stale"}} {
		if k.n > 0 {
			out = append(out, fmt.Sprintf("%d %s", k.n, k.name))
		}
	}
	return strings.Join(out, ", ")
}

// repairHint says which commands repair r's drift, each as it runs: the
// repair needs the mirror too when the mirror drifted, and a mirror that
// alone drifted can also be rebuilt from the topic.
func (a *app) repairHint(r *verify.Report) string {
	topicDrift := r.Missing+r.Extra+r.Stale > 0
	args := []string{"verify", r.Entity}
	needs := "`" + a.command("relay") + "` must be running"
	if m := r.Mirror; m != nil {
		args = append(args, "--mirror", m.Table)
		needs = "`" + a.command("relay") + "` and `" + a.command("mirror", r.Entity, "--table", m.Table) + "` must be running"
	}
	b := "Repair it with: " + a.command(append(args, "--repair")...) + "\n" +
		"  (it republishes exactly the drifted keys and waits for them; " + needs + ")\n"
	switch {
	case !topicDrift:
		b += "or rebuild the mirror from the topic: " + a.command("rebuild", "mirror:"+r.Mirror.Table) + "\n"
	case r.Mirror == nil || r.Mirror.Missing+r.Mirror.Extra+r.Mirror.Stale == 0:
		b += "or republish every key: " + a.command("republish", r.Entity, "--all", "--tombstone-orphans") + "\n"
	}
	return b
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
