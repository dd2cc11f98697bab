package outbox_test

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/ecst-io/ecst/outbox"
)

// TestRelayCounts: a relay counts, by topic, the records it committed to
// Kafka and those it parked, and a drain of an empty outbox counts none.
func TestRelayCounts(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	insertHuge(t, e) // before, huge (refused by the broker), after
	for i := range 3 {
		if _, err := e.write(ctx, fmt.Sprintf("k%d", i), false); err != nil {
			t.Fatal(err)
		}
	}
	drain := func() outbox.Counts {
		t.Helper()
		cfg := e.relayConfig()
		cfg.Drain = true
		cfg.OnReject = outbox.RejectPark
		cfg.BatchSize = 2 // several batches
		r, err := outbox.NewRelay(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Run(ctx); err != nil {
			t.Fatal(err)
		}
		return r.Counts()
	}
	c := drain()
	if want := map[string]int64{e.topic: 5}; !maps.Equal(c.Published, want) {
		t.Errorf("published %v, want %v", c.Published, want)
	}
	if want := map[string]int64{e.topic: 1}; !maps.Equal(c.Parked, want) {
		t.Errorf("parked %v, want %v", c.Parked, want)
	}
	if outbox.Total(c.Published) != 5 || outbox.Total(c.Parked) != 1 {
		t.Errorf("totals %d published, %d parked", outbox.Total(c.Published), outbox.Total(c.Parked))
	}
	if n := e.outboxCount(); n != 0 {
		t.Fatalf("%d rows left in the outbox", n)
	}
	if c := drain(); len(c.Published) != 0 || len(c.Parked) != 0 {
		t.Errorf("a drain of an empty outbox counted %+v", c)
	}
}
