package relay

import (
	"context"
	"strconv"
	"time"

	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/outbox"
)

// sampleBacklog sets the shard's backlog metrics, and the size of the
// outbox, every 5 s while the term lasts.
func (r *Relay) sampleBacklog(term context.Context, shard int) {
	label := strconv.Itoa(shard)
	for {
		if n, oldest, err := outbox.PendingShard(term, r.cfg.Pool, shard); err == nil {
			r.m.backlog.WithLabelValues(label).Set(float64(n))
			age := 0.0
			if !oldest.IsZero() {
				age = max(time.Since(oldest).Seconds(), 0)
			}
			r.m.oldest.WithLabelValues(label).Set(age)
		}
		// The planner's estimate: exact counts would read every row kept.
		var rows float64
		if err := r.cfg.Pool.QueryRow(term, `SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::float8
			FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'ecst.outbox'::regclass`).Scan(&rows); err == nil {
			r.m.outboxRows.Set(rows)
		}
		if !wait.Sleep(term, 5*time.Second) {
			return
		}
	}
}
