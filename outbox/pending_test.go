package outbox_test

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/ecst-io/ecst/internal/pgtest"
	"github.com/ecst-io/ecst/outbox"
)

// TestPending: a row is pending when it is past its shard's cursor, or up
// to it and of a watched transaction above the range's low mark; a shard
// without a cursor has everything pending.
func TestPending(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t)
	// Rows (id, shard, txid, topic): shard 0 with its cursor at 10 and
	// transactions 100 (low 5) and 200 up (low 0) watched; shard 1 with no
	// cursor; shard 2 with everything published.
	if _, err := pool.Exec(ctx, `
		INSERT INTO ecst.outbox (id, shard, txid, topic, key, headers, created_at) OVERRIDING SYSTEM VALUE VALUES
			(3, 0, '100', 'a', 'published: id <= low', '\x01', now()),
			(6, 0, '100', 'a', 'watched-100', '\x01', now() - interval '1 minute'),
			(7, 0, '150', 'a', 'published: not watched', '\x01', now()),
			(8, 0, '250', 'b', 'watched-tail', '\x01', now()),
			(11, 0, '150', 'a', 'past the cursor', '\x01', now()),
			(12, 1, '150', 'a', 'no cursor', '\x01', now()),
			(13, 2, '150', 'a', 'shard 2 published', '\x01', now());
		INSERT INTO ecst.relay_cursors (shard, cursor, watched_lo, watched_hi, watched_low) VALUES
			(0, 10, '{100,200}', '{101,18446744073709551615}', '{5,0}'),
			(2, 20, '{}', '{}', '{}')`); err != nil {
		t.Fatal(err)
	}
	n, oldest, err := outbox.PendingShard(ctx, pool, 0)
	if err != nil || n != 3 || time.Since(oldest) < 50*time.Second {
		t.Errorf("shard 0: %d pending, oldest %v (err %v); want 3, a minute old", n, oldest, err)
	}
	for shard, want := range map[int]int64{1: 1, 2: 0, 3: 0} {
		if n, _, err := outbox.PendingShard(ctx, pool, shard); err != nil || n != want {
			t.Errorf("shard %d: %d pending (err %v), want %d", shard, n, err, want)
		}
	}
	// The bounded count: the oldest is the watched transaction's row, found
	// whatever the cap.
	for _, limit := range []int{10, 2} {
		n, capped, oldest, err := outbox.PendingHead(ctx, pool, 0, limit)
		if want := min(int64(limit), 3); err != nil || n != want || capped != (limit == 2) || time.Since(oldest) < 50*time.Second {
			t.Errorf("shard 0 up to %d: %d pending (capped %v), oldest %v (err %v); want %d, a minute old", limit, n, capped, oldest, err, want)
		}
	}
	for shard, want := range map[int]int64{1: 1, 2: 0, 3: 0} {
		n, capped, oldest, err := outbox.PendingHead(ctx, pool, shard, 10)
		if err != nil || n != want || capped || oldest.IsZero() != (want == 0) {
			t.Errorf("shard %d up to 10: %d pending (capped %v), oldest %v (err %v), want %d", shard, n, capped, oldest, err, want)
		}
	}
	if n, err := outbox.PendingCount(ctx, pool, 0); err != nil || n != 4 {
		t.Errorf("%d pending in all (err %v), want 4", n, err)
	}
	if n, err := outbox.PendingCount(ctx, pool, 2); err != nil || n != 2 {
		t.Errorf("%d pending up to 2 (err %v), want 2", n, err)
	}
	keys, err := outbox.PendingKeys(ctx, pool, "a")
	slices.Sort(keys)
	if want := []string{"no cursor", "past the cursor", "watched-100"}; err != nil || !slices.Equal(keys, want) {
		t.Errorf("pending keys of a: %q (err %v), want %q", keys, err, want)
	}
	byShard, highest, err := outbox.PendingByShard(ctx, pool, "a", 11)
	if want := map[int]int64{0: 2}; err != nil || !maps.Equal(byShard, want) || highest != 11 {
		t.Errorf("pending of a up to 11: %v, highest %d (err %v); want %v, 11", byShard, highest, err, want)
	}
	// The rotation's question, of one partition.
	var found bool
	if err := pool.QueryRow(ctx, `SELECT EXISTS (`+outbox.PendingIn("ecst.outbox_0")+`)`).Scan(&found); err != nil || !found {
		t.Errorf("partition 0 has no pending row (err %v)", err)
	}
	if err := pool.QueryRow(ctx, `SELECT EXISTS (`+outbox.PendingIn("ecst.outbox_1")+`)`).Scan(&found); err != nil || found {
		t.Errorf("partition 1 (empty) has a pending row (err %v)", err)
	}
}
