package capture_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ecst-io/ecst/capture"
	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/relay"
)

// counting counts the resolver's calls.
type counting struct {
	relay.Resolver
	calls atomic.Int64
}

func (c *counting) Resolve(ctx context.Context, ms []relay.Marker) error {
	c.calls.Add(1)
	return c.Resolver.Resolve(ctx, ms)
}

// TestNoCaptureCostsNothing: an entity without capture has no trigger, its
// writes leave no marker, and the relay never calls the resolver (which
// plans an entity's source query only on its first marker).
func TestNoCaptureCostsNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, ecsttest.Options{})
	w.Seed(ctx, ecsttest.Keys(20))
	w.Exec(`UPDATE customers SET name = 'ad hoc'`)
	var n int
	if err := w.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgrelid = 'customers'::regclass`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d triggers on customers (%v)", n, err)
	}
	if ms := markers(t, w); len(ms) != 0 {
		t.Fatalf("markers without capture: %v", ms)
	}
	res, err := capture.NewResolver(w.resolverConfig())
	if err != nil {
		t.Fatal(err)
	}
	c := &counting{Resolver: res}
	cfg := w.RelayConfig()
	cfg.Resolver = c
	w.DrainWith(cfg)
	if c.calls.Load() != 0 {
		t.Fatalf("the relay called the resolver %d times with no marker", c.calls.Load())
	}
}

// TestDrainPublishesCaptured: `ecst relay --drain` returns only once the
// states the captured changes resolve to are on the topic, in either
// transport (the WAL drain's target moves past each resolution's commit).
func TestDrainPublishesCaptured(t *testing.T) {
	t.Parallel()
	eachTransport(t, drainPublishesCaptured)
}

func drainPublishesCaptured(t *testing.T, o ecsttest.Options) {
	ctx := context.Background()
	w := newWorld(t, o)
	w.enable()
	w.Seed(ctx, ecsttest.Keys(50))
	w.Exec(`UPDATE customers SET version = version + 1, name = 'drained' WHERE id < 'c00030'`)
	w.Exec(`DELETE FROM customers WHERE id >= 'c00040'`)
	w.DrainWith(w.relayConfig(w.resolverConfig()))
	if d := w.diffs(); len(d) != 0 {
		t.Fatalf("after the drain returned, %d keys differ, e.g. %v", len(d), d[:min(3, len(d))])
	}
}

// TestMarkerRefused: a marker the relay cannot resolve (no resolver; an
// entity ecst.yaml does not declare) halts the relay with the fix, or,
// under relay.on_reject: park, is parked while the rest goes on.
func TestMarkerRefused(t *testing.T) {
	t.Parallel()
	eachTransport(t, markerRefused)
}

func markerRefused(t *testing.T, o ecsttest.Options) {
	ctx := context.Background()
	w := newWorld(t, o)
	w.Exec(`SELECT ecst.publish('customer', 'c1')`)
	cfg := w.RelayConfig()
	r, err := relay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err = r.Run(rctx)
	if _, ok := errors.AsType[*relay.RejectedError](err); !ok || !strings.Contains(err.Error(), "this relay has no capture resolver") {
		t.Fatalf("a relay without a resolver: %v", err)
	}

	w.Exec(`SELECT ecst.publish('nobody', 'x')`)
	cfg = w.relayConfig(w.resolverConfig())
	cfg.OnReject = relay.RejectPark
	if _, err := w.Upsert(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	w.DrainWith(cfg)
	var parked string
	if err := w.Pool.QueryRow(ctx, `SELECT error FROM ecst.outbox_parked WHERE topic = $1`, relay.MarkerTopic).Scan(&parked); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(parked, `ecst.yaml declares no entity "nobody"`) {
		t.Fatalf("parked with %q", parked)
	}
	if d := w.diffs(); len(d) != 0 {
		t.Fatalf("%v", d)
	}
}
