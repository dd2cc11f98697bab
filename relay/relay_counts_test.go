package relay_test

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/ecst-io/ecst/relay"
	"github.com/twmb/franz-go/pkg/kadm"
)

// TestRelayCounts: a relay counts, by topic, the records it committed to
// Kafka and those it parked, and a drain of an empty outbox counts none.
func TestRelayCounts(t *testing.T) {
	t.Parallel()
	for _, o := range transports() {
		t.Run(o.name(), func(t *testing.T) {
			t.Parallel()
			relayCounts(t, o)
		})
	}
}

func relayCounts(t *testing.T, o envOpts) {
	e := newEnv(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	insertHuge(t, e) // before, huge (refused by the broker), after
	for i := range 3 {
		if _, err := e.write(ctx, fmt.Sprintf("k%d", i), false); err != nil {
			t.Fatal(err)
		}
	}
	drain := func() relay.Counts {
		t.Helper()
		cfg := e.relayConfig()
		cfg.Drain = true
		cfg.OnReject = relay.RejectPark
		cfg.BatchSize = 2 // several batches
		r, err := relay.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Run(ctx); err != nil {
			t.Fatal(err)
		}
		return r.Counts()
	}
	committed := e.caughtUp()
	c := drain()
	if want := map[string]int64{e.topic: 5}; !maps.Equal(c.Published, want) {
		t.Errorf("published %v, want %v", c.Published, want)
	}
	if want := map[string]int64{e.topic: 1}; !maps.Equal(c.Parked, want) {
		t.Errorf("parked %v, want %v", c.Parked, want)
	}
	if relay.Total(c.Published) != 5 || relay.Total(c.Parked) != 1 {
		t.Errorf("totals %d published, %d parked", relay.Total(c.Published), relay.Total(c.Parked))
	}
	if !committed() {
		t.Fatalf("%d left after the drain", e.backlog())
	}
	if c := drain(); len(c.Published) != 0 || len(c.Parked) != 0 {
		t.Errorf("a drain of an empty outbox counted %+v", c)
	}
}

// TestDrainReturnsOnceReadable: when a drain returns, read_committed
// consumers can read all it published. A Kafka commit returns before its
// markers are written; a drain that returned then would let
// `ecst relay --drain && ecst mirror --once` stop short of the last batch.
// (On kfake the markers are written with the commit, so this can only
// fail on a real broker.)
func TestDrainReturnsOnceReadable(t *testing.T) {
	t.Parallel()
	for _, o := range transports() {
		t.Run(o.name(), func(t *testing.T) {
			t.Parallel()
			drainReturnsOnceReadable(t, o)
		})
	}
}

func drainReturnsOnceReadable(t *testing.T, o envOpts) {
	e := newEnv(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	adm := kadm.NewClient(e.client())
	for round := range 5 {
		for i := range 20 {
			if _, err := e.write(ctx, fmt.Sprintf("k%d", i), false); err != nil {
				t.Fatal(err)
			}
		}
		cfg := e.relayConfig()
		cfg.Drain = true
		cfg.BatchSize = 7
		r, err := relay.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Run(ctx); err != nil {
			t.Fatal(err)
		}
		ends, err := adm.ListEndOffsets(ctx, e.topic)
		if err != nil {
			t.Fatal(err)
		}
		stable, err := adm.ListCommittedOffsets(ctx, e.topic)
		if err != nil {
			t.Fatal(err)
		}
		ends.Each(func(o kadm.ListedOffset) {
			if s, _ := stable.Lookup(o.Topic, o.Partition); s.Offset < o.Offset {
				t.Errorf("round %d: partition %d readable to %d of %d when the drain returned", round, o.Partition, s.Offset, o.Offset)
			}
		})
	}
}
