package relay

import (
	"context"
	"strconv"
	"time"

	"github.com/ecst-io/ecst/internal/wait"
)

func (r *Relay) sampleBacklog(term context.Context, shard int) {
	label := strconv.Itoa(shard)
	for {
		var n int64
		var age float64
		err := r.cfg.Pool.QueryRow(term, `SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
			FROM ecst.outbox WHERE shard = $1`, shard).Scan(&n, &age)
		if err == nil {
			r.m.backlog.WithLabelValues(label).Set(float64(n))
			r.m.oldest.WithLabelValues(label).Set(age)
			r.refreshStats(term, n)
		}
		if !wait.Sleep(term, 5*time.Second) {
			return
		}
	}
}

// refreshStats analyzes the outbox when the planner's idea of its size
// lags far behind its backlog. Right after a burst (a big republish, a
// relay that was down) autovacuum has not analyzed it yet; the planner then
// takes a table of a million rows for a few pages and scans and sorts the
// whole shard for every batch, halving the drain. ANALYZE samples a fixed
// number of rows and blocks no writer; a role that does not own the table
// gets a warning from PostgreSQL, not an error, and autovacuum catches up
// in its own time.
func (r *Relay) refreshStats(ctx context.Context, backlog int64) {
	if backlog < 10_000 {
		return
	}
	var tuples float64
	if err := r.cfg.Pool.QueryRow(ctx, `SELECT reltuples FROM pg_class WHERE oid = 'ecst.outbox'::regclass`).Scan(&tuples); err != nil {
		return
	}
	if tuples >= float64(backlog)/4 {
		return
	}
	start := time.Now()
	if _, err := r.cfg.Pool.Exec(ctx, `ANALYZE ecst.outbox`); err != nil {
		r.log.Debug("could not analyze ecst.outbox", "error", err)
		return
	}
	r.log.Info("analyzed ecst.outbox: its statistics lagged behind the backlog", "backlog", backlog,
		"estimated_rows", int64(max(tuples, 0)), "took", time.Since(start).Round(time.Millisecond))
}
