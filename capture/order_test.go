package capture_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/capture"
	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/internal/topicscan"
	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/producer"
)

// hook removes a part of the ordering mechanism (docs/architecture.md,
// "Capture"), so that a test can show what it prevents.
type hook string

const (
	noHook hook = ""
	// hookNoLock resolves without the keys' locks.
	hookNoLock hook = "nolock"
	// hookDirect publishes resolved states straight to Kafka instead of
	// writing them into the outbox.
	hookDirect hook = "direct"
)

// seed is ECST_CAPTURE_SEED, or a new one; the test logs it, and setting
// the variable replays the run's choices.
func seed(t *testing.T) uint64 {
	t.Helper()
	if s := os.Getenv("ECST_CAPTURE_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("ECST_CAPTURE_SEED=%q: %v", s, err)
		}
		return n
	}
	return rand.Uint64() //nolint:gosec // a test's seed
}

// TestMixedWritersOrder: Go producer writers and SQL writers change the
// same keys at once, each bumping the version column under the row lock,
// so each key's states have increasing versions in commit order; the relay
// is killed and restarted throughout. Per key, the topic's versions never
// go down (a record the relay published again after a restart, same event
// id, is passed over), and the last record equals the source.
// ECST_CAPTURE_HOOK=direct (or nolock) runs it with the mechanism removed:
// see TestMixedWritersOrderNeedsTheMechanism.
func TestMixedWritersOrder(t *testing.T) {
	t.Parallel()
	h := hook(os.Getenv("ECST_CAPTURE_HOOK"))
	eachTransport(t, func(t *testing.T, o ecsttest.Options) {
		bad := mixedWriters(t, o, seed(t), h)
		for _, b := range bad[:min(len(bad), 10)] {
			t.Error(b)
		}
		if len(bad) > 0 {
			t.Errorf("%d order violations (hook %q)", len(bad), h)
		}
	})
}

// TestMixedWritersOrderNeedsTheMechanism: with either part of the
// mechanism removed, the same run breaks per-key order. Published straight
// to Kafka, a resolved state overtakes an older event still waiting in the
// outbox (every run). Resolved without the key lock, a state read before a
// Go writer's commit lands behind that writer's newer event (every run
// seen so far; up to three runs are tried).
func TestMixedWritersOrderNeedsTheMechanism(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T, o ecsttest.Options) {
		for _, h := range []hook{hookDirect, hookNoLock} {
			t.Run(string(h), func(t *testing.T) {
				for range 3 {
					if bad := mixedWriters(t, o, seed(t), h); len(bad) > 0 {
						t.Logf("as expected with hook %s, %d violations, e.g. %s", h, len(bad), bad[0])
						return
					}
				}
				t.Fatalf("with hook %s, no key's versions went down in three runs: the test no longer shows what the mechanism prevents", h)
			})
		}
	})
}

func mixedWriters(t *testing.T, o ecsttest.Options, seed uint64, h hook) (violations []string) {
	t.Helper()
	rng := ecsttest.Rand(t, seed)
	ctx := context.Background()
	w := newWorld(t, o)
	keys := ecsttest.Keys(6)
	w.Seed(ctx, keys)
	w.enable()

	rc := w.resolverConfig()
	switch h {
	case hookNoLock:
		capture.WithoutKeyLock(&rc)
	case hookDirect:
		cl := w.Client()
		t.Cleanup(cl.Close)
		capture.WithDirect(&rc, func(ctx context.Context, rows []outbox.Row) error {
			recs := make([]*kgo.Record, len(rows))
			for i, r := range rows {
				recs[i] = &kgo.Record{Topic: r.Topic, Key: []byte(r.Key), Value: r.Value}
				for _, hd := range r.Headers {
					recs[i].Headers = append(recs[i].Headers, kgo.RecordHeader{Key: hd.Key, Value: hd.Value})
				}
			}
			return cl.ProduceSync(ctx, recs...).FirstErr()
		})
	case noHook:
	default:
		t.Fatalf("ECST_CAPTURE_HOOK=%q: want direct or nolock", h)
	}

	// The writers: each does ops changes from a generator of its own,
	// drawn from the seed.
	const writers, ops = 6, 120
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		r := rand.New(rand.NewPCG(rng.Uint64(), uint64(i))) //nolint:gosec // a test's choices
		goWriter := i%2 == 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range ops {
				var err error
				if goWriter {
					err = goWrite(ctx, w, keys[r.IntN(len(keys))])
				} else {
					n := 1 + r.IntN(3)
					perm := r.Perm(len(keys))[:n]
					ks := make([]string, n)
					for j, p := range perm {
						ks[j] = keys[p]
					}
					err = sqlWrite(ctx, w, ks, r.IntN(4) == 0)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	// The relay, killed and started again until the writers are done.
	done := make(chan struct{})
	var relayWG sync.WaitGroup
	relayWG.Add(1)
	go func() {
		defer relayWG.Done()
		for {
			stop := w.RunRelay(w.relayConfig(rc))
			life := time.Duration(50+rng.IntN(400)) * time.Millisecond
			select {
			case <-done:
				_ = stop()
				return
			case <-time.After(life):
				_ = stop()
			}
		}
	}()
	wg.Wait()
	close(done)
	relayWG.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	stop := w.RunRelay(w.relayConfig(rc))
	defer stop() //nolint:errcheck
	wait.Eventually(t, 90*time.Second, "the relay to publish everything", func() bool { return w.OutboxLen() == 0 })
	var diffs []string
	limit := 60 * time.Second
	if h != noHook {
		limit = 3 * time.Second // the topic may never match: that is the point
	}
	_ = wait.Until(ctx, limit, 200*time.Millisecond, "the topic to equal the source", func() (bool, error) {
		diffs = w.diffs()
		return len(diffs) == 0, nil
	})
	for _, d := range diffs {
		violations = append(violations, "last record is not the source: "+d)
	}
	return append(violations, versionsGoDown(t, w)...)
}

// goWrite is a Go producer's write: the row and its event in one
// transaction, retried on deadlock.
func goWrite(ctx context.Context, w *world, key string) error {
	return retry(func() error {
		_, err := w.Upsert(ctx, key)
		return err
	})
}

// sqlWrite is an ad hoc statement on several keys, captured by the
// triggers; explicit also calls ecst.publish for them.
func sqlWrite(ctx context.Context, w *world, keys []string, explicit bool) error {
	return retry(func() error {
		return pgx.BeginFunc(ctx, w.Pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `UPDATE customers SET version = version + 1, name = 'sql ' || version, updated_at = now() WHERE id = ANY($1)`, keys); err != nil {
				return err
			}
			if explicit {
				_, err := tx.Exec(ctx, `SELECT ecst.publish('customer', $1::text[])`, keys)
				return err
			}
			return nil
		})
	})
}

func retry(f func() error) error {
	for {
		err := f()
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "40P01" {
			continue
		}
		return err
	}
}

// versionsGoDown reads the topic and returns, per key, each record whose
// version is below one published before it. A record with an event id
// already seen is the relay publishing again after a restart (at least
// once), and is passed over.
func versionsGoDown(t *testing.T, w *world) []string {
	t.Helper()
	type rec struct {
		id      string
		version int64
		offset  int64
	}
	byKey := map[string][]rec{}
	_, err := topicscan.Scan(context.Background(), w.Kafka(), w.Topic, nil, func(r *kgo.Record) error {
		var x rec
		x.offset = r.Offset
		for _, h := range r.Headers {
			switch h.Key {
			case producer.HeaderEventID:
				x.id = string(h.Value)
			case producer.HeaderEntityVersion:
				x.version, _ = strconv.ParseInt(string(h.Value), 10, 64)
			}
		}
		byKey[string(r.Key)] = append(byKey[string(r.Key)], x)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var bad []string
	for _, k := range slices.Sorted(maps.Keys(byKey)) {
		seen := map[string]bool{}
		top := int64(-1)
		for _, x := range byKey[k] {
			if seen[x.id] {
				continue
			}
			seen[x.id] = true
			if x.version < top {
				bad = append(bad, fmt.Sprintf("key %s: v%d at offset %d after v%d", k, x.version, x.offset, top))
			}
			top = max(top, x.version)
		}
	}
	return bad
}
