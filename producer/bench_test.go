package producer_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ecst-io/ecst/capture"
	"github.com/ecst-io/ecst/relay"
)

// BenchmarkBusinessTx measures what the outbox costs a service: one
// business transaction (an upsert of one customer row) alone, and the same
// transaction with one Publish, at concurrency 1 and 8, in one run on one
// server: the table transport's modes on one database, the WAL transport's
// (wal, wal-queued) on another, switched to it, and the bare transaction on
// a third whose customers table is captured (`ecst capture enable`: the
// statement's trigger writes a marker). Compare tx/s of each mode against
// bare at the same concurrency.
// The modes take turns, round after round (-benchtime per turn), so that a
// machine getting busier or quieter during the run skews them alike: run it
// with -count 1 and read each sub-benchmark's rounds as samples.
// `make bench` runs it on a durable cluster (fsync and synchronous_commit
// on), the setting the ratio is meant for.
func BenchmarkBusinessTx(b *testing.B) {
	f := newFixture(b, fixtureOpts{})
	fw := newFixture(b, fixtureOpts{wal: true})
	fc := newFixture(b, fixtureOpts{})
	if _, err := capture.Enable(context.Background(), fc.pool, fc.w.Entity, false); err != nil {
		b.Fatal(err)
	}
	for range benchRounds {
		benchRound(b, f, fw, fc)
	}
}

const benchRounds = 3

func benchRound(b *testing.B, ft, fw, fc *fixture) {
	ctx := context.Background()
	for _, conc := range []int{1, 8} {
		pools := map[*fixture]*pgxpool.Pool{}
		for _, f := range []*fixture{ft, fw, fc} {
			pcfg := f.pool.Config().Copy()
			pcfg.MaxConns = int32(conc + 1)
			pool, err := pgxpool.NewWithConfig(ctx, pcfg)
			if err != nil {
				b.Fatal(err)
			}
			pools[f] = pool
		}
		for _, mode := range []string{"bare", "outbox", "outbox-queued", "wal", "wal-queued", "outbox+notify", "capture"} {
			f := ft
			if strings.HasPrefix(mode, "wal") {
				f = fw
			}
			if mode == "capture" {
				f = fc
			}
			pool := pools[f]
			name := fmt.Sprintf("c=%d/%s", conc, mode)
			b.Run(name, func(b *testing.B) {
				if _, err := pool.Exec(ctx, "TRUNCATE customers, ecst.outbox"); err != nil {
					b.Fatal(err)
				}
				// The WAL database's slot has no relay here: advance it, as
				// a relay keeping up would, so that the checkpoint recycles
				// WAL instead of every mode writing new segments.
				if _, err := pools[fw].Exec(ctx, "SELECT pg_replication_slot_advance($1, pg_current_wal_lsn())", relay.SlotName(fw.w.Service)); err != nil {
					b.Fatal(err)
				}
				if _, err := pool.Exec(ctx, "CHECKPOINT"); err != nil {
					b.Fatal(err)
				}
				var next atomic.Int64
				var wg sync.WaitGroup
				errs := make(chan error, conc)
				b.ResetTimer()
				start := time.Now()
				for w := range conc {
					wg.Add(1)
					go func() {
						defer wg.Done()
						rng := rand.New(rand.NewPCG(uint64(w), 1))
						for next.Add(1) <= int64(b.N) {
							if err := businessTx(ctx, f, pool, fmt.Sprintf("c%d", rng.IntN(100_000)), mode); err != nil {
								errs <- err
								return
							}
						}
					}()
				}
				wg.Wait()
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "tx/s")
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
			})
		}
		for _, p := range pools {
			p.Close()
		}
	}
}

// businessTx is one business transaction. mode "outbox" adds a Publish;
// "outbox-queued" sends the upsert and the event in one pgx.Batch
// (Publisher.Queue), so the event adds no round trip; "wal" and
// "wal-queued" are the two with the WAL transport; "outbox+notify" also
// sends pg_notify, the wake-up ecst's relay does not use, to measure what
// it would cost writers; "capture" is bare on the captured table.
func businessTx(ctx context.Context, f *fixture, pool *pgxpool.Pool, key, mode string) error {
	if mode == "outbox-queued" || mode == "wal-queued" {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			version := time.Now().UnixNano() // the service knows the new version
			updated := time.Now()
			b := &pgx.Batch{}
			b.Queue(`INSERT INTO customers (id, version, name, email, tier, updated_at) VALUES ($1, $2, 'Ada Lovelace', 'ada@example.com', 'gold', $3)
				ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, updated_at = EXCLUDED.updated_at`, key, version, updated)
			err := f.pub.Queue(ctx, b, "customer", key, version, map[string]any{
				"id": key, "version": version, "name": "Ada Lovelace", "email": "ada@example.com", "tier": "gold", "updated_at": updated,
			})
			if err != nil {
				return err
			}
			return tx.SendBatch(ctx, b).Close()
		})
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var version int64
		var updated time.Time
		err := tx.QueryRow(ctx, `
			INSERT INTO customers (id, version, name, email, tier) VALUES ($1, 1, 'Ada Lovelace', 'ada@example.com', 'gold')
			ON CONFLICT (id) DO UPDATE SET version = customers.version + 1, updated_at = now()
			RETURNING version, updated_at`, key).Scan(&version, &updated)
		if err != nil || mode == "bare" || mode == "capture" {
			return err
		}
		err = f.pub.Publish(ctx, tx, "customer", key, version, map[string]any{
			"id": key, "version": version, "name": "Ada Lovelace", "email": "ada@example.com", "tier": "gold", "updated_at": updated,
		})
		if err != nil || mode != "outbox+notify" {
			return err
		}
		_, err = tx.Exec(ctx, "SELECT pg_notify('ecst_outbox', '')")
		return err
	})
}
