package relay

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
)

// WithBeforeProduce calls f with each batch's row ids after the batch is
// read and before it is produced: tests stall a leader there.
func WithBeforeProduce(cfg *Config, f func(shard int, ids []int64)) { cfg.beforeProduce = f }

// WithoutFencing makes the relay produce without a transactional id, so
// that a test can show what fencing prevents.
func WithoutFencing(cfg *Config) { cfg.noFencing = true }

// WithReadAheadByID makes the relay read ahead with `id > max(in flight)`
// instead of the head minus the rows in flight, so that a test can show
// the reordering that would allow.
func WithReadAheadByID(cfg *Config) { cfg.readAheadByID = true }

// ReadAheadSQL is the relay's read of the head minus the batch in flight.
const ReadAheadSQL = readAheadSQL

// RefreshStats runs a relay's statistics check for a backlog of n rows.
func RefreshStats(ctx context.Context, pool *pgxpool.Pool, n int64) {
	r, err := New(Config{Pool: pool, Service: "test"})
	if err != nil {
		panic(err)
	}
	r.refreshStats(ctx, n)
}

// WithLSNOrder makes the WAL source sort each batch by the position where
// its messages were written instead of the commit order the slot delivers
// them in, so that a test can show the reordering that would cause.
func WithLSNOrder(cfg *Config) { cfg.sortByLSN = true }

// WithoutSwitchWait makes a switch open the new transport at once, without
// waiting for the old one's events to be published.
func WithoutSwitchWait(o *SwitchOptions) { o.noWait = true }

// WithoutSlotDrop makes a switch to the table transport leave the slot.
func WithoutSlotDrop(o *SwitchOptions) { o.keepSlot = true }
