package relay_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/ecst-io/ecst/internal/pgtest"
	"github.com/ecst-io/ecst/relay"
)

// TestReadPlanNeedsNoStatistics: right after a burst (a big republish, a
// relay that was down), autovacuum has not analyzed the outbox yet, and
// the planner knows nothing of its rows. The relay's read must still walk
// the (shard, id) index from the cursor and the (txid, id) index per
// watched range, and never scan a partition: with the old delete-based
// read a stale plan halved a 1M-row drain.
func TestReadPlanNeedsNoStatistics(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t)
	const n = 200_000 // three partitions' worth, never analyzed
	rows := make([][]any, n)
	for i := range rows {
		rows[i] = []any{int16(0), "t", "k", []byte("v"), []byte{}}
	}
	if _, err := pool.CopyFrom(ctx, pgx.Identifier{"ecst", "outbox"}, []string{"shard", "topic", "key", "value", "headers"}, pgx.CopyFromRows(rows)); err != nil {
		t.Fatal(err)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	lo, hi, low := []uint64{700, 900}, []uint64{701, 1<<64 - 1}, []int64{0, 0}
	for _, mode := range []string{"force_generic_plan", "force_custom_plan"} {
		if _, err := conn.Exec(ctx, "SET plan_cache_mode = "+mode); err != nil {
			t.Fatal(err)
		}
		plan := explain(t, conn, relay.ReadSQL, int16(0), int64(n/2), 2000, lo, hi, low)
		if strings.Contains(plan, "Seq Scan") || !strings.Contains(plan, "shard_id_idx") || !strings.Contains(plan, "txid_id_idx") {
			t.Fatalf("%s: the read does not walk the indexes:\n%s", mode, plan)
		}
	}
}

func explain(t *testing.T, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, sql string, args ...any) string {
	t.Helper()
	rows, err := q.Query(context.Background(), "EXPLAIN "+sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n")
}
