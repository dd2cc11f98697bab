package producer_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/ecst-io/ecst/internal/testkit"
	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/relay"
)

// orderRun has many goroutines, each in its own transactions, publish a
// handful of keys concurrently. Every transaction records its commit
// position: the last thing it does before COMMIT is bump a counter row,
// whose row lock it holds until commit, so counter values follow commit
// order exactly. It returns, per key, how often the outbox id order
// disagrees with the commit order.
func orderRun(t *testing.T, f *fixture, rowLock bool, seed uint64) (violations, txs int) {
	t.Helper()
	ctx := context.Background()
	_, err := f.pool.Exec(ctx, `
		CREATE TABLE IF NOT EXISTS commit_seq (n bigint NOT NULL);
		TRUNCATE commit_seq; INSERT INTO commit_seq VALUES (0);
		CREATE TABLE IF NOT EXISTS commits (seq bigint PRIMARY KEY, key text NOT NULL, outbox_id bigint NOT NULL);
		TRUNCATE commits, ecst.outbox, customers;
		INSERT INTO customers (id, version, name, email) SELECT 'k' || i, 0, 'n', 'e' FROM generate_series(0, 3) i;`)
	if err != nil {
		t.Fatal(err)
	}
	const writers, perWriter, keys = 12, 25, 4
	testkit.Parallel(t, writers, func(w int) error {
		rng := rand.New(rand.NewPCG(seed, uint64(w)))
		for i := range perWriter {
			key := fmt.Sprintf("k%d", rng.IntN(keys))
			pause := time.Duration(rng.IntN(1500)) * time.Microsecond
			err := pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error {
				version := int64(w*perWriter + i)
				if rowLock {
					// The usual shape: lock and update the entity row, then publish.
					if err := tx.QueryRow(ctx, "UPDATE customers SET version = version + 1 WHERE id = $1 RETURNING version", key).Scan(&version); err != nil {
						return err
					}
				}
				if err := f.pub.Publish(ctx, tx, "customer", key, version, customer(key, version)); err != nil {
					return err
				}
				var id, seq int64
				if err := tx.QueryRow(ctx, "SELECT currval(pg_get_serial_sequence('ecst.outbox', 'id'))").Scan(&id); err != nil {
					return err
				}
				time.Sleep(pause) // widen the window between drawing the id and committing
				if err := tx.QueryRow(ctx, "UPDATE commit_seq SET n = n + 1 RETURNING n").Scan(&seq); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, "INSERT INTO commits VALUES ($1, $2, $3)", seq, key, id)
				return err
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	rows, err := f.pool.Query(ctx, "SELECT key, seq FROM commits ORDER BY key, outbox_id")
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]int64{}
	var key string
	var seq int64
	_, err = pgx.ForEachRow(rows, []any{&key, &seq}, func() error {
		if seq < last[key] {
			violations++
		}
		last[key] = seq
		txs++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return violations, txs
}

func TestPerKeyOrder(t *testing.T) {
	t.Parallel()
	for _, rowLock := range []bool{true, false} {
		t.Run(fmt.Sprintf("rowlock=%v", rowLock), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, fixtureOpts{})
			seed := uint64(time.Now().UnixNano())
			v, n := orderRun(t, f, rowLock, seed)
			if v != 0 {
				t.Fatalf("seed %d: %d of %d transactions have an outbox id out of commit order for their key", seed, v, n)
			}
			if n != 12*25 {
				t.Fatalf("recorded %d transactions, want %d", n, 12*25)
			}
		})
	}
}

// TestPerKeyOrderNeedsTheLock shows that the check above has teeth: without
// the per-key lock (and without a row lock to stand in for it), ids drawn
// before a slow commit land out of commit order.
func TestPerKeyOrderNeedsTheLock(t *testing.T) {
	t.Parallel()
	f := newFixture(t, fixtureOpts{})
	producer.WithoutKeyLock(f.pub)
	for attempt := range 10 {
		if v, _ := orderRun(t, f, false, uint64(attempt)); v > 0 {
			t.Logf("attempt %d: %d transactions out of order without the key lock", attempt, v)
			return
		}
	}
	t.Fatal("no ordering violation without the key lock in 10 runs: the order check cannot detect a missing lock")
}

// TestPerKeyOrderWAL: with the WAL transport there are no ids; the slot
// hands out events in commit order, so per key the order of the events in
// the slot is the commit order, lock or no lock. Writers publish a handful
// of keys concurrently (without the key lock, to show it is not what the
// order rests on here), each recording its commit position; the slot's
// order must agree with it.
func TestPerKeyOrderWAL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, fixtureOpts{wal: true})
	producer.WithoutKeyLock(f.pub)
	if _, err := f.pool.Exec(ctx, `CREATE TABLE commit_seq (n bigint NOT NULL); INSERT INTO commit_seq VALUES (0);
		CREATE TABLE commits (seq bigint PRIMARY KEY, key text NOT NULL, version bigint NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	const writers, perWriter, keys = 12, 25, 4
	seed := uint64(time.Now().UnixNano())
	testkit.Parallel(t, writers, func(w int) error {
		rng := rand.New(rand.NewPCG(seed, uint64(w)))
		for i := range perWriter {
			key := fmt.Sprintf("k%d", rng.IntN(keys))
			version := int64(w*perWriter + i)
			pause := time.Duration(rng.IntN(1500)) * time.Microsecond
			err := pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error {
				if err := f.pub.Publish(ctx, tx, "customer", key, version, customer(key, version)); err != nil {
					return err
				}
				time.Sleep(pause) // widen the window between the write and the commit
				var seq int64
				if err := tx.QueryRow(ctx, "UPDATE commit_seq SET n = n + 1 RETURNING n").Scan(&seq); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, "INSERT INTO commits VALUES ($1, $2, $3)", seq, key, version)
				return err
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	seqOf := map[int64]int64{}
	rows, err := f.pool.Query(ctx, "SELECT version, seq FROM commits")
	if err != nil {
		t.Fatal(err)
	}
	var v, s int64
	if _, err := pgx.ForEachRow(rows, []any{&v, &s}, func() error { seqOf[v] = s; return nil }); err != nil {
		t.Fatal(err)
	}
	var msgs []outbox.Message
	err = wait.Until(ctx, 30*time.Second, 20*time.Millisecond, "the slot to decode every event", func() (bool, error) {
		var err error
		msgs, err = slotMessages(ctx, f)
		return len(msgs) >= writers*perWriter, err
	})
	if err != nil {
		t.Fatalf("%v: %d events in the slot", err, len(msgs))
	}
	last := map[string]int64{}
	violations := 0
	for _, m := range msgs {
		r, err := m.Row()
		if err != nil {
			t.Fatal(err)
		}
		var version int64
		for _, h := range r.Headers {
			if h.Key == producer.HeaderEntityVersion {
				version, _ = strconv.ParseInt(string(h.Value), 10, 64)
			}
		}
		if seqOf[version] < last[m.Key] {
			violations++
		}
		last[m.Key] = seqOf[version]
	}
	if violations > 0 {
		t.Fatalf("seed %d: %d of %d events are out of commit order for their key in the slot", seed, violations, len(msgs))
	}
}

// slotMessages reads, without consuming them, the events the WAL
// fixture's slot holds, in the order it hands them out.
func slotMessages(ctx context.Context, f *fixture) ([]outbox.Message, error) {
	rows, err := f.pool.Query(ctx, `SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL,
		'proto_version', '1', 'publication_names', $2, 'messages', 'true')`, relay.SlotName(f.w.Service), relay.Publication)
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

// TestTransportMismatch: a Publisher of the table transport on a database
// that runs the WAL transport finds out at start (CheckTransport), and its
// writes fail with ErrTransportMismatch, writing nothing.
func TestTransportMismatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	wal := newFixture(t, fixtureOpts{wal: true})
	table := newFixture(t, fixtureOpts{})
	if err := wal.pub.CheckTransport(ctx, wal.pool); err != nil {
		t.Fatalf("the WAL Publisher on the WAL database: %v", err)
	}
	if err := table.pub.CheckTransport(ctx, wal.pool); !errors.Is(err, outbox.ErrTransportMismatch) {
		t.Fatalf("the table Publisher on the WAL database: %v, want ErrTransportMismatch", err)
	}
	err := pgx.BeginFunc(ctx, wal.pool, func(tx pgx.Tx) error {
		return table.pub.Publish(ctx, tx, "customer", "k", 1, customer("k", 1))
	})
	if !errors.Is(err, outbox.ErrTransportMismatch) {
		t.Fatalf("a table write to the WAL database: %v, want ErrTransportMismatch", err)
	}
	if err := wal.pub.CheckTransport(ctx, table.pool); !errors.Is(err, outbox.ErrTransportMismatch) {
		t.Fatalf("the WAL Publisher on the table database: %v, want ErrTransportMismatch", err)
	}
}
