package relay

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ecst-io/ecst/internal/pglock"
	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/outbox"
)

// Publication is the publication the WAL relay names when it streams the
// slot: pgoutput needs one. It publishes no table; logical decoding
// messages are not filtered by publications.
const Publication = "ecst_messages"

// SlotName is the replication slot of a service's WAL relay: ecst_ and the
// service, in the characters a slot name allows ([a-z0-9_]), at most 63
// bytes (a long name is cut and given a hash of the whole).
func SlotName(service string) string {
	var b strings.Builder
	b.WriteString("ecst_")
	for _, c := range strings.ToLower(service) {
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') {
			b.WriteRune(c)
		} else {
			b.WriteByte('_')
		}
	}
	s := b.String()
	if len(s) <= 63 {
		return s
	}
	h := fnv.New32a()
	h.Write([]byte(service))
	return fmt.Sprintf("%s_%08x", s[:54], h.Sum32())
}

// Errors of the WAL transport's slot. Each message says how to recover.
var (
	// ErrWALLevel: the server's wal_level is not logical.
	ErrWALLevel = errors.New("the WAL transport needs wal_level = logical")
	// ErrSlotLost: ecst created the slot, and PostgreSQL no longer has it
	// (a failover to a standby without it, or someone dropped it). Events
	// written since it went are not in any slot.
	ErrSlotLost = errors.New("the WAL transport's replication slot is LOST")
	// ErrSlotInvalidated: PostgreSQL invalidated the slot, having removed
	// WAL it still needed (max_slot_wal_keep_size): events in that WAL can
	// no longer be read.
	ErrSlotInvalidated = errors.New("the WAL transport's replication slot was INVALIDATED")
)

// RecoverHint is the recovery of a lost or invalidated slot.
const RecoverHint = "events written to the WAL since may never reach Kafka. Recover: `ecst relay --recover-slot` drops the dead slot, " +
	"creates a new one, then runs `ecst republish --all --tombstone-orphans` for every entity (see docs/operations.md, \"Slot safety\")"

func (r *Relay) slotLost() error {
	return fatalf("%w: slot %s is recorded in ecst.wal_slots, and PostgreSQL no longer has it (a failover to a standby without the slot, or it was dropped): %s", ErrSlotLost, r.slot, RecoverHint)
}

func (r *Relay) slotInvalidated(detail string) error {
	return fatalf("%w: slot %s (%s; max_slot_wal_keep_size let PostgreSQL remove WAL the slot still needed): %s", ErrSlotInvalidated, r.slot, detail, RecoverHint)
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

// slotRow is the slot as pg_replication_slots shows it.
type slotRow struct {
	exists    bool
	database  string
	walStatus string
	confirmed pglogrepl.LSN
	activePID *int32
	recorded  bool // a live row of ecst.wal_slots names it
	others    []string
}

type queryRower interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func readSlotQ(ctx context.Context, q queryRower, slot string) (slotRow, error) {
	var s slotRow
	var confirmed *string
	err := q.QueryRow(ctx, `SELECT database, coalesce(wal_status, ''), confirmed_flush_lsn::text, active_pid
		FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&s.database, &s.walStatus, &confirmed, &s.activePID)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return s, fmt.Errorf("read slot %s from pg_replication_slots: %w", slot, err)
	default:
		s.exists = true
		if confirmed != nil {
			if s.confirmed, err = pglogrepl.ParseLSN(*confirmed); err != nil {
				return s, err
			}
		}
	}
	rows, err := q.Query(ctx, `SELECT slot_name FROM ecst.wal_slots WHERE dropped_at IS NULL ORDER BY id`)
	if err != nil {
		return s, fmt.Errorf("read ecst.wal_slots: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return s, fmt.Errorf("read ecst.wal_slots: %w", err)
	}
	for _, n := range names {
		if n == slot {
			s.recorded = true
		} else {
			s.others = append(s.others, n)
		}
	}
	return s, nil
}

// slotState is what a WAL term starts from.
type slotState struct {
	confirmed pglogrepl.LSN
}

// checkSlot checks the relay's slot before it streams: present, of this
// database, not invalidated. A slot that ecst recorded and PostgreSQL no
// longer has is ErrSlotLost.
func (r *Relay) checkSlot(ctx context.Context) (slotState, error) {
	var db string
	if err := r.cfg.Pool.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		return slotState{}, err
	}
	s, err := readSlotQ(ctx, r.cfg.Pool, r.slot)
	if err != nil {
		return slotState{}, err
	}
	switch {
	case s.exists && s.database != db:
		return slotState{}, fatalf("slot %s belongs to database %s, not %s: two databases of one PostgreSQL server run service %q; give each its own service name", r.slot, s.database, db, r.cfg.Service)
	case s.exists && s.walStatus == "lost":
		return slotState{}, r.slotInvalidated("pg_replication_slots shows wal_status lost")
	case s.exists:
		return slotState{confirmed: s.confirmed}, nil
	case s.recorded:
		return slotState{}, r.slotLost()
	case len(s.others) > 0:
		return slotState{}, fatalf("this database's WAL transport streams slot %s, and this relay's (service %q) would be %s: run the relay with the service that created it, or create this one with `ecst outbox switch wal`", strings.Join(s.others, ", "), r.cfg.Service, r.slot)
	}
	return slotState{}, fatalf("%w: no replication slot %s: create it with `ecst outbox switch wal` (or `ecst migrate` with outbox.transport: wal)", ErrSlotLost, r.slot)
}

// CheckWALLevel checks that the server can decode logical replication.
func CheckWALLevel(ctx context.Context, q outbox.Querier) error {
	var level string
	var slots, senders int
	err := q.QueryRow(ctx, `SELECT current_setting('wal_level'), current_setting('max_replication_slots')::int, current_setting('max_wal_senders')::int`).Scan(&level, &slots, &senders)
	if err != nil {
		return fmt.Errorf("read wal_level: %w", err)
	}
	if level != "logical" {
		return fmt.Errorf("%w, and the server runs wal_level = %s: run ALTER SYSTEM SET wal_level = logical (and make sure max_replication_slots and max_wal_senders leave one free for ecst), then restart PostgreSQL; or keep outbox.transport: table", ErrWALLevel, level)
	}
	if slots < 1 || senders < 1 {
		return fmt.Errorf("%w: max_replication_slots is %d and max_wal_senders %d; the WAL transport needs one of each: raise them with ALTER SYSTEM and restart PostgreSQL", ErrWALLevel, slots, senders)
	}
	return nil
}

// adminLock serializes changes to the WAL transport's set-up across
// processes, on a connection of its own.
func adminLock(ctx context.Context, pool *pgxpool.Pool) (release func(), err error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1, $2)", pglock.ECST, pglock.ObjWALAdmin); err != nil {
		conn.Release()
		return nil, fmt.Errorf("take the WAL transport's admin lock: %w", err)
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(ctx, "SELECT pg_advisory_unlock($1, $2)", pglock.ECST, pglock.ObjWALAdmin); err != nil {
			conn.Conn().Close(ctx) //nolint:errcheck // closing ends the session and so the lock
		}
		conn.Release()
	}, nil
}

// EnsureSlot makes the WAL transport's publication and the service's slot,
// and records the slot in ecst.wal_slots. It returns whether it created the
// slot. A slot that was recorded and is gone is not made again: that is
// ErrSlotLost, which RecoverSlot deals with. On PostgreSQL 17 and later the
// slot is a failover slot (synchronized to standbys with
// sync_replication_slots = on; docs/operations.md).
func EnsureSlot(ctx context.Context, pool *pgxpool.Pool, service string) (created bool, err error) {
	if err := CheckWALLevel(ctx, pool); err != nil {
		return false, err
	}
	release, err := adminLock(ctx, pool)
	if err != nil {
		return false, err
	}
	defer release()
	if err := ensurePublication(ctx, pool); err != nil {
		return false, err
	}
	r := &Relay{cfg: Config{Pool: pool, Service: service}, slot: SlotName(service)}
	s, err := readSlotQ(ctx, pool, r.slot)
	if err != nil {
		return false, err
	}
	if !s.exists && !s.recorded && len(s.others) == 0 {
		return true, createSlot(ctx, pool, r.slot, service)
	}
	if _, err := r.checkSlot(ctx); err != nil {
		return false, err
	}
	if !s.recorded {
		// A slot made by hand, or before ecst recorded slots: from now on
		// its loss is known.
		_, err = pool.Exec(ctx, `INSERT INTO ecst.wal_slots (slot_name, service, created_lsn)
			SELECT $1, $2, coalesce(confirmed_flush_lsn, '0/0') FROM pg_replication_slots WHERE slot_name = $1`, r.slot, service)
	}
	return false, err
}

func ensurePublication(ctx context.Context, pool *pgxpool.Pool) error {
	var exists bool
	if err := pool.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_publication WHERE pubname = $1)", Publication).Scan(&exists); err != nil {
		return fmt.Errorf("read pg_publication: %w", err)
	}
	if exists {
		return nil
	}
	if _, err := pool.Exec(ctx, "CREATE PUBLICATION "+Publication); err != nil {
		return fmt.Errorf("create publication %s (the role needs CREATE on the database): %w", Publication, err)
	}
	return nil
}

// createSlot creates and records a slot. PostgreSQL waits for the
// transactions running at that moment to end before it returns.
func createSlot(ctx context.Context, pool *pgxpool.Pool, slot, service string) error {
	var version int
	if err := pool.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		return err
	}
	q := "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')"
	if version >= 170000 {
		q = "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput', failover => true)"
	}
	var lsn string
	if err := pool.QueryRow(ctx, q, slot).Scan(&lsn); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "42501" {
			return fmt.Errorf("create replication slot %s: %w (the role needs the REPLICATION attribute: ALTER ROLE ... WITH REPLICATION)", slot, err)
		}
		return fmt.Errorf("create replication slot %s: %w", slot, err)
	}
	if _, err := pool.Exec(ctx, "INSERT INTO ecst.wal_slots (slot_name, service, created_lsn) VALUES ($1, $2, $3::pg_lsn)", slot, service, lsn); err != nil {
		return fmt.Errorf("record replication slot %s: %w", slot, err)
	}
	return nil
}

// dropSlot marks the slot dropped in ecst.wal_slots (so that it does not
// count as lost), ends a WAL sender streaming it, and drops it.
func dropSlot(ctx context.Context, pool *pgxpool.Pool, slot, why string) (dropped bool, err error) {
	if _, err := pool.Exec(ctx, "UPDATE ecst.wal_slots SET dropped_at = now(), dropped_why = $2 WHERE slot_name = $1 AND dropped_at IS NULL", slot, why); err != nil {
		return false, fmt.Errorf("record slot %s dropped: %w", slot, err)
	}
	err = wait.Until(ctx, 30*time.Second, 50*time.Millisecond, "slot "+slot+" to be released", func() (bool, error) {
		var exists bool
		var pid *int32
		err := pool.QueryRow(ctx, "SELECT true, active_pid FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&exists, &pid)
		if errors.Is(err, pgx.ErrNoRows) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		if pid != nil {
			_, err := pool.Exec(ctx, "SELECT pg_terminate_backend($1)", *pid)
			return false, err
		}
		_, err = pool.Exec(ctx, "SELECT pg_drop_replication_slot($1)", slot)
		var pe *pgconn.PgError
		if errors.As(err, &pe) && (pe.Code == "55006" || pe.Code == "42704") { // in use again; already gone
			return pe.Code == "42704", nil
		}
		dropped = err == nil
		return err == nil, err
	})
	if err != nil {
		return false, fmt.Errorf("drop replication slot %s: %w", slot, err)
	}
	return dropped, nil
}

// RecoverSlot replaces a lost or invalidated slot: it drops what is left of
// it, records it dropped, and creates a new one, which streams from now
// on. Events written between the old slot's last confirmed position and now
// are not in it: the caller republishes every entity (`ecst relay
// --recover-slot` does). It refuses a healthy slot.
func RecoverSlot(ctx context.Context, pool *pgxpool.Pool, service string) error {
	if err := CheckWALLevel(ctx, pool); err != nil {
		return err
	}
	release, err := adminLock(ctx, pool)
	if err != nil {
		return err
	}
	defer release()
	r := &Relay{cfg: Config{Pool: pool, Service: service}, slot: SlotName(service)}
	_, err = r.checkSlot(ctx)
	switch {
	case err == nil:
		return fmt.Errorf("slot %s is healthy: there is nothing to recover", r.slot)
	case errors.Is(err, ErrSlotLost), errors.Is(err, ErrSlotInvalidated):
	default:
		return err
	}
	if _, err := dropSlot(ctx, pool, r.slot, "recovered: "+err.Error()); err != nil {
		return err
	}
	if err := ensurePublication(ctx, pool); err != nil {
		return err
	}
	return createSlot(ctx, pool, r.slot, service)
}

// SlotStatus is the WAL transport's slot as last sampled.
type SlotStatus struct {
	// Slot is the slot's name.
	Slot string
	// Exists is false when PostgreSQL does not have the slot (Err says
	// whether it is lost).
	Exists bool
	// WALStatus is pg_replication_slots.wal_status: reserved, extended,
	// unreserved or lost.
	WALStatus string
	// LagBytes is the WAL written since the slot's confirmed position;
	// RetainedBytes the WAL it keeps PostgreSQL from removing.
	LagBytes, RetainedBytes int64
	// SafeWALBytes is how much more WAL may be written before
	// max_slot_wal_keep_size invalidates the slot (-1: no limit).
	SafeWALBytes int64
	// LagSeconds is the age of the oldest event not yet in Kafka, or of
	// the newest heartbeat through (the leader only; 0 elsewhere).
	LagSeconds float64
	// Err is ErrSlotLost or ErrSlotInvalidated, with the recovery.
	Err error
}

// Health is the slot's status as last sampled (every 5s), or nil when the
// relay has no slot to watch.
func (r *Relay) Health() *SlotStatus { return r.health.Load() }

// sampleSlot reads the slot's lag and retention.
func (r *Relay) sampleSlot(ctx context.Context) (*SlotStatus, error) {
	st := &SlotStatus{Slot: r.slot, SafeWALBytes: -1}
	var safe *int64
	err := r.cfg.Pool.QueryRow(ctx, `SELECT coalesce(wal_status, ''),
			coalesce((pg_current_wal_lsn() - confirmed_flush_lsn)::bigint, 0),
			coalesce((pg_current_wal_lsn() - restart_lsn)::bigint, 0), safe_wal_size
		FROM pg_replication_slots WHERE slot_name = $1`, r.slot).Scan(&st.WALStatus, &st.LagBytes, &st.RetainedBytes, &safe)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		var recorded bool
		if err := r.cfg.Pool.QueryRow(ctx, "SELECT EXISTS (SELECT FROM ecst.wal_slots WHERE slot_name = $1 AND dropped_at IS NULL)", r.slot).Scan(&recorded); err != nil {
			return nil, err
		}
		if !recorded {
			return nil, nil
		}
		st.Err = r.slotLost()
		return st, nil
	case err != nil:
		return nil, err
	}
	st.Exists = true
	if safe != nil {
		st.SafeWALBytes = *safe
	}
	if st.WALStatus == "lost" {
		st.Err = r.slotInvalidated("pg_replication_slots shows wal_status lost")
	}
	if src := r.walSrc.Load(); src != nil {
		st.LagSeconds = src.lag().Seconds()
	}
	return st, nil
}

// watchSlot samples the slot every 5s for the metrics and /healthz. In the
// table transport it warns about a slot ecst left behind: it keeps WAL from
// being removed.
func (r *Relay) watchSlot(ctx context.Context) {
	var warned time.Time
	for {
		st, err := r.sampleSlot(ctx)
		if err == nil {
			if r.cfg.Transport == outbox.TransportWAL {
				r.health.Store(st)
			}
			r.m.observeSlot(st)
			if st != nil && r.cfg.Transport == outbox.TransportTable && st.Exists && time.Since(warned) > 5*time.Minute {
				warned = time.Now()
				r.log.Warn("a replication slot of the WAL transport is left: it keeps PostgreSQL from removing WAL; drop it with `ecst outbox switch table`",
					"slot", r.slot, "retained_bytes", st.RetainedBytes)
			}
		}
		if !wait.Sleep(ctx, 5*time.Second) {
			return
		}
	}
}

// setDrainTarget reads, for a WAL drain, the position everything committed
// so far is before, and writes a heartbeat that commits after it, so that
// the stream passes it even when nothing else is written.
func (r *Relay) setDrainTarget(ctx context.Context) error {
	t, err := r.drainPosition(ctx)
	if err != nil {
		return err
	}
	r.drainTarget = t
	return nil
}

// drainPosition reads the position everything committed so far is before,
// and writes a heartbeat that commits after it.
func (r *Relay) drainPosition(ctx context.Context) (pglogrepl.LSN, error) {
	var lsn string
	if err := r.cfg.Pool.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&lsn); err != nil {
		return 0, fmt.Errorf("read the WAL position to drain to: %w", err)
	}
	t, err := pglogrepl.ParseLSN(lsn)
	if err != nil {
		return 0, err
	}
	if err := r.heartbeatOnce(ctx); err != nil {
		return 0, fmt.Errorf("write a WAL heartbeat: %w", err)
	}
	return t, nil
}

// extendDrain moves a drain's target past everything committed so far: a
// capture resolution's events, written after the drain began.
func (s *walSource) extendDrain(ctx context.Context) error {
	t, err := s.r.drainPosition(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.r.drainTarget = max(s.r.drainTarget, t)
	return nil
}
