package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/outbox"
)

// The relay and the database must run the same transport. Around a switch
// (`ecst outbox switch`), the relay of the transport switched from keeps
// publishing what it still holds, and the relay of the transport switched
// to waits until it has: every event written before the switch reaches
// Kafka before any written after. docs/operations.md ("Switching
// transports") has the procedure.

func (t *tableSource) close() {}

// fatalError is an error no new term can cure: the relay stops with it.
type fatalError struct{ error }

func (f fatalError) Unwrap() error { return f.error }

func fatalf(format string, args ...any) error { return fatalError{fmt.Errorf(format, args...)} }

// isFatal reports an error that stops the relay.
func isFatal(err error) bool {
	var f fatalError
	return errors.As(err, &f)
}

// checkMode refuses, at start, a relay whose transport the database does
// not run and which has nothing left to publish from before a switch.
func (r *Relay) checkMode(ctx context.Context) error {
	db, err := outbox.DatabaseTransport(ctx, r.cfg.Pool)
	if err != nil {
		return err
	}
	if db == r.cfg.Transport {
		return nil
	}
	left, err := r.leftFromSwitch(ctx)
	if err != nil || left {
		return err
	}
	return r.mismatch(db)
}

func (r *Relay) mismatch(db outbox.Transport) error {
	return fatalf("%w: the relay runs outbox.transport %s, the database the %s transport, and nothing of the %s transport is left to publish: set outbox.transport: %s (ECST_OUTBOX_TRANSPORT=%s), or move the database with `ecst outbox switch %s`",
		outbox.ErrTransportMismatch, r.cfg.Transport, db, r.cfg.Transport, db, db, r.cfg.Transport)
}

// leftFromSwitch reports whether the relay's transport, which the database
// no longer runs, still holds events: rows in the table, or WAL the slot has
// not confirmed up to the switch.
func (r *Relay) leftFromSwitch(ctx context.Context) (bool, error) {
	if r.cfg.Transport == outbox.TransportTable {
		return TablePending(ctx, r.cfg.Pool)
	}
	return r.walBehindSwitch(ctx)
}

// TablePending reports whether the outbox table holds rows not yet
// published: pending rows, past their shard's cursor (published rows stay
// in the table until their partition is truncated).
func TablePending(ctx context.Context, q outbox.Querier) (bool, error) {
	n, err := outbox.PendingCount(ctx, q, 1)
	if err != nil {
		return false, fmt.Errorf("read the outbox table's backlog: %w", err)
	}
	return n > 0, nil
}

// walBehindSwitch reports whether, after a switch to the table transport,
// the slot has not yet confirmed the position of the switch: events written
// to the WAL before it may still be unpublished. A lost slot holds nothing
// (its events need a republish).
func (r *Relay) walBehindSwitch(ctx context.Context) (bool, error) {
	at, err := switchLSN(ctx, r.cfg.Pool)
	if err != nil || at == 0 {
		return false, err
	}
	var behind bool
	err = r.cfg.Pool.QueryRow(ctx, `SELECT confirmed_flush_lsn < $2::text::pg_lsn FROM pg_replication_slots s
		WHERE slot_name = $1 AND EXISTS (SELECT FROM ecst.wal_slots w WHERE w.slot_name = s.slot_name AND w.dropped_at IS NULL)`,
		r.slot, at.String()).Scan(&behind)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read slot %s: %w", r.slot, err)
	}
	return behind, nil
}

// switchLSN is the WAL position of the last switch, if it was to the table
// transport (0 otherwise).
func switchLSN(ctx context.Context, q outbox.Querier) (pglogrepl.LSN, error) {
	var transport string
	var lsn *string
	err := q.QueryRow(ctx, "SELECT transport, wal_lsn::text FROM ecst.transport_switches ORDER BY id DESC LIMIT 1").Scan(&transport, &lsn)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read ecst.transport_switches: %w", err)
	}
	if transport != string(outbox.TransportTable) || lsn == nil {
		return 0, nil
	}
	return pglogrepl.ParseLSN(*lsn)
}

// prepareTerm runs at the start of a term, before anything is published:
// it refuses a transport the database does not run (unless the relay still
// has events of it to publish), and waits while the other transport still
// holds events written before a switch.
func (r *Relay) prepareTerm(term context.Context, u unit, log *slog.Logger) error {
	db, err := outbox.DatabaseTransport(term, r.cfg.Pool)
	if err != nil {
		return err
	}
	if db != r.cfg.Transport {
		left, err := r.leftFromSwitch(term)
		if err != nil {
			return err
		}
		if !left {
			return r.mismatch(db)
		}
		log.Warn("the database runs the other transport: publishing what this one holds from before the switch", "database", db, "relay", r.cfg.Transport)
		return nil
	}
	var other func(context.Context) (bool, error)
	var what string
	if u.wal() {
		other = func(ctx context.Context) (bool, error) { return TablePending(ctx, r.cfg.Pool) }
		what = "the outbox table holds rows from before the switch to the WAL transport: waiting for the table relay to publish them (`ecst relay` with outbox.transport: table)"
	} else {
		other = r.walBehindSwitch
		what = "the slot holds events from before the switch to the table transport: waiting for the WAL relay to publish them (`ecst relay` with outbox.transport: wal)"
	}
	behind, err := other(term)
	if err != nil || !behind {
		return err
	}
	log.Warn(what)
	r.m.switchWait.WithLabelValues(u.String()).Set(1)
	defer r.m.switchWait.WithLabelValues(u.String()).Set(0)
	for behind {
		if !wait.Sleep(term, 200*time.Millisecond) {
			return term.Err()
		}
		if behind, err = other(term); err != nil {
			log.Warn("read the other transport's backlog; retrying", "err", err)
			behind = true
		}
	}
	log.Info("the other transport's relay has published what it held; publishing")
	return nil
}
