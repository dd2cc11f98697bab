package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ecst-io/ecst/internal/pglock"
	"github.com/ecst-io/ecst/outbox"
	"github.com/jackc/pgx/v5"
)

// acquire waits for the unit's leader lock on a dedicated connection. In
// drain mode it gives up, reporting drained, once another leader has
// published what the drain is for.
func (r *Relay) acquire(ctx context.Context, u unit) (*pgx.Conn, bool, error) {
	conn, err := pgx.ConnectConfig(ctx, r.lockCfg)
	if err != nil {
		return nil, false, fmt.Errorf("connect for the leader lock: %w", err)
	}
	tick := min(time.Second, r.cfg.LeaseTimeout/3)
	for tries := 0; ; tries++ {
		var got bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1, $2)", pglock.ECST, u.lockObj()).Scan(&got); err != nil {
			conn.Close(context.Background())
			return nil, false, fmt.Errorf("take the leader lock: %w", err)
		}
		if got {
			return conn, false, nil
		}
		if tries == 0 {
			r.log.Info("standing by: another relay leads the shard", "shard", u.String())
		}
		if r.cfg.Drain && r.drainedByOther(ctx, conn, u) {
			conn.Close(context.Background())
			return nil, true, nil
		}
		select {
		case <-ctx.Done():
			conn.Close(context.Background())
			return nil, false, ctx.Err()
		case <-time.After(tick):
		}
	}
}

// drainedByOther reports, for a standby in drain mode, whether the leader
// has published what the drain is for.
func (r *Relay) drainedByOther(ctx context.Context, conn *pgx.Conn, u unit) bool {
	if u.wal() {
		var done bool
		err := conn.QueryRow(ctx, "SELECT confirmed_flush_lsn >= $2 FROM pg_replication_slots WHERE slot_name = $1", r.slot, r.drainTarget).Scan(&done)
		return err == nil && done
	}
	n, _, err := outbox.PendingShard(ctx, conn, int(u))
	return err == nil && n == 0
}

// lease is the leader's lock session. pgx connections are not safe for
// concurrent use, and both the heartbeat and the term use it.
type lease struct {
	mu   sync.Mutex
	conn *pgx.Conn
}

// check proves the session, and so the lock, is still held.
func (l *lease) check(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.conn.Exec(ctx, "SELECT 1"); err != nil {
		return fmt.Errorf("%w: %v", errLeaseLost, err)
	}
	return nil
}

// termCause is why a term ended: nil when the relay was told to stop (its
// context ended), else the cause (a lost lease, a broken stream, a fatal
// error of the WAL source).
func termCause(term context.Context) error {
	c := context.Cause(term)
	if errors.Is(c, context.Canceled) || errors.Is(c, context.DeadlineExceeded) {
		return nil
	}
	return c
}

// termFailed is what a term that could not start returns: the term's
// cause if it ended, a fatal error as it is, and any other (the database
// unreachable, say) as errTermFailed, after which a new term is tried.
func termFailed(term context.Context, err error) error {
	if term.Err() != nil {
		return termCause(term)
	}
	if isFatal(err) {
		return err
	}
	return fmt.Errorf("%w: %w", errTermFailed, err)
}

// heartbeat keeps the leader's session busy, and ends the term when the
// session is gone (the database restarted, or idle_session_timeout fired
// while this process was paused).
func (r *Relay) heartbeat(term context.Context, ls *lease, endTerm context.CancelCauseFunc) {
	every := r.cfg.LeaseTimeout / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-term.Done():
			return
		case <-t.C:
			hctx, cancel := context.WithTimeout(term, every)
			err := ls.check(hctx)
			cancel()
			if err != nil && term.Err() == nil {
				endTerm(err)
				return
			}
		}
	}
}
