package relay_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/relay"
)

// TestLeaders: the shards a running relay leads are listed, and none once
// it stops; a relay serving some shards lists only those, and a session
// holding the lock in another database does not count.
func TestLeaders(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, envOpts{shards: 4})
	leaders := func() []int {
		t.Helper()
		got, err := relay.Leaders(ctx, e.pool)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := leaders(); len(got) != 0 {
		t.Fatalf("leaders with no relay: %v", got)
	}
	// A relay of the same cluster's other database leads its shards: not ours.
	other := newEnv(t, envOpts{})
	stopOther := other.runRelay(other.relayConfig())
	defer stopOther() //nolint:errcheck
	waitLeaders := func(want []int) {
		t.Helper()
		if err := wait.Until(ctx, 30*time.Second, 10*time.Millisecond, "the relay's leader locks", func() (bool, error) {
			got, err := relay.Leaders(ctx, other.pool)
			return len(got) == 1, err
		}); err != nil {
			t.Fatal(err)
		}
		if err := wait.Until(ctx, 30*time.Second, 10*time.Millisecond, "the relay's leader locks", func() (bool, error) {
			got, err := relay.Leaders(ctx, e.pool)
			return slices.Equal(got, want), err
		}); err != nil {
			t.Fatalf("%v (leaders %v, want %v)", err, leaders(), want)
		}
	}
	waitLeaders(nil)

	cfg := e.relayConfig()
	cfg.TotalShards, cfg.Shards = 4, []int{1, 3}
	stop := e.runRelay(cfg)
	waitLeaders([]int{1, 3})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// The server frees a closed session's locks as its backend exits.
	waitLeaders(nil)
}
