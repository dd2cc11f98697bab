package relay

import (
	"context"
	"fmt"

	"github.com/ecst-io/ecst/internal/pglock"
	"github.com/ecst-io/ecst/outbox"
	"github.com/jackc/pgx/v5"
)

// Querier is what Leaders reads with: a *pgxpool.Pool, a *pgx.Conn or a
// pgx.Tx.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Leaders returns the outbox shards that some relay process leads now, in
// order: those whose leader lock (class "ecst", object 100 + shard) a
// session of this database holds, as pg_locks shows it. A standby holds no
// lock, so a shard listed here has a relay publishing it; one missing has
// none, and its rows wait until a relay starts. Anyone who may read
// pg_locks (every role, by default) can ask.
func Leaders(ctx context.Context, q Querier) ([]int, error) {
	rows, err := q.Query(ctx, `SELECT DISTINCT objid::bigint - $2 FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND objsubid = 2
		  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND classid::bigint = $1 AND objid::bigint >= $2 AND objid::bigint < $2 + $3
		ORDER BY 1`, int64(pglock.ECST), int64(pglock.ObjRelayShard), int64(outbox.MaxShards))
	if err != nil {
		return nil, fmt.Errorf("read the relay leader locks from pg_locks: %w", err)
	}
	shards, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return nil, fmt.Errorf("read the relay leader locks from pg_locks: %w", err)
	}
	return shards, nil
}

// LeadsWAL reports whether some relay process leads the WAL transport now:
// a session of this database holds its leader lock (class "ecst", object
// 2), as pg_locks shows it.
func LeadsWAL(ctx context.Context, q Querier) (bool, error) {
	rows, err := q.Query(ctx, `SELECT 1 FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND objsubid = 2
		  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND classid::bigint = $1 AND objid::bigint = $2`, int64(pglock.ECST), int64(pglock.ObjRelayWAL))
	if err != nil {
		return false, fmt.Errorf("read the relay leader locks from pg_locks: %w", err)
	}
	n, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return false, fmt.Errorf("read the relay leader locks from pg_locks: %w", err)
	}
	return len(n) > 0, nil
}
