package cli_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/ecst-io/ecst/internal/ecsttest"
)

// TestCaptureCommands: enable (dry run first), status, a psql-style write
// published by `ecst relay --drain`, disable; each idempotent.
func TestCaptureCommands(t *testing.T) {
	t.Parallel()
	w := ecsttest.New(t, ecsttest.Options{})
	cfg := []string{"--config", w.ConfigPath}
	r := run(t, w.Env, append(cfg, "capture", "enable", "customer", "--dry-run")...)
	if r.code != 0 || !strings.Contains(r.out, `CREATE TRIGGER "ecst_capture_customer_upd" AFTER UPDATE ON public.customers REFERENCING OLD TABLE AS ecst_old NEW TABLE AS ecst_new FOR EACH STATEMENT`) {
		t.Fatalf("enable --dry-run: %d\n%s%s", r.code, r.out, r.err)
	}
	for range 2 {
		if r := run(t, w.Env, append(cfg, "capture", "enable", "customer")...); r.code != 0 || r.out != "capturing customer on public.customers (key id)\n" {
			t.Fatalf("enable: %d %q %s", r.code, r.out, r.err)
		}
	}
	r = run(t, w.Env, append(cfg, "capture", "status", "--json")...)
	var st []struct {
		Entity  string `json:"entity"`
		Enabled bool   `json:"enabled"`
	}
	if err := json.Unmarshal([]byte(r.out), &st); r.code != 0 || err != nil || len(st) != 1 || !st[0].Enabled {
		t.Fatalf("status --json: %d %v\n%s%s", r.code, err, r.out, r.err)
	}
	w.Exec(`INSERT INTO customers (id, version, name, email) SELECT 'k' || i, 1, 'n', 'e' FROM generate_series(1, 100) i`)
	if r := run(t, w.Env, append(cfg, "relay", "--drain")...); r.code != 0 || !strings.Contains(r.out, "outbox drained: 100 records published") {
		t.Fatalf("relay --drain: %d\n%s%s", r.code, r.out, r.err)
	}
	if d := w.TopicMatchesSource(); len(d) != 0 {
		t.Fatalf("after the drain: %v", d)
	}
	w.Exec(`DROP TRIGGER ecst_capture_customer_del ON customers`)
	if r := run(t, w.Env, append(cfg, "capture", "status")...); r.code == 0 || !strings.Contains(r.out, "MISSING ecst_capture_customer_del") {
		t.Fatalf("status with a trigger dropped: %d\n%s%s", r.code, r.out, r.err)
	}
	if r := run(t, w.Env, append(cfg, "capture", "disable", "customer")...); r.code != 0 || r.out != "removed the capture of customer from public.customers\n" {
		t.Fatalf("disable: %d %q %s", r.code, r.out, r.err)
	}
	if r := run(t, w.Env, append(cfg, "capture", "disable", "customer")...); r.code != 0 || r.out != "customer has no capture installed\n" {
		t.Fatalf("disable again: %d %q %s", r.code, r.out, r.err)
	}
}
