package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/outbox"
)

// WALPending returns the keys of topic whose events committed before upto
// and are not yet published: `ecst verify`'s in flight, for the WAL
// transport, which has no rows to read them from. While a relay streams
// the slot, it waits up to limit for it to confirm upto (nothing is then
// in flight); while none does, it reads the slot's pending events without
// consuming them.
func WALPending(ctx context.Context, q pgxQuerier, upto pglogrepl.LSN, topic string, limit time.Duration) (map[string]bool, error) {
	slot, confirmed, err := LiveSlot(ctx, q)
	if err != nil {
		return nil, err
	}
	if confirmed >= upto {
		return map[string]bool{}, nil
	}
	var active bool
	if err := q.QueryRow(ctx, "SELECT active_pid IS NOT NULL FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&active); err != nil {
		return nil, fmt.Errorf("read slot %s: %w", slot, err)
	}
	if !active {
		keys, err := peekKeys(ctx, q, slot, upto, topic)
		if err == nil || !inUse(err) {
			return keys, err
		}
		// A relay started streaming it meanwhile: wait for it.
	}
	err = wait.Until(ctx, limit, 20*time.Millisecond, "the WAL relay to publish what committed before the snapshot", func() (bool, error) {
		_, confirmed, err := LiveSlot(ctx, q)
		return confirmed >= upto, err
	})
	if err != nil {
		return nil, fmt.Errorf("%w: the WAL relay streams slot %s and is behind; verify again when it has caught up (ecst_relay_slot_lag_bytes)", err, slot)
	}
	return map[string]bool{}, nil
}

func inUse(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "55006"
}

type pgxQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// peekKeys decodes, without consuming them, the slot's events that
// committed before upto, and returns the keys of topic among them.
func peekKeys(ctx context.Context, q pgxQuerier, slot string, upto pglogrepl.LSN, topic string) (map[string]bool, error) {
	rows, err := q.Query(ctx, `SELECT data FROM pg_logical_slot_peek_binary_changes($1, $2::text::pg_lsn, NULL,
		'proto_version', '1', 'publication_names', '`+Publication+`', 'messages', 'true')`, slot, upto.String())
	if err != nil {
		return nil, fmt.Errorf("read the events slot %s holds (no relay streams it): %w", slot, err)
	}
	keys := map[string]bool{}
	var data []byte
	_, err = pgx.ForEachRow(rows, []any{&data}, func() error {
		m, err := pglogrepl.Parse(data)
		if err != nil {
			return err
		}
		ld, ok := m.(*pglogrepl.LogicalDecodingMessage)
		if !ok || ld.Prefix != outbox.MessagePrefix {
			return nil
		}
		msg, err := outbox.DecodeMessage(ld.Content)
		if err != nil {
			return err
		}
		if msg.Topic == topic {
			keys[msg.Key] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the events slot %s holds: %w", slot, err)
	}
	return keys, nil
}
