package consumer_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ecst-io/ecst/consumer"
	"github.com/ecst-io/ecst/internal/wait"
)

// TestRebuildUnderLoad rebuilds a mirror of 200k entities while readers
// query it throughout and a writer keeps updating: every read sees the
// whole model, old or new, never a partial or empty one.
func TestRebuildUnderLoad(t *testing.T) {
	t.Parallel()
	const entities = 200_000
	w := newWorld(t)
	w.seed(entities, 5000)
	m := stores[1].make(t, w)
	pg := m.store.(*consumer.Postgres[map[string]any])
	live := w.consumer(t, m, "mirror", func(c *consumer.Config[map[string]any]) { c.MaxBatch = 5000 })
	stopLive := start(t, live)
	waitReady(t, live)
	ctx := context.Background()

	var reads, bad atomic.Int64
	var firstBad atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				var n int
				if err := m.pool.QueryRow(ctx, "SELECT count(*) FROM customers_mirror").Scan(&n); err != nil {
					bad.Add(1)
					firstBad.CompareAndSwap(nil, err.Error())
					continue
				}
				reads.Add(1)
				if n != entities {
					bad.Add(1)
					firstBad.CompareAndSwap(nil, "count "+strconv.Itoa(n))
				}
			}
		}()
	}
	// Live updates to existing keys continue during the rebuild.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			w.write(w.upsert("e"+strconv.Itoa(i%entities), int64(2+i)))
			time.Sleep(10 * time.Millisecond)
		}
	}()
	began := time.Now()
	cfg := consumer.Config[map[string]any]{Name: "mirror", Topic: w.topic, KafkaOpts: w.opts(), Registry: w.registry, Store: pg, MaxBatch: 5000}
	if err := consumer.Rebuild(ctx, cfg, pg); err != nil {
		t.Fatal(err)
	}
	took := time.Since(began)
	// Readers go on querying the swapped-in table for a while.
	after := reads.Load() + bad.Load()
	wait.Eventually(t, time.Minute, "readers to query the rebuilt table", func() bool { return reads.Load()+bad.Load() >= after+20 })
	close(stop)
	wg.Wait()
	if bad.Load() > 0 {
		t.Fatalf("%d of %d reads saw a partial model or failed; first: %v", bad.Load(), reads.Load(), firstBad.Load())
	}
	t.Logf("rebuilt %d entities in %v (%.0f/s) while %d reads all saw the whole model", entities, took.Round(time.Millisecond), entities/took.Seconds(), reads.Load())
	// The live consumer noticed the swap and follows on from the new table.
	w.write(w.upsert("after-rebuild", 1))
	wait.Eventually(t, time.Minute, "the live consumer to follow on after the swap", func() bool { _, ok := m.snapshot()["after-rebuild"]; return ok })
	if err := stopLive(); err != nil {
		t.Fatal(err)
	}
	w.assertModel(t, m)
}
