package relay_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/ecst-io/ecst/internal/pgtest"
	"github.com/ecst-io/ecst/relay"
)

// TestRelayRefreshesStaleStatistics: right after a burst of rows (a big
// republish), before autovacuum analyzed the outbox, the planner took the
// relay's read-ahead for a scan of a few pages and chose a bitmap scan of
// the whole shard plus a sort, per batch: a 1M-row drain ran at half speed.
// The relay's backlog sampler analyzes the table when its statistics lag
// far behind the backlog; after that the read walks the primary key.
func TestRelayRefreshesStaleStatistics(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.NewDB(t)
	const n = 20_000 // below the outbox's autovacuum analyze threshold
	rows := make([][]any, n)
	for i := range rows {
		rows[i] = []any{int16(0), "t", "k", []byte("v"), []byte{}}
	}
	if _, err := pool.CopyFrom(ctx, pgx.Identifier{"ecst", "outbox"}, []string{"shard", "topic", "key", "value", "headers"}, pgx.CopyFromRows(rows)); err != nil {
		t.Fatal(err)
	}
	inFlight := make([]int64, 2000)
	for i := range inFlight {
		inFlight[i] = int64(i + 1)
	}
	before := explain(t, pool, relay.ReadAheadSQL, int16(0), 2000, inFlight)
	if !strings.Contains(before, "Sort") {
		t.Logf("before: the planner already walks the index:\n%s", before)
	}
	relay.RefreshStats(ctx, pool, n)
	after := explain(t, pool, relay.ReadAheadSQL, int16(0), 2000, inFlight)
	if !strings.Contains(after, "Index Scan using outbox_pkey") || strings.Contains(after, "Sort") {
		t.Fatalf("read-ahead plan after the relay refreshed the statistics:\n%s\nbefore:\n%s", after, before)
	}
	var tuples float64
	_ = pool.QueryRow(ctx, `SELECT reltuples FROM pg_class WHERE oid = 'ecst.outbox'::regclass`).Scan(&tuples)
	if tuples < n/2 {
		t.Fatalf("reltuples %v after refresh, want about %d", tuples, n)
	}
	// A backlog the statistics already know is left alone.
	relay.RefreshStats(ctx, pool, n)
}

func explain(t *testing.T, pool interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, sql string, args ...any) string {
	t.Helper()
	rows, err := pool.Query(context.Background(), "EXPLAIN "+sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n")
}
