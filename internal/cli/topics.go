package cli

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/config/kafkaopts"
	"github.com/ecst-io/ecst/internal/topics"
)

func newTopicsCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "topics", Short: "Manage the entities' compacted topics"}
	var o topicsApplyOptions
	apply := &cobra.Command{
		Use:   "apply",
		Short: "Create each entity's compacted topic; report and fix config drift",
		Long: `Creates each entity's topic from ecst.yaml (partitions, replication_factor and
topic configs) and compares existing topics with what ecst.yaml wants.

Every state topic gets these configs unless entities.<name>.topic_config says
otherwise:
  cleanup.policy=compact          keep the latest record per key
  min.compaction.lag.ms=0         compact as soon as the cleaner may
  delete.retention.ms=604800000   tombstones survive 7 days after compaction:
                                  a replay slower than this can miss a deletion
  segment.ms=86400000             roll daily; the active segment is never compacted
  max.message.bytes=1048588       Kafka's default, stated so drift shows

Drift on an existing topic is printed as a table and exits 1; --fix aligns the
configs. A different partition count is never changed: it would move keys to
other partitions and break per-key order.

Exit codes: 0 nothing left to do; 1 drift found (without --fix), or a refused
change; 2 usage, config or connection error.`,
		Example: `  ecst topics apply --dry-run   # show what would change
  ecst topics apply             # create missing topics, report drift
  ecst topics apply --fix       # ... and align drifted configs`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.topicsApply(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	apply.Flags().BoolVar(&o.fix, "fix", false, "align drifted topic configs with ecst.yaml")
	apply.Flags().BoolVar(&o.dryRun, "dry-run", false, "show what would change; change nothing")
	cmd.AddCommand(apply)
	return cmd
}

// topicsApplyOptions are what `ecst topics apply` is asked to do.
type topicsApplyOptions struct {
	fix, dryRun bool
}

// topicsApply plans the entities' topics against the broker, prints the
// changes, and makes them unless it is a dry run.
func (a *app) topicsApply(ctx context.Context, out io.Writer, o topicsApplyOptions) error {
	cfg, err := a.loadConfig()
	if err != nil {
		return err
	}
	if len(cfg.Entities) == 0 {
		return fmt.Errorf("no entities declared: is --config pointing at your ecst.yaml?")
	}
	kopts, err := kafkaopts.Client(cfg.Kafka)
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var ents []*config.Entity
	for _, n := range cfg.EntityNames() {
		ents = append(ents, cfg.Entities[n])
	}
	changes, err := topics.Plan(ctx, adm, ents)
	if err != nil {
		return fmt.Errorf("%w (check ECST_BROKERS and the Kafka credentials)", err)
	}
	if len(changes) == 0 {
		fmt.Fprintln(out, "all topics match ecst.yaml")
		return nil
	}
	drift, refused := printTopicChanges(out, changes, o)
	if !o.dryRun {
		if err := applyTopicChanges(ctx, adm, ents, changes, o.fix); err != nil {
			return err
		}
	}
	switch {
	case refused > 0:
		return problem("%d change(s) refused", refused)
	case drift > 0:
		return problem("%d setting(s) drifted from ecst.yaml: run `ecst topics apply --fix` to align them", drift)
	}
	return nil
}

// printTopicChanges prints the changes as a table, each with what apply
// does about it, then why each refused one is refused; it counts the
// settings left drifted and the refused changes.
func printTopicChanges(out io.Writer, changes []topics.Change, o topicsApplyOptions) (drift, refused int) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tSETTING\tWANT\tHAVE\tACTION")
	for _, c := range changes {
		action := topicAction(c, o)
		switch action {
		case "refused":
			refused++
		case "drift":
			drift++
		}
		have := c.Have
		if have == "" {
			have = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Topic, c.Setting, c.Want, have, action)
	}
	tw.Flush()
	for _, c := range changes {
		if c.Refused != "" {
			fmt.Fprintf(out, "%s: %s %s→%s refused: %s\n", c.Topic, c.Setting, c.Have, c.Want, c.Refused)
		}
	}
	return drift, refused
}

// topicAction is what apply does about c.
func topicAction(c topics.Change, o topicsApplyOptions) string {
	switch {
	case c.Refused != "":
		return "refused"
	case c.Create() && o.dryRun:
		return "would create"
	case c.Create():
		return "create"
	case o.fix && !o.dryRun:
		return "fix"
	case o.fix:
		return "would fix"
	}
	return "drift"
}

// applyTopicChanges creates the missing topics, and aligns the drifted
// configs when fix.
func applyTopicChanges(ctx context.Context, adm *kadm.Client, ents []*config.Entity, changes []topics.Change, fix bool) error {
	for _, e := range ents {
		for _, c := range changes {
			if c.Topic == e.Topic && c.Create() {
				if err := topics.Create(ctx, adm, e); err != nil {
					return err
				}
			}
		}
	}
	if fix {
		return topics.Fix(ctx, adm, changes)
	}
	return nil
}
