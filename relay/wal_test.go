package relay_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/relay"
)

func TestWALRelayDeliversInOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{wal: true})
	stop := e.runRelay(e.relayConfig())
	log, wait := e.runLoad(context.Background(), 8, 200, 3000)
	wait()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	e.drain()
	rep := e.check(log)
	t.Logf("%d events committed, %d records on the topic for %d keys, %d duplicates", log.count(), rep.records, rep.keys, rep.duplicates)
}

// strictOrder returns, for the records of the topic, the keys whose
// versions do not strictly increase in offset order: a state published
// behind a newer one, or twice.
func strictOrder(recs []topicRecord) []string {
	last := map[string]int64{}
	var bad []string
	for _, r := range recs {
		v, _ := strconv.ParseInt(r.headers[producer.HeaderEntityVersion], 10, 64)
		if v <= last[r.key] {
			bad = append(bad, fmt.Sprintf("%s: v%d after v%d", r.key, v, last[r.key]))
		}
		last[r.key] = max(last[r.key], v)
	}
	return bad
}

// switchingWriters write keys until stop is closed, each with the
// transport the database takes: a write refused with ErrTransportMismatch
// is done again with the other one (what a redeploy does, faster).
func switchingWriters(ctx context.Context, e *env, writers int, stop <-chan struct{}) (*loadLog, func(), *atomic.Int64) {
	pubs := map[outbox.Transport]*producer.Publisher{
		outbox.TransportTable: e.publisher(outbox.TransportTable),
		outbox.TransportWAL:   e.publisher(outbox.TransportWAL),
	}
	log := &loadLog{keys: map[string]bool{}}
	var refused atomic.Int64
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(w)))
			t := e.transport()
			for {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("k-%d", rng.IntN(40))
				ev, err := e.writeWith(ctx, pubs[t], key, rng.IntN(10) == 0)
				switch {
				case errors.Is(err, outbox.ErrTransportMismatch):
					refused.Add(1)
					if t == outbox.TransportTable {
						t = outbox.TransportWAL
					} else {
						t = outbox.TransportTable
					}
					time.Sleep(time.Millisecond) // the switch is under way: both transports refuse for a moment
				case err != nil:
					e.t.Error(err)
					return
				case ev.key != "":
					log.mu.Lock()
					log.committed = append(log.committed, ev)
					log.keys[key] = true
					log.mu.Unlock()
				}
			}
		}()
	}
	return log, wg.Wait, &refused
}

// TestSwitchUnderLiveWrites switches a running system from the table
// transport to the WAL and back while writers keep writing and relays of
// both transports run: every committed event reaches the topic, once, and
// every key's states in commit order.
func TestSwitchUnderLiveWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, envOpts{})
	stopTable := e.runRelay(e.relayConfig())
	stop := make(chan struct{})
	log, wait, refused := switchingWriters(ctx, e, 6, stop)
	grow := func(n int) {
		target := log.count() + n
		waitFor(t, fmt.Sprintf("%d more events", n), time.Minute, func() bool { return log.count() >= target })
	}
	grow(500)
	start := time.Now()
	res, err := relay.Switch(ctx, e.pool, outbox.TransportWAL, relay.SwitchOptions{Service: e.service, Wait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("table → wal in %v (slot created: %v, rows pending at the switch: %v)", time.Since(start).Round(time.Millisecond), res.SlotCreated, res.PendingRows)
	walCfg := e.relayConfig()
	walCfg.Transport = outbox.TransportWAL
	stopWAL := e.runRelay(walCfg)
	grow(500)
	start = time.Now()
	res, err = relay.Switch(ctx, e.pool, outbox.TransportTable, relay.SwitchOptions{Service: e.service, Wait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("wal → table in %v (slot dropped: %v, at %s)", time.Since(start).Round(time.Millisecond), res.SlotDropped, res.SwitchLSN)
	if !res.SlotDropped {
		t.Error("the switch to the table transport left the slot")
	}
	grow(500)
	close(stop)
	wait()
	waitFor(t, "the table relay to catch up", time.Minute, e.caughtUp())
	if err := stopTable(); err != nil {
		t.Fatal(err)
	}
	// The WAL relay stopped on its own once its slot was dropped: the
	// database runs the table transport, and nothing of the WAL is left.
	if err := stopWAL(); !errors.Is(err, outbox.ErrTransportMismatch) {
		t.Errorf("the WAL relay ended with %v, want ErrTransportMismatch", err)
	}
	rep := e.check(log)
	if bad := strictOrder(e.readTopic()); len(bad) > 0 {
		t.Errorf("%d records out of commit order across the switches, e.g. %v", len(bad), bad[0])
	}
	t.Logf("%d events, %d records, %d duplicates, %d writes refused during the switches", log.count(), rep.records, rep.duplicates, refused.Load())
}

// TestSwitchNeedsItsWait shows what the switch's wait is for: a WAL relay
// holds K's first state (stalled), the switch opens the table transport at
// once (and drops the slot), and a table relay publishes K's second state
// first.
func TestSwitchNeedsItsWait(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, envOpts{wal: true})
	walCfg := e.relayConfig()
	read, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	relay.WithBeforeProduce(&walCfg, func(int, []int64) { once.Do(func() { close(read); <-release }) })
	stopWAL := e.runRelay(walCfg)
	var released sync.Once
	t.Cleanup(func() { released.Do(func() { close(release) }) }) // before the relays stop
	if _, err := e.writeWith(ctx, e.pub, "K", false); err != nil {
		t.Fatal(err)
	}
	<-read
	opts := relay.SwitchOptions{Service: e.service}
	relay.WithoutSwitchWait(&opts)
	if _, err := relay.Switch(ctx, e.pool, outbox.TransportTable, opts); err != nil {
		t.Fatal(err)
	}
	tableCfg := e.relayConfig()
	tableCfg.Transport = outbox.TransportTable
	stopTable := e.runRelay(tableCfg)
	ev2, err := e.writeWith(ctx, e.publisher(outbox.TransportTable), "K", false)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the table relay to publish K's second state", time.Minute, e.caughtUp())
	released.Do(func() { close(release) })
	_ = stopWAL()
	if err := stopTable(); err != nil {
		t.Fatal(err)
	}
	bad := strictOrder(e.readTopic())
	if len(bad) == 0 {
		t.Fatalf("without the switch's wait K still ended on v%d: the scenario does not reorder", ev2.version)
	}
	t.Logf("without the switch's wait: %v", bad)
}
