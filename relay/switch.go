package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/outbox"
)

// SwitchOptions configure Switch.
type SwitchOptions struct {
	// Service names the slot (SlotName).
	Service string
	// DryRun reports what the switch would do and changes nothing.
	DryRun bool
	// Drain, if set, publishes what the transport switched from still
	// holds (`ecst outbox switch --drain` runs that transport's relay in
	// drain mode). Without it, Switch waits up to Wait for a running relay
	// of that transport to publish it.
	Drain func(ctx context.Context, from outbox.Transport) error
	// Wait bounds the wait for the old transport's relay (default 10m).
	Wait time.Duration
	// Logger says what the switch is doing.
	Logger *slog.Logger

	// noWait, a test hook, opens the new transport without waiting for the
	// old one's events to be published: the reordering the wait prevents.
	noWait bool
	// keepSlot, a test hook, leaves the slot of a switch to the table
	// transport behind.
	keepSlot bool
}

// SwitchResult says what Switch did (or, for a dry run, would do).
type SwitchResult struct {
	// From is the transport the database ran, To the one it runs after.
	From outbox.Transport
	To   outbox.Transport // see From
	// Changed is false when the database already ran To (a switch to the
	// table transport then only finishes: it drops a slot left behind).
	Changed bool
	// Slot is the WAL transport's slot; SlotCreated and SlotDropped say
	// what happened to it.
	Slot        string
	SlotCreated bool // see Slot
	SlotDropped bool // see Slot
	// PendingRows is whether the outbox table held rows not yet published
	// when the database switched to the WAL transport.
	PendingRows bool
	// SwitchLSN is the WAL position of a switch to the table transport.
	SwitchLSN string
}

// Switch moves the database to another outbox transport, with nothing lost
// or reordered. It closes the old transport to writers, waits until
// everything written to it is published, and only then opens the new one:
//
//   - to wal: it checks wal_level, creates the publication and the slot,
//     then adds to ecst.outbox the constraint that fails table writers'
//     inserts (its lock waits for every table writer in flight). Once the
//     outbox table's rows are published (by the table relay, or Drain), it
//     opens the WAL (a row in ecst.wal_enabled).
//   - to table: it removes the row of ecst.wal_enabled (its lock waits for
//     every WAL writer in flight: each holds a share lock on it until it
//     commits) and records the WAL position of that moment, which every
//     event in the WAL is before. Once the slot has confirmed it (the WAL
//     relay, or Drain), it opens the table (drops the constraint), and drops
//     the slot: a slot left behind would keep WAL.
//
// Between the two steps no writer is let in: the wait is the relay's
// catch-up, usually well under a second. If the wait fails, the switch is
// undone and the old transport opened again. A switch interrupted (its
// process killed) is finished by running it again. Writers and relays must
// then run the new transport (outbox.transport): a writer of the old one
// fails with outbox.ErrTransportMismatch and writes nothing.
func Switch(ctx context.Context, pool *pgxpool.Pool, to outbox.Transport, opts SwitchOptions) (*SwitchResult, error) {
	if to != outbox.TransportWAL && to != outbox.TransportTable {
		return nil, fmt.Errorf("transport %q is not table or wal", to)
	}
	if opts.Wait <= 0 {
		opts.Wait = 10 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	st, err := readSwitch(ctx, pool)
	if err != nil {
		return nil, err
	}
	res := &SwitchResult{From: st.transport, To: to, Changed: st.transport != to || !st.finished, Slot: SlotName(opts.Service)}
	if !st.finished && st.transport != to {
		return res, fmt.Errorf("a switch to the %s transport is in progress (started %s): finish it with `ecst outbox switch %s` first", st.transport, st.started.Format(time.RFC3339), st.transport)
	}
	if to == outbox.TransportWAL {
		return res, switchToWAL(ctx, pool, res, st, opts)
	}
	return res, switchToTable(ctx, pool, res, st, opts)
}

// switchState is the database's last switch.
type switchState struct {
	id        int64
	transport outbox.Transport
	finished  bool
	started   time.Time
}

func readSwitch(ctx context.Context, q outbox.Querier) (switchState, error) {
	st := switchState{transport: outbox.TransportTable, finished: true}
	var t string
	err := q.QueryRow(ctx, "SELECT id, transport, finished_at IS NOT NULL, started_at FROM ecst.transport_switches ORDER BY id DESC LIMIT 1").
		Scan(&st.id, &t, &st.finished, &st.started)
	if errors.Is(err, pgx.ErrNoRows) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("read ecst.transport_switches: %w", err)
	}
	st.transport = outbox.Transport(t)
	return st, nil
}

func switchToWAL(ctx context.Context, pool *pgxpool.Pool, res *SwitchResult, st switchState, opts SwitchOptions) error {
	if err := CheckWALLevel(ctx, pool); err != nil {
		return err
	}
	pending, err := TablePending(ctx, pool)
	if err != nil {
		return err
	}
	res.PendingRows = pending
	if opts.DryRun {
		return nil
	}
	if res.SlotCreated, err = EnsureSlot(ctx, pool, opts.Service); err != nil || !res.Changed {
		return err
	}
	id := st.id
	if st.finished {
		err = flip(ctx, pool, opts.Logger, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `ALTER TABLE ecst.outbox ADD CONSTRAINT `+outbox.TransportConstraint+` CHECK (false) NOT VALID`)
			if err != nil {
				return err
			}
			return tx.QueryRow(ctx, `INSERT INTO ecst.transport_switches (transport) VALUES ('wal') RETURNING id`).Scan(&id)
		})
		if err != nil {
			return err
		}
		opts.Logger.Info("closed the outbox table to writers: waiting for its rows to be published before the WAL opens")
	}
	err = waitOld(ctx, opts, outbox.TransportTable, "the table relay to publish the outbox table's rows", func() (bool, error) {
		p, err := TablePending(ctx, pool)
		return !p, err
	})
	if err != nil {
		if uerr := undo(ctx, pool, id, `ALTER TABLE ecst.outbox DROP CONSTRAINT IF EXISTS `+outbox.TransportConstraint); uerr != nil {
			return fmt.Errorf("%w; and undoing the switch failed: %w (run the switch again)", err, uerr)
		}
		return fmt.Errorf("%w: the switch is undone, the database runs the table transport; run a table relay (`ecst relay` with outbox.transport: table), or switch with --drain", err)
	}
	_, err = pool.Exec(ctx, `INSERT INTO ecst.wal_enabled DEFAULT VALUES ON CONFLICT DO NOTHING;
		UPDATE ecst.transport_switches SET finished_at = now() WHERE id = `+strconv.FormatInt(id, 10))
	if err != nil {
		return fmt.Errorf("open the WAL transport: %w (run the switch again)", err)
	}
	opts.Logger.Info("the database runs the WAL transport", "slot", res.Slot)
	return nil
}

func switchToTable(ctx context.Context, pool *pgxpool.Pool, res *SwitchResult, st switchState, opts SwitchOptions) error {
	r := &Relay{cfg: Config{Pool: pool, Service: opts.Service}, slot: res.Slot}
	if opts.DryRun {
		return nil
	}
	id := st.id
	if res.Changed && st.finished {
		err := flip(ctx, pool, opts.Logger, func(tx pgx.Tx) error {
			// Once the lock is ours, every WAL writer that read
			// ecst.wal_enabled has ended: the position read next is after
			// every event in the WAL.
			_, err := tx.Exec(ctx, `LOCK TABLE ecst.wal_enabled IN ACCESS EXCLUSIVE MODE; DELETE FROM ecst.wal_enabled`)
			if err != nil {
				return err
			}
			return tx.QueryRow(ctx, `INSERT INTO ecst.transport_switches (transport, wal_lsn) VALUES ('table', pg_current_wal_insert_lsn()) RETURNING id`).Scan(&id)
		})
		if err != nil {
			return err
		}
		opts.Logger.Info("closed the WAL to writers: waiting for the slot's events to be published before the outbox table opens")
	}
	at, err := switchLSN(ctx, pool)
	if err != nil {
		return err
	}
	res.SwitchLSN = at.String()
	s, err := readSlotQ(ctx, pool, res.Slot)
	if err != nil {
		return err
	}
	switch {
	case !s.exists && s.recorded:
		opts.Logger.Warn("the slot is lost: events of the WAL transport it had not published are not in it; republish every entity (`ecst republish ENTITY --all --tombstone-orphans`)", "slot", res.Slot)
		if _, err := pool.Exec(ctx, "UPDATE ecst.wal_slots SET dropped_at = now(), dropped_why = 'lost; found so by a switch to the table transport' WHERE slot_name = $1 AND dropped_at IS NULL", res.Slot); err != nil {
			return err
		}
	case s.exists:
		// A heartbeat commits after the switch: the stream passes it even
		// when nothing else is written.
		if err := r.heartbeatOnce(ctx); err != nil {
			return fmt.Errorf("write a WAL heartbeat: %w", err)
		}
		err := waitOld(ctx, opts, outbox.TransportWAL, "the WAL relay to publish what slot "+res.Slot+" holds", func() (bool, error) {
			b, err := r.walBehindSwitch(ctx)
			return !b, err
		})
		if err != nil {
			if id != 0 && res.Changed {
				if uerr := undo(ctx, pool, id, `INSERT INTO ecst.wal_enabled DEFAULT VALUES ON CONFLICT DO NOTHING`); uerr != nil {
					return fmt.Errorf("%w; and undoing the switch failed: %w (run the switch again)", err, uerr)
				}
			}
			return fmt.Errorf("%w: the switch is undone, the database runs the WAL transport; run a WAL relay (`ecst relay` with outbox.transport: wal), or switch with --drain", err)
		}
	}
	if id != 0 {
		_, err = pool.Exec(ctx, `ALTER TABLE ecst.outbox DROP CONSTRAINT IF EXISTS `+outbox.TransportConstraint+`;
			UPDATE ecst.transport_switches SET finished_at = now() WHERE id = `+strconv.FormatInt(id, 10)+` AND finished_at IS NULL`)
		if err != nil {
			return fmt.Errorf("open the table transport: %w (run the switch again)", err)
		}
	}
	opts.Logger.Info("the database runs the table transport")
	if s.exists && !opts.keepSlot {
		if res.SlotDropped, err = dropSlot(ctx, pool, res.Slot, "switched to the table transport"); err != nil {
			return err
		}
		opts.Logger.Info("dropped the WAL transport's replication slot: it no longer keeps WAL", "slot", res.Slot)
	}
	return nil
}

// waitOld waits until the old transport's events are published: by Drain,
// or by a running relay within Wait.
func waitOld(ctx context.Context, opts SwitchOptions, old outbox.Transport, what string, done func() (bool, error)) error {
	if opts.noWait {
		return nil
	}
	if opts.Drain != nil {
		if ok, err := done(); err != nil || ok {
			return err
		}
		if err := opts.Drain(ctx, old); err != nil {
			return err
		}
	}
	return wait.Until(ctx, opts.Wait, 100*time.Millisecond, what, done)
}

// undo reopens the old transport after a switch that could not finish.
func undo(ctx context.Context, pool *pgxpool.Pool, id int64, reopen string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, reopen); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "DELETE FROM ecst.transport_switches WHERE id = $1", id)
		return err
	})
}

// flip runs the switch's transaction under a short lock_timeout, retried:
// the lock it needs waits for the writers in flight, and a long wait would
// hold up every writer queued behind it.
func flip(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger, fn func(pgx.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '2s'"); err != nil {
				return err
			}
			return fn(tx)
		})
		var pe *pgconn.PgError
		if err == nil || !errors.As(err, &pe) || pe.Code != "55P03" || attempt == 30 { // lock_not_available
			if err != nil {
				return fmt.Errorf("switch the outbox transport: %w", err)
			}
			return nil
		}
		log.Warn("the switch waited 2s for writers in flight; trying again", "attempt", attempt)
		if !wait.Sleep(ctx, 500*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// SlotConfirmed is the position the slot has confirmed (the WAL relay has
// published every event before it), and whether the slot exists.
func SlotConfirmed(ctx context.Context, q outbox.Querier, service string) (pglogrepl.LSN, bool, error) {
	var lsn *string
	err := q.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", SlotName(service)).Scan(&lsn)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil || lsn == nil {
		return 0, err == nil, err
	}
	l, err := pglogrepl.ParseLSN(*lsn)
	return l, true, err
}

// LiveSlot is the WAL transport's slot this database streams (the live row
// of ecst.wal_slots) and the position it has confirmed: the WAL relay has
// published every event that committed before it. A recorded slot that
// PostgreSQL no longer has is ErrSlotLost.
func LiveSlot(ctx context.Context, q outbox.Querier) (slot string, confirmed pglogrepl.LSN, err error) {
	var lsn *string
	var exists bool
	err = q.QueryRow(ctx, `SELECT w.slot_name, s.slot_name IS NOT NULL, s.confirmed_flush_lsn::text
		FROM ecst.wal_slots w LEFT JOIN pg_replication_slots s ON s.slot_name = w.slot_name
		WHERE w.dropped_at IS NULL ORDER BY w.id DESC LIMIT 1`).Scan(&slot, &exists, &lsn)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", 0, fmt.Errorf("%w: this database has no slot of the WAL transport: create it with `ecst outbox switch wal`", ErrSlotLost)
	}
	if err != nil {
		return "", 0, fmt.Errorf("read the WAL transport's slot: %w", err)
	}
	if !exists {
		return slot, 0, fmt.Errorf("%w: slot %s is recorded in ecst.wal_slots, and PostgreSQL no longer has it: %s", ErrSlotLost, slot, RecoverHint)
	}
	if lsn != nil {
		confirmed, err = pglogrepl.ParseLSN(*lsn)
	}
	return slot, confirmed, err
}
