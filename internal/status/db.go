package status

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/ecst-io/ecst/internal/pglock"
	"github.com/ecst-io/ecst/relay"
)

// outboxShards reads the delete-based outbox's shards: for each, whether a
// relay leads it (relay.Leaders: pg_locks), its pending rows counted up to
// limit (an index walk of at most limit entries), and the oldest one's age
// (the head of the shard's (shard, id) index). Two round trips whatever the
// backlog.
func outboxShards(ctx context.Context, q Querier, shards, limit int) ([]Shard, error) {
	leaders, err := relay.Leaders(ctx, q)
	if err != nil {
		return nil, err
	}
	rows, err := q.Query(ctx, `SELECT s, p.n, extract(epoch FROM now() - h.created_at)
		FROM generate_series(0, $1::int - 1) AS s
		CROSS JOIN LATERAL (SELECT count(*) AS n FROM (SELECT 1 FROM ecst.outbox WHERE shard = s LIMIT $2) b) AS p
		LEFT JOIN LATERAL (SELECT created_at FROM ecst.outbox WHERE shard = s ORDER BY id LIMIT 1) AS h ON true
		ORDER BY s`, shards, limit)
	if err != nil {
		return nil, fmt.Errorf("count the pending outbox rows: %w", err)
	}
	var out []Shard
	var sh Shard
	var age *float64
	_, err = pgx.ForEachRow(rows, []any{&sh.Shard, &sh.Pending, &age}, func() error {
		sh.Leader = slices.Contains(leaders, sh.Shard)
		sh.Capped = sh.Pending >= int64(limit)
		sh.OldestAge = 0
		if age != nil {
			sh.OldestAge = Seconds(max(*age, 0))
		}
		out = append(out, sh)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("count the pending outbox rows: %w", err)
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
