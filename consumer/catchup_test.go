package consumer_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ecst-io/ecst/consumer"
)

// TestCatchUpStopsOnPermanentError: an error that retrying cannot fix (the
// table is gone) ends CatchUp with that error, at once, instead of a retry
// every second until someone notices.
func TestCatchUpStopsOnPermanentError(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.write(w.upsert("a", 1))
	m := stores[1].make(t, w)
	if _, err := m.pool.Exec(context.Background(), "DROP TABLE customers_mirror"); err != nil {
		t.Fatal(err)
	}
	c := w.consumer(t, m, "permanent")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := c.CatchUp(ctx)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "42P01" || ctx.Err() != nil {
		t.Fatalf("CatchUp = %v (context %v), want the undefined_table error before the deadline", err, ctx.Err())
	}
}

// TestCatchUpRetriesPassingErrors: an error that may pass (a lock wait
// that timed out) is retried, and the catch-up completes once it passes.
func TestCatchUpRetriesPassingErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t)
	w.write(w.upsert("a", 1), w.upsert("b", 1))
	m := stores[1].make(t, w)
	// The consumer's connections give up on a lock after 50ms (55P03).
	pcfg := m.pool.Config().Copy()
	pcfg.ConnConfig.RuntimeParams["lock_timeout"] = "50ms"
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	pg := m.store.(*consumer.Postgres[map[string]any])
	locker, err := m.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Rollback(ctx) //nolint:errcheck
	if _, err := locker.Exec(ctx, "LOCK TABLE customers_mirror IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	logs := &signalWriter{want: "55P03", seen: make(chan struct{})}
	c := w.consumer(t, m, "retry", func(cfg *consumer.Config[map[string]any]) {
		cfg.Store = &consumer.Postgres[map[string]any]{Pool: pool, Table: pg.Table, Projection: pg.Projection}
		cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	done := make(chan error, 1)
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	go func() { done <- c.CatchUp(cctx) }()
	select {
	case <-logs.seen: // the lock timed out, and the consumer retries
	case err := <-done:
		t.Fatalf("CatchUp ended while the table was locked: %v", err)
	}
	if err := locker.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil || cctx.Err() != nil {
		t.Fatalf("CatchUp after the lock was released = %v (context %v)", err, cctx.Err())
	}
	w.assertModel(t, m)
}

// signalWriter closes seen once a write contains want.
type signalWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
	once sync.Once
}

func (s *signalWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Write(p)
	if strings.Contains(s.buf.String(), s.want) {
		s.once.Do(func() { close(s.seen) })
	}
	return len(p), nil
}

// TestCatchUpInterrupted: a CatchUp stopped before it caught up says so:
// an error wrapping the context's, never the nil of a finished catch-up.
func TestCatchUpInterrupted(t *testing.T) {
	t.Parallel()
	for _, sk := range stores {
		t.Run(sk.name, func(t *testing.T) {
			t.Parallel()
			w, m := sk.worldWith(t, 4, 300, 50)
			gate := &gatedStore{Store: m.store, entered: make(chan struct{}), release: make(chan struct{})}
			c := w.consumer(t, m, "interrupted", func(cfg *consumer.Config[map[string]any]) { cfg.Store = gate; cfg.MaxBatch = 10 })
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- c.CatchUp(ctx) }()
			<-gate.entered
			cancel()
			close(gate.release)
			err := <-done
			if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "stopped before catching up with "+w.topic) {
				t.Fatalf("CatchUp = %v, want an error saying it did not catch up", err)
			}
			if c.Ready() {
				t.Fatal("an interrupted catch-up reports ready")
			}
		})
	}
}

// TestProgressCountsRecords: progress counts the records applied, upserts
// and deletions, not the offsets, which transaction markers take too.
func TestProgressCountsRecords(t *testing.T) {
	t.Parallel()
	for _, sk := range stores {
		t.Run(sk.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			w.write(w.upsert("a", 1), w.upsert("b", 1), w.upsert("c", 1))
			w.write(w.tombstone("a"))
			m := sk.make(t, w)
			var last consumer.Progress
			c := w.consumer(t, m, "progress", func(cfg *consumer.Config[map[string]any]) {
				cfg.Progress = func(p consumer.Progress) { last = p }
			})
			if err := catchUp(t, c); err != nil {
				t.Fatal(err)
			}
			if last.Upserts != 3 || last.Deletes != 1 || last.Records() != 4 || last.Skipped != 0 {
				t.Fatalf("progress %+v, want 3 upserts and 1 deletion", last)
			}
			if last.Read != last.End || last.End <= 4 {
				t.Fatalf("progress %+v: want every offset read, markers included (more than the 4 records)", last)
			}
		})
	}
}
