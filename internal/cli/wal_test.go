package cli_test

import (
	"context"
	"strings"
	"testing"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/internal/pgtest"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/relay"
)

// TestMigrateWAL: `ecst migrate` with outbox.transport: wal sets the WAL
// transport up on a fresh database (the slot, the switch), and says so;
// run again, it finds it in place.
func TestMigrateWAL(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDBURL(t, pgtest.Empty())
	env := map[string]string{"ECST_DATABASE_URL": url, "ECST_OUTBOX_TRANSPORT": "wal", "ECST_SERVICE": "svc-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))}
	r := run(t, env, "migrate")
	slot := relay.SlotName(env["ECST_SERVICE"])
	if r.code != 0 || !strings.Contains(r.out, "created replication slot "+slot) || !strings.Contains(r.out, "the database runs the WAL transport") {
		t.Fatalf("migrate: code %d\n%s%s", r.code, r.out, r.err)
	}
	r = run(t, env, "migrate")
	if r.code != 0 || strings.Contains(r.out, "created") || !strings.Contains(r.out, "the database runs the WAL transport (slot "+slot+")") {
		t.Fatalf("second migrate: code %d\n%s%s", r.code, r.out, r.err)
	}
	// A table config against it is warned.
	env["ECST_OUTBOX_TRANSPORT"] = "table"
	r = run(t, env, "migrate")
	if r.code != 0 || !strings.Contains(r.err, "the database runs the WAL transport and outbox.transport is table") {
		t.Fatalf("migrate with the table transport: code %d\n%s%s", r.code, r.out, r.err)
	}
}

// TestOutboxSwitchCommand moves a system from the table transport to the
// WAL and back with `ecst outbox switch`, each time draining what the old
// transport holds from the command itself; the topic ends equal to the
// source, and no slot is left behind.
func TestOutboxSwitchCommand(t *testing.T) {
	t.Parallel()
	w := ecsttest.New(t, ecsttest.Options{})
	ctx := context.Background()
	cfgPath, env := recoveryConfig(t, w)
	ecst := runner(t, env, "--config", cfgPath)
	keys := ecsttest.Keys(30)
	w.Seed(ctx, keys) // in the outbox table, unpublished
	slot := relay.SlotName(w.Config.Service)

	r := ecst(0, "outbox", "switch", "wal", "--dry-run")
	if !strings.Contains(r.out, "nothing changed") || !strings.Contains(r.out, "the outbox table holds rows") {
		t.Fatalf("dry run:\n%s", r.out)
	}
	if tr, _ := outbox.DatabaseTransport(ctx, w.Pool); tr != outbox.TransportTable {
		t.Fatalf("a dry run moved the database to %s", tr)
	}
	r = ecst(0, "outbox", "switch", "wal", "--drain", "--yes")
	for _, want := range []string{"created replication slot " + slot, "publishing what the table transport holds", "30 records published", "the database runs the wal transport"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("switch wal: the output lacks %q:\n%s", want, r.out)
		}
	}
	// Writers of the WAL transport now, then a relay of it.
	w.Config.Outbox.Transport = config.TransportWAL
	var err error
	if w.Pub, err = producer.FromConfig(w.Config, w.Registry); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys[:10] {
		if _, err := w.Upsert(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	env["ECST_OUTBOX_TRANSPORT"] = "wal"
	r = ecst(0, "relay", "--drain")
	if !strings.Contains(r.out, "10 records published") {
		t.Errorf("WAL drain:\n%s", r.out)
	}
	for _, k := range keys[10:15] {
		if err := w.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	delete(env, "ECST_OUTBOX_TRANSPORT")
	r = ecst(0, "outbox", "switch", "table", "--drain")
	for _, want := range []string{"publishing what the wal transport holds", "5 records published", "the database runs the table transport", "dropped replication slot " + slot} {
		if !strings.Contains(r.out, want) {
			t.Errorf("switch table: the output lacks %q:\n%s", want, r.out)
		}
	}
	var slots int
	if err := w.Pool.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&slots); err != nil || slots != 0 {
		t.Fatalf("%d slots left (%v)", slots, err)
	}
	if d := w.TopicMatchesSource(); len(d) > 0 {
		t.Fatalf("the topic differs from the source after two switches:\n%s", strings.Join(d, "\n"))
	}
}

// TestRecoverSlotCommand: a lost slot stops `ecst relay` with an error that
// names the recovery; `ecst relay --recover-slot --drain` replaces the
// slot, republishes, and the topic matches the source again.
func TestRecoverSlotCommand(t *testing.T) {
	t.Parallel()
	w := ecsttest.New(t, ecsttest.Options{WAL: true}) // its Env runs ecst with ECST_OUTBOX_TRANSPORT=wal
	ctx := context.Background()
	cfgPath, env := recoveryConfig(t, w)
	ecst := runner(t, env, "--config", cfgPath)
	keys := ecsttest.Keys(30)
	w.Seed(ctx, keys)
	ecst(0, "relay", "--drain")
	w.Exec("SELECT pg_drop_replication_slot($1)", relay.SlotName(w.Config.Service))
	for _, k := range keys[:10] { // lost: no slot holds them
		if _, err := w.Upsert(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range keys[10:15] {
		if err := w.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	r := ecst(2, "relay", "--drain")
	if !strings.Contains(r.err, "LOST") || !strings.Contains(r.err, "relay --recover-slot`") {
		t.Fatalf("relay on a lost slot:\n%s", r.err)
	}
	r = ecst(0, "relay", "--recover-slot", "--drain")
	if !strings.Contains(r.err, "replaced replication slot") || !strings.Contains(r.err, "republished customer") {
		t.Errorf("recover-slot:\n%s%s", r.out, r.err)
	}
	if d := w.TopicMatchesSource(); len(d) > 0 {
		t.Fatalf("the topic differs from the source after the recovery:\n%s", strings.Join(d, "\n"))
	}
}
