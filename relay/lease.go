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

// acquire waits for the shard's leader lock on a dedicated connection. In
// drain mode it gives up, reporting drained, once another leader has
// emptied the shard.
func (r *Relay) acquire(ctx context.Context, shard int) (*pgx.Conn, bool, error) {
	conn, err := pgx.ConnectConfig(ctx, r.lockCfg)
	if err != nil {
		return nil, false, fmt.Errorf("connect for the leader lock: %w", err)
	}
	tick := min(time.Second, r.cfg.LeaseTimeout/3)
	for tries := 0; ; tries++ {
		var got bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1, $2)", pglock.ECST, pglock.ObjRelayShard+int32(shard)).Scan(&got); err != nil {
			conn.Close(context.Background())
			return nil, false, fmt.Errorf("take the leader lock: %w", err)
		}
		if got {
			return conn, false, nil
		}
		if tries == 0 {
			r.log.Info("standing by: another relay leads the shard", "shard", shard)
		}
		if r.cfg.Drain {
			if n, _, err := outbox.PendingShard(ctx, conn, shard); err == nil && n == 0 {
				conn.Close(context.Background())
				return nil, true, nil
			}
		}
		select {
		case <-ctx.Done():
			conn.Close(context.Background())
			return nil, false, ctx.Err()
		case <-time.After(tick):
		}
	}
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

func leaseOrNil(term context.Context) error {
	if c := context.Cause(term); errors.Is(c, errLeaseLost) {
		return c
	}
	return nil
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
