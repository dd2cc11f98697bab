package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/config/kafkaopts"
	sysstatus "github.com/ecst-io/ecst/internal/status"
)

func newStatusCmd(a *app) *cobra.Command {
	var (
		asJSON bool
		o      sysstatus.Options
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the whole system on one screen and what needs attention",
		Long: `Shows, for the service of ecst.yaml:
  - each entity's topic: partitions, records, compaction settings, and any
    drift from ecst.yaml;
  - on the table transport, each outbox shard: whether a relay leads it, its
    pending rows (counted up to a cap: "≥ N" past it) and how long the oldest
    has waited;
  - on the WAL transport, its replication slot: whether a relay leads it, its
    wal_status, the walsender streaming it, the WAL not yet confirmed (bytes
    and age), the WAL it retains and how much more max_slot_wal_keep_size
    allows (a slot left behind on the table transport is shown too);
  - each read model (every consumer in ecst.consumer_offsets, the mirrors
    among them): its lag behind the topic, whether it is caught up, and
    whether it has been idle so long that compaction may have dropped
    tombstones it never read (longer than the topic's delete.retention.ms);
  - the last 'ecst verify' of each entity (ecst.verify_runs);
  - each entity's latest republish run, with progress and ETA while running;
  - what needs attention, each finding with the command that fixes it.

It reads everything in a few cheap queries (one of each kind of Kafka
metadata for all topics; no count over the outbox past the cap), so it can
run as often as a script likes.

Exit codes: 0 nothing needs attention; 1 something does (a shard without a
relay leader, a backlog older than --max-backlog-age, a WAL slot lost,
invalidated, without a relay or behind by more than --max-slot-lag, drift
found by the last verify, a failed or abandoned republish run, a stalled read
model, a missing or drifted topic); 2 usage, config or connection error.`,
		Example: `  ecst status
  ecst status --json | jq '.attention'
  ecst status --max-backlog-age 5m || page-the-on-call`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			snap, err := gatherStatus(cmd.Context(), cfg, o)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(snap); err != nil {
					return err
				}
			} else if err := snap.WriteText(out); err != nil {
				return err
			}
			if snap.NeedsAttention() {
				return problem("%d finding(s) need attention", len(snap.Attention))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print the snapshot as one JSON object")
	f.DurationVar(&o.MaxBacklogAge, "max-backlog-age", sysstatus.DefaultMaxBacklogAge, "an outbox row waiting longer, a WAL slot confirming WAL older than this, or a lagging read model idle longer, needs attention")
	f.Int64Var(&o.MaxSlotLag, "max-slot-lag", sysstatus.DefaultMaxSlotLag, "a WAL transport slot more bytes behind (WAL not yet confirmed by the relay) needs attention")
	return cmd
}

// gatherStatus connects to the database and the brokers of cfg and
// gathers a snapshot with o.
func gatherStatus(ctx context.Context, cfg *config.Config, o sysstatus.Options) (*sysstatus.Snapshot, error) {
	pool, err := connect(ctx, cfg.Database)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	kopts, err := kafkaopts.Client(cfg.Kafka)
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	o.DB, o.Admin, o.Config = pool, kadm.NewClient(cl), cfg
	snap, err := sysstatus.Gather(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("gather the status: %w (check ECST_DATABASE_URL, ECST_BROKERS and that `ecst migrate` has run)", err)
	}
	return snap, nil
}
