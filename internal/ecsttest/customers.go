package ecsttest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// The customers service, as the world plays it: each change updates the
// customers table and publishes in the same transaction.

// Upsert writes key's new state the way the customers service does: the
// row and its event in one transaction. It returns the new version.
func (w *World) Upsert(ctx context.Context, key string) (int64, error) {
	return w.tx(ctx, func(tx pgx.Tx) (int64, error) {
		row := tx.QueryRow(ctx, `INSERT INTO customers (id, version, name, email, tier) VALUES ($1, 1, $2, $3, NULL)
			ON CONFLICT (id) DO UPDATE SET version = customers.version + 1, name = $2 || customers.version, updated_at = now()
			RETURNING id, version, name, email, tier, updated_at`, key, "name-"+key, key+"@example.com")
		state, version, err := scanState(row)
		if err != nil {
			return 0, err
		}
		return version, w.Pub.Publish(ctx, tx, "customer", key, version, state)
	})
}

// Delete deletes key and publishes its tombstone, in one transaction.
func (w *World) Delete(ctx context.Context, key string) error {
	_, err := w.tx(ctx, func(tx pgx.Tx) (int64, error) {
		var version int64
		err := tx.QueryRow(ctx, `DELETE FROM customers WHERE id = $1 RETURNING version`, key).Scan(&version)
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, nil
		}
		if err != nil {
			return 0, err
		}
		return version, w.Pub.Delete(ctx, tx, "customer", key, version+1)
	})
	return err
}

func (w *World) tx(ctx context.Context, fn func(pgx.Tx) (int64, error)) (int64, error) {
	var v int64
	err := pgx.BeginFunc(ctx, w.Pool, func(tx pgx.Tx) error {
		var err error
		v, err = fn(tx)
		return err
	})
	return v, err
}

func scanState(row pgx.Row) (map[string]any, int64, error) {
	var (
		id, name, email string
		tier            *string
		version         int64
		updated         time.Time
	)
	if err := row.Scan(&id, &version, &name, &email, &tier, &updated); err != nil {
		return nil, 0, err
	}
	state := map[string]any{"id": id, "version": version, "name": name, "email": email, "tier": nil, "updated_at": updated}
	if tier != nil {
		state["tier"] = *tier
	}
	return state, version, nil
}

// Exec runs an ad hoc statement (a change that publishes nothing).
func (w *World) Exec(sql string, args ...any) {
	w.T.Helper()
	if _, err := w.Pool.Exec(context.Background(), sql, args...); err != nil {
		w.T.Fatal(err)
	}
}

// Source reads the source table: key → state.
func (w *World) Source() map[string]map[string]any {
	w.T.Helper()
	rows, err := w.Pool.Query(context.Background(), `SELECT id, version, name, email, tier, updated_at FROM customers`)
	if err != nil {
		w.T.Fatal(err)
	}
	defer rows.Close()
	out := map[string]map[string]any{}
	for rows.Next() {
		s, _, err := scanState(rows)
		if err != nil {
			w.T.Fatal(err)
		}
		out[s["id"].(string)] = s
	}
	if err := rows.Err(); err != nil {
		w.T.Fatal(err)
	}
	return out
}

// Keys returns n keys.
func Keys(n int) []string {
	ks := make([]string, n)
	for i := range ks {
		ks[i] = fmt.Sprintf("c%05d", i)
	}
	return ks
}

// Seed upserts every key once, in batches.
func (w *World) Seed(ctx context.Context, keys []string) {
	w.T.Helper()
	for _, k := range keys {
		if _, err := w.Upsert(ctx, k); err != nil {
			w.T.Fatal(err)
		}
	}
}

// Rand returns a seeded generator and logs the seed.
func Rand(t testing.TB, seed uint64) *rand.Rand {
	t.Logf("seed %d", seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}
