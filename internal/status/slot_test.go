package status_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/internal/pgcluster"
	"github.com/ecst-io/ecst/internal/status"
	"github.com/ecst-io/ecst/migrate"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/relay"
)

// TestWALSlot: on the WAL transport the snapshot shows the slot its relay
// streams (leader, wal_status, walsender, lag, retention) and no shards; a
// slot no relay streams needs attention (critical once over --max-slot-lag),
// and a slot PostgreSQL no longer has is LOST, with the recovery as the fix.
func TestWALSlot(t *testing.T) {
	t.Parallel()
	s := newSystemWith(t, ecsttest.Options{WAL: true})
	ctx := context.Background()
	slot := relay.SlotName(s.Service)

	stop := s.StartRelay()
	s.WaitRelayLeads()
	s.Seed(ctx, ecsttest.Keys(10))
	if err := s.MirrorCatchUp("billing"); err != nil {
		t.Fatal(err)
	}
	snap := s.waitFor("the relay to stream the slot, caught up", func(snap *status.Snapshot) bool {
		return len(snap.Slots) == 1 && snap.Slots[0].Leader && snap.Slots[0].ActivePID != 0 && len(snap.Attention) == 0
	})
	if snap.Transport != "wal" || len(snap.Shards) != 0 {
		t.Fatalf("transport %q, shards %+v: want wal and none", snap.Transport, snap.Shards)
	}
	sl := snap.Slots[0]
	if sl.Slot != slot || sl.Service != s.Service || !sl.Exists || !sl.InTransport || (sl.WALStatus != "reserved" && sl.WALStatus != "extended") ||
		sl.RetainedBytes <= 0 || sl.SafeWALBytes != nil {
		t.Fatalf("slot %+v", sl)
	}
	if out := text(snap); !strings.Contains(out, "SLOT (wal)") || !strings.Contains(out, slot+"  yes") || strings.Contains(out, "SHARD") {
		t.Fatalf("text lacks the slot, or shows shards:\n%s", out)
	}

	// The relay stops; what is written now waits in the slot.
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	s.Seed(ctx, ecsttest.Keys(3))
	snap = s.waitFor("the slot without a leader", func(snap *status.Snapshot) bool {
		return len(snap.Slots) == 1 && !snap.Slots[0].Leader && snap.Slots[0].ActivePID == 0 && snap.Slots[0].LagBytes > 0
	})
	wantAttention(t, snap, "warning|slot "+slot+"|no relay streams the WAL transport's slot: it is |ecst relay")
	s.o.MaxSlotLag = 1
	wantAttention(t, s.gather(), "critical|slot "+slot+"|no relay streams the WAL transport's slot|ecst relay")

	// A failover to a standby without the slot, or a DBA's drop: LOST.
	s.Exec("SELECT pg_drop_replication_slot($1)", slot)
	snap = s.gather()
	if len(snap.Slots) != 1 || snap.Slots[0].Exists || snap.Slots[0].StatusText() != "LOST" {
		t.Fatalf("slots %+v", snap.Slots)
	}
	wantAttention(t, snap, "critical|slot "+slot+"|the WAL transport's replication slot is LOST|ecst relay --recover-slot")
	if out := text(snap); !strings.Contains(out, "LOST") {
		t.Fatalf("text does not say LOST:\n%s", out)
	}
}

// TestWALSlotInvalidatedStatus: a slot max_slot_wal_keep_size invalidated
// (wal_status lost) is critical, with the recovery as the fix; before that,
// the snapshot shows how much WAL it may still fall behind (safe_wal_size).
// On a cluster of its own: the setting is the server's.
func TestWALSlotInvalidatedStatus(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	ctx := context.Background()
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{Logical: true,
		Settings: map[string]string{"max_slot_wal_keep_size": "1MB", "wal_keep_size": "0"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.Stop() })
	pool, err := pgxpool.New(ctx, cluster.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := migrate.Up(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if _, err := relay.Switch(ctx, pool, outbox.TransportWAL, relay.SwitchOptions{Service: s.Service}); err != nil {
		t.Fatal(err)
	}
	slot := relay.SlotName(s.Service)
	s.o.DB = pool
	snap := s.gather()
	if len(snap.Slots) != 1 || snap.Slots[0].SafeWALBytes == nil || *snap.Slots[0].SafeWALBytes <= 0 {
		t.Fatalf("slots %+v: want safe_wal_size under max_slot_wal_keep_size", snap.Slots)
	}
	wantAttention(t, snap, "warning|slot "+slot+"|no relay streams the WAL transport's slot|ecst relay")
	deadline := time.Now().Add(30 * time.Second)
	for snap.Slots[0].WALStatus != "lost" {
		if time.Now().After(deadline) {
			t.Fatalf("the slot is not invalidated after WAL segments and checkpoints: %+v", snap.Slots[0])
		}
		if _, err := pool.Exec(ctx, "CREATE TABLE IF NOT EXISTS filler (x int); INSERT INTO filler VALUES (1); SELECT pg_switch_wal(); CHECKPOINT"); err != nil {
			t.Fatal(err)
		}
		snap = s.gather()
	}
	wantAttention(t, snap, "critical|slot "+slot+"|the WAL transport's replication slot was INVALIDATED|ecst relay --recover-slot")
}
