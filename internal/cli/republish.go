package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/term"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/config/kafkaopts"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/republish"
	"github.com/ecst-io/ecst/schemas"
)

func newRepublishCmd(a *app) *cobra.Command {
	c := &republishCmd{}
	o := &c.opts
	cmd := &cobra.Command{
		Use:   "republish ENTITY",
		Short: "Write the current full state of selected keys from the source tables to the outbox",
		Long: `A forced full-state republish: reads the entity's source of truth (entities.<name>.source
in ecst.yaml) and writes each selected key's current full state to the outbox, tagged
with the header ecst-republish: <run id>. The relay publishes it, and every consumer
that replays or follows the topic converges on the source.

Select keys with exactly one of --all, --key K (repeatable) or --where SQL (a
condition on the source query's columns). --tombstone-orphans also writes a
tombstone for every key alive on the topic that the source no longer has (with
--key: for the given keys the source does not have).

Safe under live traffic: each batch locks its keys (the same per-key lock the
producer takes), then reads their rows, then writes, in one transaction. A
republished state never lands behind a newer live one.

Runs are recorded in ecst.republish_runs. A run that is stopped or killed keeps
its position: --resume RUN carries on after the last batch written. Two runs of
one entity at once are refused. The run slows down while the outbox holds
--max-backlog rows or more (the relay is behind; with outbox.transport: wal,
while that many of the run's own events are not yet published), and --rate
caps it.

--dry-run counts the selected keys (and orphans), shows a sample of the states
it would write, and writes nothing. On a terminal, --all and --tombstone-orphans
ask for confirmation unless --yes is given; scripts never get a prompt.`,
		Example: `  ecst republish customer --all --dry-run
  ecst republish customer --all --tombstone-orphans --rate 5000
  ecst republish customer --key c-1 --key c-2
  ecst republish customer --where "tier = 'gold'"
  ecst republish customer --resume 7`,
		Args: entityArg(a),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := c.options(); err != nil {
				return err
			}
			return a.republish(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), args[0], c)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.All, "all", false, "select every key of the source")
	f.StringArrayVar(&o.Keys, "key", nil, "select this key (repeatable)")
	f.StringVar(&o.Where, "where", "", "select the keys whose source rows match this SQL condition")
	f.BoolVar(&o.TombstoneOrphans, "tombstone-orphans", false, "tombstone keys alive on the topic that the source lacks")
	f.StringVar(&c.rate, "rate", "", "at most this many keys per second (e.g. 5000 or 5000/s)")
	f.IntVar(&o.Batch, "batch", 500, "keys per transaction")
	f.IntVar(&o.MaxBacklog, "max-backlog", 100_000, "pause while the outbox holds this many rows (WAL transport: this many of the run's events unpublished; -1: never)")
	f.BoolVar(&o.DryRun, "dry-run", false, "count and show a sample; write nothing")
	f.Int64Var(&o.Resume, "resume", 0, "resume the stopped run with this id")
	f.BoolVar(&c.yes, "yes", false, "do not ask for confirmation")
	f.BoolVar(&c.jsonOut, "json", false, "print the result as one JSON object")
	return cmd
}

// republishCmd is what `ecst republish` is asked: the library's Options,
// and how to ask and print.
type republishCmd struct {
	opts    republish.Options
	rate    string // --rate as given
	yes     bool
	jsonOut bool
}

// options completes the Options from the flags, and checks that they
// select keys.
func (c *republishCmd) options() error {
	if c.rate != "" {
		r, err := strconv.ParseFloat(strings.TrimSuffix(c.rate, "/s"), 64)
		if err != nil || r <= 0 {
			return fmt.Errorf("--rate %q: give keys per second, like 5000 or 5000/s", c.rate)
		}
		c.opts.Rate = r
	}
	o := c.opts
	if o.Resume == 0 && !o.All && len(o.Keys) == 0 && o.Where == "" {
		return errors.New("choose the keys: --all, --key K (repeatable) or --where SQL; or --resume RUN")
	}
	return nil
}

// republish runs the republish of entity c asks for, with its progress on
// errOut, and prints the result on out.
func (a *app) republish(ctx context.Context, out, errOut io.Writer, entity string, c *republishCmd) error {
	cfg, e, err := a.loadEntity(entity)
	if err != nil {
		return err
	}
	o := c.opts
	if (o.All || o.TombstoneOrphans) && !o.DryRun && !c.yes && isTerminal(a.io.In) {
		fmt.Fprintf(errOut, "Republish %s to %s (%s)? Consumers will receive every selected key again. [y/N] ", e.Name, e.Topic, describeSelection(o))
		line, _ := bufio.NewReader(a.io.In).ReadString('\n')
		if !strings.EqualFold(strings.TrimSpace(line), "y") && !strings.EqualFold(strings.TrimSpace(line), "yes") {
			return problem("not confirmed; nothing written")
		}
	}
	rc, err := openRecovery(ctx, cfg, true)
	if err != nil {
		return err
	}
	defer rc.close()
	p := newProgress(errOut, "republish "+e.Name)
	o.Progress = func(pr republish.Progress) {
		p.what = pr.Phase + " " + e.Name
		p.update(pr.Done, pr.Total)
	}
	res, err := republish.Run(ctx, republish.Config{Pool: rc.pool, Publisher: rc.pub, Entity: e, Kafka: rc.kopts, Logger: a.logger()}, o)
	p.finish()
	if err != nil {
		return inFlags(err, e.Name)
	}
	if c.jsonOut {
		return json.NewEncoder(out).Encode(res)
	}
	a.printRepublish(out, e, o, res)
	return nil
}

// printRepublish says what a run wrote, or what a dry run would have.
func (a *app) printRepublish(out io.Writer, e *config.Entity, o republish.Options, res *republish.Result) {
	if o.DryRun {
		fmt.Fprintf(out, "dry run: %d keys of %s selected", res.Selected, e.Name)
		if o.TombstoneOrphans {
			fmt.Fprintf(out, ", %d orphans on %s would get a tombstone", res.Orphans, e.Topic)
		}
		fmt.Fprintln(out, "; nothing written. A sample of the states:")
		for _, s := range res.Sample {
			b, _ := json.Marshal(s.State)
			fmt.Fprintf(out, "  %s (version %d): %s\n", s.Key, s.Version, b)
		}
		return
	}
	verb := "ran"
	if res.Resumed {
		verb = "resumed and finished"
	}
	fmt.Fprintf(out, "run %d %s: %d full states and %d tombstones of %s written to the outbox (%d selected",
		res.RunID, verb, res.Written, res.Tombstones, e.Name, res.Selected)
	if res.Vanished > 0 {
		fmt.Fprintf(out, ", %d deleted meanwhile: their live tombstones stand", res.Vanished)
	}
	fmt.Fprintf(out, ") in %s.\nThe relay publishes them to %s; check with: %s\n", res.Elapsed.Round(1e6), e.Topic, a.command("verify", e.Name))
}

func describeSelection(o republish.Options) string {
	switch {
	case o.All:
		return "all keys"
	case o.Where != "":
		return "keys where " + o.Where
	default:
		return fmt.Sprintf("%d keys", len(o.Keys))
	}
}

func isTerminal(r any) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// recoveryClients are what republish, verify and mirror connect to.
type recoveryClients struct {
	pool  *pgxpool.Pool
	reg   *schemas.Registry
	pub   *producer.Publisher // nil unless asked for
	kopts []kgo.Opt
}

func (c *recoveryClients) close() {
	c.pool.Close()
	c.reg.Close()
}

func openRecovery(ctx context.Context, cfg *config.Config, publisher bool) (*recoveryClients, error) {
	kopts, err := kafkaopts.Client(cfg.Kafka)
	if err != nil {
		return nil, err
	}
	reg, err := schemas.NewRegistry(cfg.Registry)
	if err != nil {
		return nil, err
	}
	c := &recoveryClients{reg: reg, kopts: kopts}
	if publisher {
		if c.pub, err = producer.FromConfig(cfg, reg); err != nil {
			reg.Close()
			return nil, err
		}
	}
	if c.pool, err = connect(ctx, cfg.Database); err != nil {
		reg.Close()
		return nil, err
	}
	return c, nil
}
