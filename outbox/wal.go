package outbox

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Transport is how events travel from the writers to the relay.
type Transport string

// Transports (outbox.transport in ecst.yaml).
const (
	// TransportTable writes each event as a row of ecst.outbox.
	TransportTable Transport = "table"
	// TransportWAL writes each event as a transactional logical decoding
	// message (pg_logical_emit_message): no table row, no dead tuple, no
	// vacuum. The relay streams them from a replication slot, in commit
	// order.
	TransportWAL Transport = "wal"
)

// ErrTransportMismatch: the writer runs one transport and the database the
// other (`ecst outbox switch` moves the database). The event is not
// written.
var ErrTransportMismatch = errors.New("the writer and the database run different outbox transports")

// MessagePrefix is the prefix of the logical decoding messages that carry
// events; the relay ignores every other prefix.
const MessagePrefix = "ecst"

// HeartbeatPrefix is the prefix of the WAL relay's heartbeat messages.
const HeartbeatPrefix = "ecst.heartbeat"

// Insert writes r inside tx under r's key lock, by transport t.
func (t Transport) Insert(ctx context.Context, tx pgx.Tx, r Row) error {
	if t == TransportWAL {
		return Emit(ctx, tx, r)
	}
	return tableMismatch(Insert(ctx, tx, r))
}

// Queue adds r's write, under its key lock, to a batch the caller sends in
// its transaction, by transport t.
func (t Transport) Queue(b *pgx.Batch, r Row) {
	if t == TransportWAL {
		QueueEmit(b, r)
		return
	}
	Queue(b, r)
}

// CopyRows writes rows in bulk, by transport t. The caller must hold every
// row's key lock in tx (LockKeys).
func (t Transport) CopyRows(ctx context.Context, tx pgx.Tx, rows []Row) error {
	if t == TransportWAL {
		return EmitRows(ctx, tx, rows)
	}
	return tableMismatch(CopyRows(ctx, tx, rows))
}

// TransportConstraint is the constraint on ecst.outbox that fails every
// insert while the database runs the WAL transport.
const TransportConstraint = "ecst_outbox_transport_is_wal"

// tableMismatch names the fix when a table write met the WAL transport's
// constraint. Batches (Queue) report the constraint itself: the caller
// sends them.
func tableMismatch(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.ConstraintName == TransportConstraint {
		return fmt.Errorf("%w: the database takes no events in ecst.outbox: it runs the WAL transport (set outbox.transport: wal, ECST_OUTBOX_TRANSPORT=wal, for every writer and relay), or `ecst outbox switch` is moving it between transports (retry once it is done) (%w)", ErrTransportMismatch, err)
	}
	return err
}

var errWALMismatch = fmt.Errorf("%w: the database takes no events in the WAL: it runs the table transport (set outbox.transport: table for every writer and relay, or move the database with `ecst outbox switch wal`), or `ecst outbox switch` is moving it between transports (retry once it is done)", ErrTransportMismatch)

// emitSQL takes the key lock and emits the event in one statement, one
// round trip. It returns a row only while ecst.wal_enabled has one: in a
// database that runs the table transport it emits nothing and returns no
// row, which leaves the caller's transaction usable. Reading
// ecst.wal_enabled also holds a share lock on it until the transaction
// ends, which `ecst outbox switch table` waits for: no event can commit
// after the switch.
const emitSQL = `SELECT pg_logical_emit_message(true, 'ecst', $1::bytea)
FROM ecst.wal_enabled, (SELECT pg_advisory_xact_lock($2) OFFSET 0) AS l`

// Emit writes r as a logical decoding message inside tx under r's key
// lock.
func Emit(ctx context.Context, tx pgx.Tx, r Row) error {
	var lsn string
	err := tx.QueryRow(ctx, emitSQL, EncodeMessage(r), KeyLock(r.Topic, r.Key)).Scan(&lsn)
	if errors.Is(err, pgx.ErrNoRows) {
		return errWALMismatch
	}
	if err != nil {
		return fmt.Errorf("emit outbox message: %w", err)
	}
	return nil
}

// QueueEmit adds Emit's statement to a batch the caller sends in its
// transaction.
func QueueEmit(b *pgx.Batch, r Row) {
	b.Queue(emitSQL, EncodeMessage(r), KeyLock(r.Topic, r.Key)).QueryRow(func(row pgx.Row) error {
		var lsn string
		err := row.Scan(&lsn)
		if errors.Is(err, pgx.ErrNoRows) {
			return errWALMismatch
		}
		return err
	})
}

// emitRowsSQL emits one message per array element, in array order (the
// function scan yields them in order, and each row's target list is
// evaluated as it passes), in one round trip.
const emitRowsSQL = `SELECT count(pg_logical_emit_message(true, 'ecst', m))
FROM ecst.wal_enabled, unnest($1::bytea[]) AS m`

// EmitRows writes rows as logical decoding messages, in order, with one
// statement. The caller must hold every row's key lock in tx (LockKeys).
func EmitRows(ctx context.Context, tx pgx.Tx, rows []Row) error {
	if len(rows) == 0 {
		return nil
	}
	msgs := make([][]byte, len(rows))
	for i, r := range rows {
		msgs[i] = EncodeMessage(r)
	}
	var n int
	if err := tx.QueryRow(ctx, emitRowsSQL, msgs).Scan(&n); err != nil {
		return fmt.Errorf("emit %d outbox messages: %w", len(rows), err)
	}
	if n != len(rows) {
		return errWALMismatch
	}
	return nil
}

// DatabaseTransport reads the transport the database runs: that of its
// last switch (ecst.transport_switches), the table transport if none. While
// a switch is in progress it is the transport switched to, and writers of
// neither are let in (the switch's Closed).
func DatabaseTransport(ctx context.Context, q Querier) (Transport, error) {
	var t string
	err := q.QueryRow(ctx, "SELECT coalesce((SELECT transport FROM ecst.transport_switches ORDER BY id DESC LIMIT 1), 'table')").Scan(&t)
	if err != nil {
		return "", fmt.Errorf("read the database's outbox transport (ecst.transport_switches; is the schema migrated? run `ecst migrate`): %w", err)
	}
	return Transport(t), nil
}

// CheckTransport returns an error wrapping ErrTransportMismatch, with the
// fix, unless the database runs transport t.
func CheckTransport(ctx context.Context, q Querier, t Transport) error {
	db, err := DatabaseTransport(ctx, q)
	if err != nil {
		return err
	}
	if db != t {
		return fmt.Errorf("%w: outbox.transport is %s, the database runs the %s transport: set outbox.transport: %s (ECST_OUTBOX_TRANSPORT), or move the database with `ecst outbox switch %s`",
			ErrTransportMismatch, t, db, db, t)
	}
	return nil
}

// messageFormat is the first byte of an encoded message, so that the
// encoding can change while messages of the old one are still in the WAL.
const messageFormat = 1

// EncodeMessage packs one event into a logical decoding message's content:
// a format byte; the topic and the key, each a uvarint length and its bytes;
// the value as a uvarint of its length plus one (0 for a tombstone's null)
// and its bytes; then the headers in EncodeHeaders's encoding, to the end.
// The shard is not carried: the WAL transport has none.
func EncodeMessage(r Row) []byte {
	hs := EncodeHeaders(r.Headers)
	b := make([]byte, 0, 1+3*binary.MaxVarintLen32+len(r.Topic)+len(r.Key)+len(r.Value)+len(hs))
	b = append(b, messageFormat)
	b = binary.AppendUvarint(b, uint64(len(r.Topic)))
	b = append(b, r.Topic...)
	b = binary.AppendUvarint(b, uint64(len(r.Key)))
	b = append(b, r.Key...)
	if r.Value == nil {
		b = binary.AppendUvarint(b, 0)
	} else {
		b = binary.AppendUvarint(b, uint64(len(r.Value))+1)
		b = append(b, r.Value...)
	}
	return append(b, hs...)
}

// Message is one decoded event. Headers stay in EncodeHeaders's encoding:
// the relay decodes them as it produces the record.
type Message struct {
	// Topic and Key are the record's.
	Topic string
	Key   string // see Topic
	// Value is the record's value, nil for a tombstone.
	Value []byte
	// Headers are the record's headers, EncodeHeaders's encoding.
	Headers []byte
}

// ErrBadMessage reports a message that does not decode.
var ErrBadMessage = errors.New("outbox message does not decode")

// DecodeMessage is the inverse of EncodeMessage. It does not decode the
// headers (Message.Row does). The message's Value and Headers alias b.
func DecodeMessage(b []byte) (Message, error) {
	if len(b) == 0 || b[0] != messageFormat {
		return Message{}, fmt.Errorf("%w: unknown format", ErrBadMessage)
	}
	topic, rest, ok := chunk(b[1:])
	if !ok {
		return Message{}, fmt.Errorf("%w: topic truncated", ErrBadMessage)
	}
	key, rest, ok := chunk(rest)
	if !ok {
		return Message{}, fmt.Errorf("%w: key truncated", ErrBadMessage)
	}
	n, w := binary.Uvarint(rest)
	if w <= 0 || (n > 0 && uint64(len(rest)-w) < n-1) {
		return Message{}, fmt.Errorf("%w: value truncated", ErrBadMessage)
	}
	m := Message{Topic: string(topic), Key: string(key)}
	rest = rest[w:]
	if n > 0 {
		m.Value, rest = rest[:n-1:n-1], rest[n-1:]
	}
	if len(rest) == 0 {
		return Message{}, fmt.Errorf("%w: no headers", ErrBadMessage)
	}
	m.Headers = rest
	return m, nil
}

// Row decodes the message's headers into the row it was encoded from.
func (m Message) Row() (Row, error) {
	hs, err := DecodeHeaders(m.Headers)
	if err != nil {
		return Row{}, err
	}
	return Row{Topic: m.Topic, Key: m.Key, Value: m.Value, Headers: hs}, nil
}
