package relay_test

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/relay"
)

// lateCommitScenario makes the relay read its next batch while a batch is
// in flight, just after a late commit. K's first state draws the lowest id
// but commits late: the relay reads batch N (five other keys, committed
// after K's row was inserted; its cursor moves past K's row) and is held
// before producing it; then K's first state commits, and K's second, whose
// id is above all of N. The relay then produces N and, meanwhile, reads
// ahead from the cursor after N. It returns K's versions in topic order,
// how many of the five other keys never reached the topic, and the row ids
// of the first two batches.
func lateCommitScenario(t *testing.T, noWatch bool) (kVersions []string, missing int, batches [][]int64) {
	t.Helper()
	ctx := context.Background()
	e := newEnv(t, envOpts{})
	state := func(v int64) map[string]any {
		return map[string]any{"id": "K", "version": v, "name": "n", "email": "e", "tier": nil, "updated_at": time.Now()}
	}
	late, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Rollback(context.Background()) //nolint:errcheck
	if err := e.pub.Publish(ctx, late, "customer", "K", 1, state(1)); err != nil {
		t.Fatal(err)
	}
	var lateID int64
	if err := late.QueryRow(ctx, "SELECT id FROM ecst.outbox WHERE key = 'K'").Scan(&lateID); err != nil {
		t.Fatal(err)
	}
	others := map[string]bool{}
	for i := range 5 {
		ev, err := e.write(ctx, "other"+strconv.Itoa(i), false)
		if err != nil {
			t.Fatal(err)
		}
		others[ev.key] = true
	}

	cfg := e.relayConfig()
	if noWatch {
		relay.WithoutWatch(&cfg)
	}
	held, release := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	relay.WithBeforeProduce(&cfg, func(_ int, ids []int64) {
		mu.Lock()
		batches = append(batches, slices.Clone(ids))
		first := len(batches) == 1
		mu.Unlock()
		if first {
			close(held)
			<-release
		}
	})
	stop := e.runRelay(cfg)
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("the relay never read a batch")
	}
	if err := late.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// K's second state: the key lock orders it after the first, and its id
	// is above every row of the batch being held.
	if err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error { return e.pub.Publish(ctx, tx, "customer", "K", 2, state(2)) }); err != nil {
		t.Fatal(err)
	}
	close(release)
	wait.Eventually(t, 30*time.Second, "the relay to publish the outbox", func() bool { return e.outboxCount() == 0 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, r := range e.readTopic() {
		if r.key == "K" {
			kVersions = append(kVersions, r.headers[producer.HeaderEntityVersion])
		}
		delete(others, r.key)
	}
	mu.Lock()
	defer mu.Unlock()
	if slices.Contains(batches[0], lateID) {
		t.Fatalf("the first batch %v holds K's uncommitted row %d: the scenario did not happen", batches[0], lateID)
	}
	return kVersions, len(others), batches
}

// TestReadAheadKeepsLateCommitInOrder: a row that commits late with an id
// below the batch in flight (its transaction was watched when N was read)
// is read together with, and before, the newer state of its key; nothing is
// lost.
func TestReadAheadKeepsLateCommitInOrder(t *testing.T) {
	t.Parallel()
	kVersions, missing, batches := lateCommitScenario(t, false)
	if missing > 0 {
		t.Errorf("%d of 5 other keys never reached the topic", missing)
	}
	if !slices.Equal(kVersions, []string{"1", "2"}) {
		t.Errorf("K's records on the topic are versions %v, want [1 2] (batches %v)", kVersions, batches)
	}
}

// TestReadAheadWithoutWatchLosesLateCommit: the same scenario with a relay
// that keeps no watched transactions, a plain `id > cursor` read, loses K's
// first state: the check above can see the mechanism removed.
func TestReadAheadWithoutWatchLosesLateCommit(t *testing.T) {
	t.Parallel()
	kVersions, missing, batches := lateCommitScenario(t, true)
	if missing > 0 {
		t.Errorf("%d of 5 other keys never reached the topic", missing)
	}
	if !slices.Equal(kVersions, []string{"2"}) {
		t.Errorf("without the watched set, K's records are versions %v, want [2]: the first state lost (batches %v)", kVersions, batches)
	}
}
