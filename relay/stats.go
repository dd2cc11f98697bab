package relay

import (
	"context"
	"strconv"
	"time"

	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/outbox"
)

// sampleBacklog sets the shard's backlog metrics every 5 s while the term
// lasts.
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
		if !wait.Sleep(term, 5*time.Second) {
			return
		}
	}
}
