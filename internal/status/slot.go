package status

import (
	"context"

	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/relay"
)

// DefaultMaxSlotLag is Options.MaxSlotLag's default: 1 GiB of WAL not yet
// confirmed by the WAL relay.
const DefaultMaxSlotLag = 1 << 30

// Slot is a replication slot of the WAL transport: one ecst created
// (ecst.wal_slots) and has not dropped.
type Slot struct {
	Slot    string `json:"slot"`
	Service string `json:"service"`
	// Leader: a relay process leads the WAL transport (holds its leader
	// lock, as pg_locks shows; relay.LeadsWAL).
	Leader bool `json:"leader"`
	// Exists is false when PostgreSQL no longer has the slot: it is LOST
	// (a failover to a standby without it, or it was dropped by hand).
	Exists bool `json:"exists"`
	// WALStatus is pg_replication_slots.wal_status: reserved, extended,
	// unreserved (PostgreSQL will remove WAL it needs at the next
	// checkpoint unless it catches up) or lost (invalidated).
	WALStatus string `json:"wal_status,omitempty"`
	// ActivePID is the walsender streaming the slot (0: none).
	ActivePID int `json:"active_pid,omitempty"`
	// LagBytes is the WAL written since the slot's confirmed position: what
	// the relay has yet to publish, or to confirm.
	LagBytes int64 `json:"lag_bytes"`
	// RetainedBytes is the WAL the slot keeps PostgreSQL from removing.
	RetainedBytes int64 `json:"retained_bytes"`
	// SafeWALBytes is how much more WAL may be written before
	// max_slot_wal_keep_size invalidates the slot (nil: no limit).
	SafeWALBytes *int64 `json:"safe_wal_bytes,omitempty"`
	// LagAge is the walsender's flush lag (pg_stat_replication.flush_lag):
	// how long ago the WAL the relay last confirmed was written (0 when it
	// is caught up, or no walsender streams the slot).
	LagAge Seconds `json:"lag_age_seconds"`
	// InTransport: the database runs the WAL transport. A slot found while
	// it runs the table transport was left behind.
	InTransport bool `json:"in_transport"`
}

// gatherWAL reads the database's transport and the WAL transport's slots,
// with their leader and lag: one statement for the slots (ecst.wal_slots
// joined with pg_replication_slots and pg_stat_replication, a row per
// slot), one for the leader lock.
func gatherWAL(ctx context.Context, q Querier) (outbox.Transport, []Slot, error) {
	transport, err := outbox.DatabaseTransport(ctx, q)
	if err != nil {
		return "", nil, err
	}
	rows, err := q.Query(ctx, `SELECT w.slot_name, w.service, s.slot_name IS NOT NULL, coalesce(s.wal_status, ''),
			coalesce(s.active_pid, 0),
			coalesce((pg_current_wal_lsn() - s.confirmed_flush_lsn)::bigint, 0),
			coalesce((pg_current_wal_lsn() - s.restart_lsn)::bigint, 0), s.safe_wal_size,
			coalesce(extract(epoch FROM r.flush_lag)::float8, 0)
		FROM ecst.wal_slots w
		LEFT JOIN pg_replication_slots s ON s.slot_name = w.slot_name
		LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
		WHERE w.dropped_at IS NULL ORDER BY w.slot_name`)
	if err != nil {
		return "", nil, fmt.Errorf("read the WAL transport's slots (ecst.wal_slots, pg_replication_slots): %w", err)
	}
	var slots []Slot
	var sl Slot
	var age float64
	_, err = pgx.ForEachRow(rows, []any{&sl.Slot, &sl.Service, &sl.Exists, &sl.WALStatus, &sl.ActivePID, &sl.LagBytes, &sl.RetainedBytes, &sl.SafeWALBytes, &age}, func() error {
		s := sl
		s.LagAge = Seconds(age)
		s.InTransport = transport == outbox.TransportWAL
		slots = append(slots, s)
		sl.SafeWALBytes = nil
		return nil
	})
	if err != nil {
		return "", nil, fmt.Errorf("read the WAL transport's slots: %w", err)
	}
	if len(slots) > 0 {
		leads, err := relay.LeadsWAL(ctx, q)
		if err != nil {
			return "", nil, err
		}
		for i := range slots {
			slots[i].Leader = leads
		}
	}
	return transport, slots, nil
}

// slotFindings: a lost or invalidated slot (critical: events may never
// reach Kafka), one about to be (unreserved), one no relay streams, one
// lagging over the limits, and one the table transport left behind.
func slotFindings(slots []Slot, maxAge time.Duration, maxLag int64) []Finding {
	var out []Finding
	add := func(sev Severity, sl Slot, fix, format string, args ...any) {
		out = append(out, Finding{Severity: sev, Subject: "slot " + sl.Slot, Message: fmt.Sprintf(format, args...), Fix: fix})
	}
	for _, sl := range slots {
		switch {
		case !sl.Exists:
			add(Critical, sl, "ecst relay --recover-slot",
				"the WAL transport's replication slot is LOST: ecst created it and PostgreSQL no longer has it (a failover to a standby without it, or it was dropped): events written since may never reach Kafka; recover with a new slot and a republish of every entity")
			continue
		case sl.WALStatus == "lost":
			add(Critical, sl, "ecst relay --recover-slot",
				"the WAL transport's replication slot was INVALIDATED (wal_status lost: max_slot_wal_keep_size let PostgreSQL remove WAL it still needed): events in that WAL can no longer be read; recover with a new slot and a republish of every entity")
			continue
		case !sl.InTransport:
			add(Warning, sl, "ecst outbox switch table",
				"a slot of the WAL transport is left while the database runs the table transport: it keeps %s of WAL from being removed", Bytes(sl.RetainedBytes))
			continue
		}
		switch {
		case sl.WALStatus == "unreserved":
			add(Critical, sl, relayFix(sl), "wal_status unreserved: the slot is %s behind and PostgreSQL will invalidate it at a checkpoint soon (%s): the relay streaming it must catch up now",
				Bytes(sl.LagBytes), safeText(sl))
		case !sl.Leader:
			sev := Warning
			if sl.LagBytes > maxLag {
				sev = Critical
			}
			add(sev, sl, "ecst relay", "no relay streams the WAL transport's slot: it is %s behind and keeps %s of WAL (%s)",
				Bytes(sl.LagBytes), Bytes(sl.RetainedBytes), safeText(sl))
		case sl.LagAge.Duration() > maxAge:
			add(Critical, sl, "", "the relay streaming the slot confirms WAL written %s ago (over --max-backlog-age %s), %s behind: it is behind or stuck; see its log and ecst_relay_* metrics",
				Age(sl.LagAge.Duration()), maxAge, Bytes(sl.LagBytes))
		case sl.LagBytes > maxLag:
			add(Warning, sl, "", "the slot is %s behind (over --max-slot-lag %s) and keeps %s of WAL (%s): the relay streaming it is behind; see its log and ecst_relay_* metrics",
				Bytes(sl.LagBytes), Bytes(maxLag), Bytes(sl.RetainedBytes), safeText(sl))
		}
	}
	return out
}

func relayFix(sl Slot) string {
	if sl.Leader {
		return ""
	}
	return "ecst relay"
}

func safeText(sl Slot) string {
	if sl.SafeWALBytes == nil {
		return "no max_slot_wal_keep_size: it keeps WAL until the disk fills"
	}
	return Bytes(*sl.SafeWALBytes) + " more WAL before max_slot_wal_keep_size invalidates it"
}

// Bytes writes a size for a human, in binary units.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	f, u := float64(n), "KMGTPE"
	i := -1
	for (f >= unit || f <= -unit) && i < len(u)-1 {
		f /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", f, u[i])
}
