package status

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ecst-io/ecst/internal/pglock"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/relay"
)

// outboxShards reads the table transport's shards: for each, whether a
// relay leads it (relay.Leaders: pg_locks), and its pending rows counted up
// to limit with the oldest one's age (outbox.PendingHead: bounded whatever
// the backlog). One statement per shard.
func outboxShards(ctx context.Context, q Querier, shards, limit int) ([]Shard, error) {
	leaders, err := relay.Leaders(ctx, q)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	out := make([]Shard, shards)
	for i := range out {
		n, capped, oldest, err := outbox.PendingHead(ctx, q, i, limit)
		if err != nil {
			return nil, err
		}
		out[i] = Shard{Shard: i, Leader: slices.Contains(leaders, i), Pending: n, Capped: capped}
		if !oldest.IsZero() {
			out[i].OldestAge = Seconds(max(now.Sub(oldest).Seconds(), 0))
		}
	}
	return out, nil
}

// readModel is a ReadModel with its offsets.
type readModel struct {
	ReadModel
	next map[int32]int64
}

// readModels reads ecst.consumer_offsets: one row per consumer and topic
// with its partitions' next offsets (a scan of a table with a row per
// consumer partition: small).
func readModels(ctx context.Context, q Querier) ([]readModel, error) {
	rows, err := q.Query(ctx, `SELECT consumer, topic, array_agg(partition), array_agg(next_offset), max(updated_at)
		FROM ecst.consumer_offsets GROUP BY consumer, topic ORDER BY consumer, topic`)
	if err != nil {
		return nil, fmt.Errorf("read ecst.consumer_offsets: %w", err)
	}
	var out []readModel
	var m readModel
	var parts []int32
	var next []int64
	_, err = pgx.ForEachRow(rows, []any{&m.Consumer, &m.Topic, &parts, &next, &m.UpdatedAt}, func() error {
		r := readModel{ReadModel: m.ReadModel, next: map[int32]int64{}}
		for i, p := range parts {
			r.next[p] = next[i]
		}
		// `ecst mirror` names its consumer after its table.
		if t, ok := strings.CutPrefix(r.Consumer, "mirror:"); ok {
			r.Mirror = t
		}
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read ecst.consumer_offsets: %w", err)
	}
	return out, nil
}

// republishRuns reads the latest run of each entity (an index walk per
// entity of ecst.republish_runs' (entity, started_at) index, a handful of
// rows each) with the republish locks held now.
func republishRuns(ctx context.Context, q Querier) ([]Run, error) {
	rows, err := q.Query(ctx, `SELECT DISTINCT ON (entity) id, entity, state, rows_selected,
			rows_written + tombstones_written, coalesce(error, ''), started_at, updated_at, finished_at,
			ARRAY(SELECT objid::bigint FROM pg_locks
				WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid::bigint = $1
				  AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))
		FROM ecst.republish_runs ORDER BY entity, started_at DESC, id DESC`, int64(pglock.Republish))
	if err != nil {
		return nil, fmt.Errorf("read ecst.republish_runs: %w", err)
	}
	var out []Run
	var r Run
	var held []int64
	_, err = pgx.ForEachRow(rows, []any{&r.ID, &r.Entity, &r.State, &r.Selected, &r.Written, &r.Error, &r.StartedAt, &r.UpdatedAt, &r.FinishedAt, &held}, func() error {
		run := r
		// pg_locks shows the int4 object as an oid: unsigned.
		if run.State == "running" && !slices.Contains(held, int64(uint32(pglock.Hash(run.Entity)))) {
			run.State = "abandoned"
		}
		if run.Selected != nil && *run.Selected > 0 {
			run.Progress = min(float64(run.Written)/float64(*run.Selected), 1)
			elapsed := run.UpdatedAt.Sub(run.StartedAt)
			if run.State == "running" && run.Written > 0 && elapsed > 0 {
				left := float64(max(*run.Selected-run.Written, 0))
				run.ETA = Seconds(left / (float64(run.Written) / elapsed.Seconds()))
			}
		}
		out = append(out, run)
		r.Selected, r.FinishedAt = nil, nil
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read ecst.republish_runs: %w", err)
	}
	return out, nil
}
