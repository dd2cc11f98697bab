package outbox_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ecst-io/ecst/internal/pgtest"
	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/outbox"
)

// walMode puts a test database in the WAL transport the way `ecst outbox
// switch wal` leaves it, and creates a slot that decodes its messages.
func walMode(t *testing.T, pool *pgxpool.Pool) (slot string) {
	t.Helper()
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO ecst.wal_enabled DEFAULT VALUES;
		ALTER TABLE ecst.outbox ADD CONSTRAINT `+outbox.TransportConstraint+` CHECK (false) NOT VALID;
		INSERT INTO ecst.transport_switches (transport, finished_at) VALUES ('wal', now())`); err != nil {
		t.Fatal(err)
	}
	var db string
	if err := pool.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	slot = "s_" + db
	if _, err := pool.Exec(ctx, "CREATE PUBLICATION ecst_messages"); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot); err != nil {
		t.Fatal(err)
	}
	return slot
}

// walMessages returns the ecst messages the slot decodes, in the order it
// hands them out, once there are want of them: logical decoding reads only
// flushed WAL, which the test cluster (synchronous_commit off) flushes a
// moment after the commit.
func walMessages(t *testing.T, pool *pgxpool.Pool, slot string, want int) []outbox.Message {
	t.Helper()
	var out []outbox.Message
	err := wait.Until(context.Background(), 10*time.Second, 10*time.Millisecond, "the messages to be flushed", func() (bool, error) {
		var err error
		out, err = peekMessages(pool, slot)
		return len(out) >= want, err
	})
	if err != nil {
		t.Fatalf("%v: the slot has %d messages, want %d", err, len(out), want)
	}
	return out
}

func peekMessages(pool *pgxpool.Pool, slot string) ([]outbox.Message, error) {
	rows, err := pool.Query(context.Background(), `SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL,
		'proto_version', '1', 'publication_names', 'ecst_messages', 'messages', 'true')`, slot)
	if err != nil {
		return nil, err
	}
	var out []outbox.Message
	var data []byte
	_, err = pgx.ForEachRow(rows, []any{&data}, func() error {
		m, err := pglogrepl.Parse(data)
		if err != nil {
			return err
		}
		if ld, ok := m.(*pglogrepl.LogicalDecodingMessage); ok && ld.Prefix == outbox.MessagePrefix {
			msg, err := outbox.DecodeMessage(ld.Content)
			if err != nil {
				return err
			}
			out = append(out, msg)
		}
		return nil
	})
	return out, err
}

func rowOf(t *testing.T, m outbox.Message) outbox.Row {
	t.Helper()
	r, err := m.Row()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func sameRow(a, b outbox.Row) bool {
	return a.Topic == b.Topic && a.Key == b.Key && bytes.Equal(a.Value, b.Value) && (a.Value == nil) == (b.Value == nil) &&
		slices.EqualFunc(a.Headers, b.Headers, func(x, y outbox.Header) bool { return x.Key == y.Key && bytes.Equal(x.Value, y.Value) })
}

// TestEmitRoundTrip: the three WAL write paths (one event, a batched one,
// a bulk copy) reach the slot in the order written, tombstones as null.
func TestEmitRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t)
	slot := walMode(t, pool)
	hs := []outbox.Header{{Key: "a", Value: []byte("1")}, {Key: "empty"}}
	want := []outbox.Row{
		{Topic: "t", Key: "k1", Value: []byte("v1"), Headers: hs},
		{Topic: "t", Key: "k2", Value: nil, Headers: hs},
		{Topic: "u", Key: "k3", Value: []byte{}, Headers: nil},
	}
	for i := range 5 {
		want = append(want, outbox.Row{Topic: "t", Key: fmt.Sprintf("bulk%d", i), Value: []byte{byte(i)}, Headers: hs})
	}
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := outbox.TransportWAL.Insert(ctx, tx, want[0]); err != nil {
			return err
		}
		b := &pgx.Batch{}
		outbox.TransportWAL.Queue(b, want[1])
		outbox.TransportWAL.Queue(b, want[2])
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		if err := outbox.LockKeys(ctx, tx, "t", []string{"bulk0", "bulk1", "bulk2", "bulk3", "bulk4"}); err != nil {
			return err
		}
		return outbox.TransportWAL.CopyRows(ctx, tx, want[3:])
	})
	if err != nil {
		t.Fatal(err)
	}
	// A rolled back transaction's messages never reach the slot.
	_ = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := outbox.Emit(ctx, tx, outbox.Row{Topic: "t", Key: "rolled-back"}); err != nil {
			t.Fatal(err)
		}
		return errors.New("roll back")
	})
	// A write after the rolled back one: once it is decoded, the rolled
	// back one would have been.
	last := outbox.Row{Topic: "t", Key: "last", Value: []byte("v")}
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return outbox.Emit(ctx, tx, last) }); err != nil {
		t.Fatal(err)
	}
	want = append(want, last)
	got := walMessages(t, pool, slot, len(want))
	if len(got) != len(want) {
		t.Fatalf("the slot has %d messages, want %d", len(got), len(want))
	}
	for i := range want {
		if r := rowOf(t, got[i]); !sameRow(r, want[i]) {
			t.Errorf("message %d = %+v, want %+v", i, r, want[i])
		}
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM ecst.outbox").Scan(&n); err != nil || n != 0 {
		t.Fatalf("the WAL transport wrote %d outbox rows (%v), want none", n, err)
	}
}

// TestTransportGates: a writer of the wrong transport writes nothing and
// gets ErrTransportMismatch naming the fix; a WAL writer's refused event
// leaves the caller's transaction usable.
func TestTransportGates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	row := outbox.Row{Topic: "t", Key: "k", Value: []byte("v")}

	table := pgtest.NewDB(t)
	if tr, err := outbox.DatabaseTransport(ctx, table); err != nil || tr != outbox.TransportTable {
		t.Fatalf("a fresh database runs %q (%v), want table", tr, err)
	}
	err := pgx.BeginFunc(ctx, table, func(tx pgx.Tx) error {
		err := outbox.TransportWAL.Insert(ctx, tx, row)
		if !errors.Is(err, outbox.ErrTransportMismatch) || !bytes.Contains([]byte(err.Error()), []byte("ecst outbox switch wal")) {
			t.Errorf("WAL write to a table database: %v", err)
		}
		b := &pgx.Batch{}
		outbox.TransportWAL.Queue(b, row)
		if err := tx.SendBatch(ctx, b).Close(); !errors.Is(err, outbox.ErrTransportMismatch) {
			t.Errorf("queued WAL write to a table database: %v", err)
		}
		if err := outbox.TransportWAL.CopyRows(ctx, tx, []outbox.Row{row}); !errors.Is(err, outbox.ErrTransportMismatch) {
			t.Errorf("bulk WAL write to a table database: %v", err)
		}
		_, err = tx.Exec(ctx, "SELECT 1")
		return err
	})
	if err != nil {
		t.Fatalf("the transaction is not usable after a refused WAL write: %v", err)
	}
	if err := outbox.CheckTransport(ctx, table, outbox.TransportWAL); !errors.Is(err, outbox.ErrTransportMismatch) {
		t.Errorf("CheckTransport(wal) on a table database: %v", err)
	}

	wal := pgtest.NewDB(t)
	walMode(t, wal)
	if tr, err := outbox.DatabaseTransport(ctx, wal); err != nil || tr != outbox.TransportWAL {
		t.Fatalf("a switched database runs %q (%v), want wal", tr, err)
	}
	for name, write := range map[string]func(tx pgx.Tx) error{
		"insert": func(tx pgx.Tx) error { return outbox.TransportTable.Insert(ctx, tx, row) },
		"copy": func(tx pgx.Tx) error {
			return outbox.TransportTable.CopyRows(ctx, tx, []outbox.Row{row})
		},
	} {
		err := pgx.BeginFunc(ctx, wal, write)
		if !errors.Is(err, outbox.ErrTransportMismatch) || !bytes.Contains([]byte(err.Error()), []byte("outbox.transport: wal")) {
			t.Errorf("table %s into a WAL database: %v", name, err)
		}
	}
	if err := outbox.CheckTransport(ctx, wal, outbox.TransportTable); !errors.Is(err, outbox.ErrTransportMismatch) {
		t.Errorf("CheckTransport(table) on a WAL database: %v", err)
	}
}

func TestDecodeMessageRejectsGarbage(t *testing.T) {
	t.Parallel()
	good := outbox.EncodeMessage(outbox.Row{Topic: "t", Key: "k", Value: []byte("v")})
	for _, b := range [][]byte{nil, {}, {2}, {1}, {1, 5, 't'}, {1, 1, 't', 1, 'k'}, {1, 1, 't', 1, 'k', 9, 'v'}, good[:len(good)-1]} {
		if _, err := outbox.DecodeMessage(b); !errors.Is(err, outbox.ErrBadMessage) {
			t.Errorf("DecodeMessage(%v) = %v, want ErrBadMessage", b, err)
		}
	}
}

func FuzzDecodeMessage(f *testing.F) {
	f.Add(outbox.EncodeMessage(outbox.Row{Topic: "t", Key: "k", Value: []byte("v"), Headers: []outbox.Header{{Key: "h", Value: []byte("x")}}}))
	f.Add(outbox.EncodeMessage(outbox.Row{Topic: "t", Key: "k"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := outbox.DecodeMessage(b)
		if err != nil {
			return
		}
		r, err := m.Row()
		if err != nil {
			return
		}
		again, err := outbox.DecodeMessage(outbox.EncodeMessage(r))
		if err != nil {
			t.Fatalf("re-encoding %v: %v", b, err)
		}
		r2, err := again.Row()
		if err != nil || !sameRow(r, r2) {
			t.Fatalf("%v changed on re-encoding: %+v, want %+v (%v)", b, r2, r, err)
		}
	})
}
