package outbox

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// The relay never deletes a published row: it moves a cursor, and truncates
// a partition once all of it is published. A row is pending, not yet
// published, when ecst.relay_cursors says so for its shard: its id is past
// the cursor, or its transaction is one the relay watches (it was in
// progress when the relay read past its ids). The relay writes its cursor at
// most once a second, so a count here can lag the relay by about that much,
// never the other way: a row counted as published is published.
//
// Everything that asks how much is waiting (the relay's backlog metrics,
// drain, republish's --max-backlog, verify's in-flight keys) asks here.

// Querier is what the pending queries, and DatabaseTransport, run on: a
// *pgxpool.Pool, a *pgx.Conn or a pgx.Tx.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// pendingOf is the body of the pending rows of one shard, s.shard, of table
// (the outbox or one of its partitions) with the shard's cursor row c (NULL
// when the shard has none: everything is pending). The watched
// transactions' rows are read through (txid, id), range by range; OFFSET 0
// keeps the planner from turning that into a scan of the shard.
func pendingOf(table string) string {
	return `
	SELECT o.id, o.shard, o.topic, o.key, o.value, o.headers, o.created_at FROM ` + table + ` o
	WHERE o.shard = s.shard AND o.id > coalesce(c.cursor, 0)
  UNION ALL
	SELECT o.id, o.shard, o.topic, o.key, o.value, o.headers, o.created_at
	FROM unnest(c.watched_lo, c.watched_hi, c.watched_low) AS w(lo, hi, lw)
	CROSS JOIN LATERAL (SELECT * FROM ` + table + ` o WHERE o.txid >= w.lo AND o.txid < w.hi AND o.id > w.lw OFFSET 0) AS o
	WHERE o.shard = s.shard AND o.id <= c.cursor`
}

// PendingIn is PendingSQL over table: the outbox's partition table (a name
// the caller trusts, such as ecst.outbox_3) instead of the whole outbox.
func PendingIn(table string) string {
	return `WITH RECURSIVE shards(shard) AS (
	SELECT min(shard) FROM ` + table + `
  UNION ALL
	SELECT (SELECT min(o.shard) FROM ` + table + ` o WHERE o.shard > s.shard) FROM shards s WHERE s.shard IS NOT NULL
)
SELECT p.* FROM shards s LEFT JOIN ecst.relay_cursors c ON c.shard = s.shard
CROSS JOIN LATERAL (` + pendingOf(table) + `
) AS p
WHERE s.shard IS NOT NULL`
}

// PendingSQL selects the pending rows of every shard: id, shard, topic,
// key, value, headers, created_at, in no particular order. Wrap it:
// `SELECT count(*) FROM (` + PendingSQL + `) p`. The shards holding rows are
// found by skipping through the (shard, id) index.
var PendingSQL = PendingIn("ecst.outbox")

// PendingShardSQL is PendingSQL for the one shard $1 (a smallint).
var PendingShardSQL = `SELECT p.* FROM (SELECT $1::smallint AS shard) s LEFT JOIN ecst.relay_cursors c ON c.shard = s.shard
CROSS JOIN LATERAL (` + pendingOf("ecst.outbox") + `
) AS p`

// PendingShard counts the pending rows of a shard and returns the insert
// time of the oldest (zero when none is pending).
func PendingShard(ctx context.Context, q Querier, shard int) (n int64, oldest time.Time, err error) {
	var at *time.Time
	err = q.QueryRow(ctx, `SELECT count(*), min(created_at) FROM (`+PendingShardSQL+`) p`, shard).Scan(&n, &at)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("count the pending outbox rows of shard %d: %w", shard, err)
	}
	if at != nil {
		oldest = *at
	}
	return n, oldest, nil
}

// PendingCount counts the pending rows of every shard, stopping at limit
// (no limit when limit <= 0).
func PendingCount(ctx context.Context, q Querier, limit int) (int64, error) {
	sql, args := `SELECT count(*) FROM (`+PendingSQL+`) p`, []any(nil)
	if limit > 0 {
		sql, args = `SELECT count(*) FROM (SELECT 1 FROM (`+PendingSQL+`) p LIMIT $1) b`, []any{limit}
	}
	var n int64
	if err := q.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count the pending outbox rows: %w", err)
	}
	return n, nil
}

// PendingKeys returns the distinct keys of topic with a pending row.
func PendingKeys(ctx context.Context, q Querier, topic string) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT DISTINCT key FROM (`+PendingSQL+`) p WHERE topic = $1`, topic)
	if err != nil {
		return nil, fmt.Errorf("read the pending outbox keys of %s: %w", topic, err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read the pending outbox keys of %s: %w", topic, err)
	}
	return keys, nil
}

// PendingByShard counts, per shard, the pending rows of topic with an id
// at most maxID (every id when maxID <= 0), and returns the highest pending
// id of topic among them.
func PendingByShard(ctx context.Context, q Querier, topic string, maxID int64) (byShard map[int]int64, highest int64, err error) {
	if maxID <= 0 {
		maxID = 1<<63 - 1
	}
	rows, err := q.Query(ctx, `SELECT shard, count(*), max(id) FROM (`+PendingSQL+`) p WHERE topic = $1 AND id <= $2 GROUP BY shard`, topic, maxID)
	if err != nil {
		return nil, 0, fmt.Errorf("count the pending outbox rows of %s: %w", topic, err)
	}
	byShard = map[int]int64{}
	var shard int
	var n, top int64
	_, err = pgx.ForEachRow(rows, []any{&shard, &n, &top}, func() error {
		byShard[shard] = n
		highest = max(highest, top)
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("count the pending outbox rows of %s: %w", topic, err)
	}
	return byShard, highest, nil
}

// PendingHead counts the pending rows of a shard up to limit (capped: at
// least limit are pending) and returns the insert time of the oldest (zero
// when none is pending). Its cost is bounded whatever the backlog, unlike
// PendingShard's: the count stops at limit, and the oldest row is the first
// past the shard's cursor (the head of its (shard, id) index) or a row of a
// transaction the relay watches (a few). `ecst status` asks here.
func PendingHead(ctx context.Context, q Querier, shard, limit int) (n int64, capped bool, oldest time.Time, err error) {
	var at *time.Time
	err = q.QueryRow(ctx, `SELECT (SELECT count(*) FROM (SELECT 1 FROM (`+PendingShardSQL+`) p LIMIT $2) b),
		least(
			(SELECT o.created_at FROM ecst.outbox o
				WHERE o.shard = $1::smallint AND o.id > coalesce((SELECT cursor FROM ecst.relay_cursors WHERE shard = $1::smallint), 0)
				ORDER BY o.id LIMIT 1),
			(SELECT min(o.created_at) FROM ecst.relay_cursors c
				CROSS JOIN LATERAL unnest(c.watched_lo, c.watched_hi, c.watched_low) AS w(lo, hi, lw)
				CROSS JOIN LATERAL (SELECT * FROM ecst.outbox o WHERE o.txid >= w.lo AND o.txid < w.hi AND o.id > w.lw OFFSET 0) AS o
				WHERE c.shard = $1::smallint AND o.shard = $1::smallint AND o.id <= c.cursor))`, shard, limit).Scan(&n, &at)
	if err != nil {
		return 0, false, time.Time{}, fmt.Errorf("count the pending outbox rows of shard %d: %w", shard, err)
	}
	if at != nil {
		oldest = *at
	}
	return n, n >= int64(limit), oldest, nil
}
