package relay

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/outbox"
)

// The outbox's partitioning (migration 002): ids run through outboxParts
// windows of outboxWindow ids, cyclically, each window in its own
// partition ecst.outbox_<n>.
const (
	outboxWindow = 65536
	outboxParts  = 8
)

// rotateEvery is the mean pause between a leader's rotations; each pause is
// drawn between half and one and a half of it, so that the leaders of
// several shards do not try at once.
const rotateEvery = 2 * time.Second

// rotateLockTimeout bounds how long a rotation waits for its partition's
// lock, and so how long a relay read queued behind it can wait.
const rotateLockTimeout = 100 * time.Millisecond

// rotateLoop truncates published partitions while the term lasts.
func (r *Relay) rotateLoop(term context.Context) {
	warned := false
	for {
		pause := rotateEvery/2 + time.Duration(rand.Int64N(int64(rotateEvery))) //nolint:gosec // jitter
		if !wait.Sleep(term, pause) {
			return
		}
		err := r.rotate(term)
		var pgErr *pgconn.PgError
		switch {
		case err == nil || term.Err() != nil:
		case errors.As(err, &pgErr) && pgErr.Code == "42501":
			// Rows accumulate (ecst_relay_outbox_rows shows it) but
			// nothing is lost: keep relaying, say it once.
			if !warned {
				r.log.Warn("cannot truncate published outbox partitions: the relay's role lacks the privilege; published rows accumulate until it has it (GRANT TRUNCATE ON ecst.outbox_0, ..., ecst.outbox_7, or run the relay as the owner of ecst.outbox)", "err", err)
				warned = true
			}
		default:
			r.log.Debug("rotate the outbox", "err", err)
		}
	}
}

// rotate truncates each partition, other than the one ids are drawn in now,
// that holds rows and none that is pending (outbox.PendingIn). A partition
// someone else holds a lock on is left for a later round.
func (r *Relay) rotate(ctx context.Context) error {
	var last int64
	if err := r.cfg.Pool.QueryRow(ctx, `SELECT last_value FROM ecst.outbox_id_seq`).Scan(&last); err != nil {
		return fmt.Errorf("read the outbox id sequence: %w", err)
	}
	current := int(last/outboxWindow) % outboxParts
	for p := range outboxParts {
		if p == current {
			continue
		}
		if err := r.truncate(ctx, fmt.Sprintf("ecst.outbox_%d", p)); err != nil {
			return err
		}
	}
	return nil
}

// truncate truncates partition table if every row in it is published.
func (r *Relay) truncate(ctx context.Context, table string) error {
	// A first look without any lock: is there anything to reclaim, is all of
	// it published, and is the partition free? Rows still being written
	// (their transactions hold a lock on it) and long readers would make
	// the LOCK below wait, and every relay read queue behind it.
	var full, published, free bool
	err := r.cfg.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+table+`),
		NOT EXISTS (`+outbox.PendingIn(table)+`),
		NOT EXISTS (SELECT 1 FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
			WHERE l.relation = $1::regclass AND l.pid <> pg_backend_pid() AND l.granted
			  AND (l.mode <> 'AccessShareLock' OR a.xact_start < clock_timestamp() - interval '1 second'))`, table).Scan(&full, &published, &free)
	if err != nil || !full {
		return err
	}
	if !published {
		r.log.Debug("outbox partition holds rows not yet published", "partition", table)
		return nil
	}
	if !free {
		r.log.Debug("outbox partition busy: truncating it later", "partition", table)
		return nil
	}
	done := false
	err = pgx.BeginFunc(ctx, r.cfg.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", rotateLockTimeout.Milliseconds())); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "LOCK TABLE "+table+" IN ACCESS EXCLUSIVE MODE"); err != nil {
			return err
		}
		// Under the lock no transaction that wrote into the partition is
		// still open: this check sees every row it will ever hold, until a
		// writer that drew its id before now inserts after the TRUNCATE
		// (that row is pending, and is read from the partition later).
		var pending bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (`+outbox.PendingIn(table)+`)`).Scan(&pending); err != nil || pending {
			return err
		}
		if _, err := tx.Exec(ctx, "TRUNCATE "+table); err != nil {
			return err
		}
		done = true
		return nil
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "55P03" { // lock_not_available
		r.log.Debug("outbox partition busy: truncating it later", "partition", table)
		return nil
	}
	if err != nil {
		return fmt.Errorf("truncate %s: %w", table, err)
	}
	if done {
		r.m.rotations.Inc()
		r.log.Debug("truncated a published outbox partition", "partition", table)
	}
	return nil
}
