package verify_test

import (
	"context"
	"errors"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/internal/pgtest"
	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/relay"
	"github.com/ecst-io/ecst/verify"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func cfg(w *ecsttest.World) verify.Config {
	return verify.Config{Pool: w.Pool, Registry: w.Registry, Entity: w.Entity, Kafka: w.Kafka(), Publisher: w.Pub}
}

func TestVerifyQuietSystemIsInSync(t *testing.T) {
	w := ecsttest.New(t, ecsttest.Options{})
	ctx := context.Background()
	keys := ecsttest.Keys(50)
	w.Seed(ctx, keys)
	for _, k := range keys[:10] {
		_, _ = w.Upsert(ctx, k)
	}
	for _, k := range keys[40:] {
		_ = w.Delete(ctx, k)
	}
	w.Drain()
	rep, err := verify.Run(ctx, cfg(w), verify.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.InSync() || rep.SourceKeys != 40 || rep.TopicKeys != 40 || rep.InFlight != 0 {
		t.Fatalf("quiet system: %+v", rep)
	}
}

// transports runs f once per outbox transport, on a world of its own.
func transports(t *testing.T, f func(t *testing.T, w *ecsttest.World)) {
	for _, wal := range []bool{false, true} {
		t.Run(map[bool]string{false: "table", true: "wal"}[wal], func(t *testing.T) {
			f(t, ecsttest.New(t, ecsttest.Options{WAL: wal}))
		})
	}
}

// TestVerifyFindsEachDriftAndNoneInFlight: in flight are the events not
// yet published, rows of the outbox table or, with the WAL transport,
// events the slot holds (read from it while no relay streams it).
func TestVerifyFindsEachDriftAndNoneInFlight(t *testing.T) {
	transports(t, verifyFindsEachDrift)
}

func verifyFindsEachDrift(t *testing.T, w *ecsttest.World) {
	ctx := context.Background()
	w.Seed(ctx, ecsttest.Keys(20))
	w.Drain()
	// Changes behind ecst's back: drift.
	w.Exec(`INSERT INTO customers (id, version, name, email) VALUES ('zz-new', 1, 'n', 'e')`) // missing
	w.Exec(`DELETE FROM customers WHERE id = 'c00003'`)                                       // extra
	w.Exec(`UPDATE customers SET name = 'renamed' WHERE id = 'c00005'`)                       // stale
	// A poison record on the topic: stale.
	cl, err := kgo.NewClient(w.Kafka()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: w.Topic, Key: []byte("c00009"), Value: []byte("not avro")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// Changes still in the outbox: in flight, not drift.
	if _, err := w.Upsert(ctx, "c00007"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Upsert(ctx, "zz-inflight"); err != nil {
		t.Fatal(err)
	}
	if err := w.Delete(ctx, "c00011"); err != nil {
		t.Fatal(err)
	}

	rep, err := verify.Run(ctx, cfg(w), verify.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.InSync() {
		t.Fatal("drift not found")
	}
	want := verify.Sample{Missing: []string{"zz-new"}, Extra: []string{"c00003"}, Stale: []string{"c00005", "c00009"}}
	if rep.Missing != 1 || rep.Extra != 1 || rep.Stale != 2 || !slices.Equal(rep.Samples.Missing, want.Missing) ||
		!slices.Equal(rep.Samples.Extra, want.Extra) || !slices.Equal(rep.Samples.Stale, want.Stale) {
		t.Fatalf("report %+v, want samples %+v", rep, want)
	}
	if rep.InFlight != 3 {
		t.Fatalf("in flight %d, want 3", rep.InFlight)
	}
	if len(rep.Diffs) != 2 || rep.Diffs[0].Key != "c00005" || len(rep.Diffs[0].Fields) != 1 || rep.Diffs[0].Fields[0].Field != "name" ||
		rep.Diffs[0].Fields[0].Want != "renamed" {
		t.Fatalf("diffs %+v, want the name of c00005", rep.Diffs)
	}

	// Repair: exactly the drifted keys, then in sync.
	stop := w.StartRelay()
	defer stop() //nolint:errcheck
	w.WaitRelayLeads()
	rep, err = verify.Run(ctx, cfg(w), verify.Options{Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Repair == nil || rep.Repair.Republished != 3 || rep.Repair.Tombstoned != 1 || !rep.InSync() || rep.Repair.After.Stale != 0 {
		t.Fatalf("repair: %+v after %+v", rep.Repair, rep.Repair.After)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if d := w.TopicMatchesSource(); len(d) > 0 {
		t.Fatal(d)
	}
}

// TestVerifyNoFalseAlarmsUnderLiveTraffic: writers keep changing keys while
// verify runs against a running relay; every change is in flight or on the
// topic, and verify reports no drift.
func TestVerifyNoFalseAlarmsUnderLiveTraffic(t *testing.T) {
	transports(t, verifyUnderLiveTraffic)
}

func verifyUnderLiveTraffic(t *testing.T, w *ecsttest.World) {
	ctx := context.Background()
	keys := ecsttest.Keys(100)
	w.Seed(ctx, keys)
	stop := w.StartRelay()
	defer stop() //nolint:errcheck
	done := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		rng := ecsttest.Rand(t, 7)
		for {
			select {
			case <-done:
				return
			default:
			}
			k := keys[rng.IntN(len(keys))]
			if rng.IntN(4) == 0 {
				_ = w.Delete(ctx, k)
			} else {
				_, _ = w.Upsert(ctx, k)
			}
		}
	}()
	// A pause between the first snapshot and the topic read lets changes
	// made after the snapshot reach the topic: drift at first sight, which
	// the second look must clear.
	opts := verify.Options{}
	verify.PauseAfterSnapshot(&opts, func() { time.Sleep(30 * time.Millisecond) })
	for range 5 {
		rep, err := verify.Run(ctx, cfg(w), opts)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.InSync() {
			t.Fatalf("false alarm under live traffic: %+v", rep)
		}
	}
	close(done)
	<-writerDone
}

// TestRepairNeedsARelayForEachShard: with no relay, a repair writes nothing
// and says so at once; with a relay serving only some shards, the rows of
// the others wait for nobody, and the repair says which shard, and what it
// wrote, instead of waiting out --wait.
func TestRepairNeedsARelayForEachShard(t *testing.T) {
	w := ecsttest.New(t, ecsttest.Options{})
	ctx := context.Background()
	keys := ecsttest.Keys(20)
	w.Seed(ctx, keys)
	w.Drain()
	w.Exec(`UPDATE customers SET name = 'changed'`)
	cfg2 := *w.Config
	cfg2.Outbox.Shards = 2
	pub, err := producer.FromConfig(&cfg2, w.Registry)
	if err != nil {
		t.Fatal(err)
	}
	vc := cfg(w)
	vc.Publisher = pub
	opts := verify.Options{Repair: true, Wait: time.Minute}
	verify.LeaderGrace(&opts, 500*time.Millisecond)

	start := time.Now()
	rep, err := verify.Run(ctx, vc, opts)
	if !errors.Is(err, verify.ErrNoRelay) || rep == nil || rep.Repair != nil || rep.Stale != 20 || !strings.Contains(err.Error(), "then run verify.Options{Repair: true} again. Nothing was written") {
		t.Fatalf("no relay: %v, report %+v", err, rep)
	}
	n, _ := outbox.PendingCount(ctx, w.Pool, 0)
	if n != 0 || time.Since(start) > 20*time.Second {
		t.Fatalf("no relay: %d outbox rows written, failed after %s", n, time.Since(start))
	}

	rc := w.RelayConfig()
	rc.TotalShards, rc.Shards = 2, []int{0}
	w.RunRelay(rc) // until the test ends
	if err := wait.Until(ctx, 30*time.Second, 10*time.Millisecond, "the relay to lead shard 0", func() (bool, error) {
		l, err := relay.Leaders(ctx, w.Pool)
		return len(l) == 1, err
	}); err != nil {
		t.Fatal(err)
	}
	var inShard1 int
	for _, k := range keys {
		if outbox.Shard(w.Topic, k, 2) == 1 {
			inShard1++
		}
	}
	rep, err = verify.Run(ctx, vc, opts)
	if !errors.Is(err, verify.ErrNoRelay) || rep.Repair == nil || rep.Repair.Republished != 20 {
		t.Fatalf("shard 1 not led: %v, repair %+v", err, rep.Repair)
	}
	for _, want := range []string{"no relay has led outbox shard 1 for 500ms", "republish run 1: 20 full states, 0 tombstones", "start `ecst relay`", "check with verify.Options{}"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("shard 1 not led: the error lacks %q:\n%v", want, err)
		}
	}
	// Shard 1's rows are left (and shard 0's, if its relay is slow).
	m := regexp.MustCompile(`(\d+) of the 20 outbox rows the repair waits for are not published yet`).FindStringSubmatch(err.Error())
	if m == nil {
		t.Fatalf("shard 1 not led: the error does not say how many rows are left:\n%v", err)
	}
	if left, _ := strconv.Atoi(m[1]); left < inShard1 {
		t.Errorf("shard 1 not led, with %d of the repair's rows: the error says %s are left", inShard1, m[1])
	}
}
