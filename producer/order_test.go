package producer_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ecst-io/ecst/internal/testkit"
	"github.com/ecst-io/ecst/producer"
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
