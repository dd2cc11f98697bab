package capture

import (
	"context"

	"github.com/ecst-io/ecst/outbox"
)

// WithoutKeyLock makes the resolver read and write without the keys'
// locks, so that a test can show what the lock prevents.
func WithoutKeyLock(cfg *ResolverConfig) { cfg.noLock = true }

// WithDirect makes the resolver hand the resolved events to f (which
// publishes them straight to Kafka) instead of writing them to the outbox,
// so that a test can show what going through the outbox prevents.
func WithDirect(cfg *ResolverConfig, f func(ctx context.Context, rows []outbox.Row) error) {
	cfg.direct = f
}
