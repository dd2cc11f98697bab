package cli

import (
	"bufio"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ecst-io/ecst/config/kafkaopts"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/relay"
)

func newOutboxCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "outbox", Short: "Manage the outbox's transport: the table, or the WAL"}
	var dryRun, drain, yes bool
	var waitFor time.Duration
	sw := &cobra.Command{
		Use:   "switch wal|table",
		Short: "Move a running system to the other outbox transport, losing and reordering nothing",
		Long: `Moves the database to the other outbox transport (outbox.transport in ecst.yaml):
table (rows in ecst.outbox) or wal (logical decoding messages streamed from a
replication slot). Nothing is lost or reordered: every event written before the
switch reaches Kafka before any written after it.

switch wal checks wal_level = logical, creates the publication ecst_messages and
the slot ecst_<service>, then in one transaction marks the database as running the
WAL transport. From then on a table writer's insert fails (constraint
ecst_outbox_transport_is_wal) and writes nothing; the WAL relay publishes nothing
until the table relay has published the rows left in ecst.outbox.

switch table marks the database as running the table transport and records the
WAL position of the switch. A WAL writer's event then fails and writes nothing;
the table relay publishes nothing until the WAL relay has published what the slot
holds from before the switch. Then the slot is dropped (a slot left behind keeps
WAL from being removed), and the command says so.

The switch waits for the writers in flight, retrying under a short lock_timeout
so that it never holds writers up for long. Then it waits (--wait) for the old
transport's relay to publish what it holds; --drain publishes it from this process
instead (the old transport's relay in drain mode). Deploy writers and relays with
the new outbox.transport right after: until then, writers of the old one fail.

--dry-run says what would happen. On a terminal it asks for confirmation unless
--yes is given.`,
		Example: `  ecst outbox switch wal --dry-run
  ecst outbox switch wal            # the table relay publishes what is left
  ecst outbox switch table --drain  # publish what the slot holds from here, drop it`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"wal", "table"},
		RunE: func(cmd *cobra.Command, args []string) error {
			to := outbox.Transport(args[0])
			if to != outbox.TransportWAL && to != outbox.TransportTable {
				return fmt.Errorf("switch %q: name the transport to move to, wal or table", args[0])
			}
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			if cfg.Service == "" {
				return fmt.Errorf("service is required: it names the replication slot (service in ecst.yaml or ECST_SERVICE)")
			}
			ctx := cmd.Context()
			pool, err := connect(ctx, cfg.Database)
			if err != nil {
				return err
			}
			defer pool.Close()
			out := cmd.OutOrStdout()
			from, err := outbox.DatabaseTransport(ctx, pool)
			if err != nil {
				return err
			}
			slot := relay.SlotName(cfg.Service)
			if !dryRun && !yes && isTerminal(a.io.In) {
				fmt.Fprintf(cmd.ErrOrStderr(), "Move the database from the %s transport to the %s transport? Writers of the %s transport fail from then on. [y/N] ", from, to, from)
				line, _ := bufio.NewReader(a.io.In).ReadString('\n')
				if !strings.EqualFold(strings.TrimSpace(line), "y") && !strings.EqualFold(strings.TrimSpace(line), "yes") {
					return problem("not confirmed; nothing changed")
				}
			}
			opts := relay.SwitchOptions{Service: cfg.Service, DryRun: dryRun, Wait: waitFor, Logger: a.logger()}
			if drain {
				kopts, err := kafkaopts.Client(cfg.Kafka)
				if err != nil {
					return err
				}
				var topics []string
				for _, n := range cfg.EntityNames() {
					topics = append(topics, cfg.Entities[n].Topic)
				}
				opts.Drain = func(ctx context.Context, old outbox.Transport) error {
					fmt.Fprintf(out, "publishing what the %s transport holds (a relay in drain mode)\n", old)
					rl, err := relay.New(relay.Config{Pool: pool, KafkaOpts: kopts, Service: cfg.Service, Transport: old,
						TotalShards: cfg.Outbox.Shards, Topics: topics, BatchSize: cfg.Relay.BatchSize, BatchBytes: cfg.Relay.BatchBytes,
						PollMin: cfg.Relay.PollMin, PollMax: cfg.Relay.PollMax, LeaseTimeout: cfg.Relay.LeaseTimeout,
						OnReject: relay.RejectPolicy(cfg.Relay.OnReject), WALHeartbeat: cfg.Relay.WALHeartbeat, Drain: true, Logger: a.logger()})
					if err != nil {
						return err
					}
					if err := rl.Run(ctx); err != nil {
						return fmt.Errorf("drain the %s transport: %w", old, err)
					}
					printDrained(out, rl.Counts())
					return nil
				}
			}
			if dryRun {
				res, err := relay.Switch(ctx, pool, to, opts)
				if err != nil {
					return err
				}
				describeSwitch(cmd, res, slot)
				return nil
			}
			fmt.Fprintf(out, "switching from the %s transport to the %s transport\n", from, to)
			res, err := relay.Switch(ctx, pool, to, opts)
			if err != nil {
				return err
			}
			if res.SlotCreated {
				fmt.Fprintf(out, "created replication slot %s\n", slot)
			}
			if res.Changed {
				fmt.Fprintf(out, "the database runs the %s transport\n", to)
			} else {
				fmt.Fprintf(out, "the database already ran the %s transport\n", to)
			}
			if res.SlotDropped {
				fmt.Fprintf(out, "dropped replication slot %s: the WAL relay had published everything before the switch (%s)\n", slot, res.SwitchLSN)
			}
			fmt.Fprintf(out, "done: run writers and relays with outbox.transport: %s (ECST_OUTBOX_TRANSPORT=%s)\n", to, to)
			return nil
		},
	}
	sw.Flags().BoolVar(&dryRun, "dry-run", false, "say what the switch would do; change nothing")
	sw.Flags().BoolVar(&drain, "drain", false, "publish what the old transport holds from this process, instead of waiting for its relay")
	sw.Flags().DurationVar(&waitFor, "wait", 10*time.Minute, "how long to wait for the old transport's relay to publish what it holds")
	sw.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation")
	cmd.AddCommand(sw)
	return cmd
}

func describeSwitch(cmd *cobra.Command, res *relay.SwitchResult, slot string) {
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "dry run: the database runs the %s transport", res.From)
	if !res.Changed {
		fmt.Fprintf(out, " already")
	}
	fmt.Fprintln(out)
	switch {
	case res.To == outbox.TransportWAL && res.Changed:
		fmt.Fprintf(out, "switch wal would create slot %s (if missing), then move the database to the WAL transport", slot)
		if res.PendingRows {
			fmt.Fprintf(out, "; the outbox table holds rows, which the table relay publishes before the WAL relay starts")
		}
		fmt.Fprintln(out)
	case res.To == outbox.TransportTable:
		fmt.Fprintf(out, "switch table would move the database to the table transport, wait for the WAL relay to publish what slot %s holds, then drop the slot\n", slot)
	}
	fmt.Fprintln(out, "nothing changed")
}
