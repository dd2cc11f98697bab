package cli_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/ecst-io/ecst/internal/ecsttest"
)

// TestStatusCommand: `ecst status` on a system in order exits 0 and says
// so, in text and JSON; with outbox rows no relay leads, it exits 1 and
// names the fix.
func TestStatusCommand(t *testing.T) {
	t.Parallel()
	w := ecsttest.New(t, ecsttest.Options{})
	ctx := context.Background()
	cfgPath, env := recoveryConfig(t, w)
	ecst := func(code int, args ...string) result {
		t.Helper()
		r := run(t, env, append([]string{"--config", cfgPath}, args...)...)
		if r.code != code {
			t.Fatalf("ecst %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, code, r.out, r.err)
		}
		return r
	}
	ecst(0, "topics", "apply", "--fix")
	ecst(0, "topics", "apply")

	w.Seed(ctx, ecsttest.Keys(5))
	w.Drain()
	stop := w.StartRelay()
	w.WaitRelayLeads()
	r := ecst(0, "status")
	for _, want := range []string{"ENTITY", "customer  " + w.Topic, "cleanup.policy=compact", "SHARD (outbox)  LEADER", "0               yes     0",
		"LAST VERIFY", "customer     never", "REPUBLISH: no runs", "ATTENTION: nothing needs attention"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("status lacks %q:\n%s", want, r.out)
		}
	}
	r = ecst(0, "status", "--json")
	var snap struct {
		Entities []struct {
			Name, Topic string
			Partitions  int
		}
		Shards []struct {
			Shard   int
			Leader  bool
			Pending int
		}
		Attention []any
	}
	if err := json.Unmarshal([]byte(r.out), &snap); err != nil {
		t.Fatalf("%v:\n%s", err, r.out)
	}
	if len(snap.Entities) != 1 || snap.Entities[0].Topic != w.Topic || snap.Entities[0].Partitions != 3 ||
		len(snap.Shards) != 1 || !snap.Shards[0].Leader || len(snap.Attention) != 0 {
		t.Fatalf("status --json:\n%s", r.out)
	}

	if err := stop(); err != nil {
		t.Fatal(err)
	}
	w.Seed(ctx, ecsttest.Keys(2))
	r = ecst(1, "status")
	if !strings.Contains(r.out, "critical  relay: no relay leads outbox shard 0: 2 pending rows wait\n            fix: ecst relay") ||
		!strings.Contains(r.err, "1 finding(s) need attention") {
		t.Fatalf("status:\n%s\nstderr:\n%s", r.out, r.err)
	}
	r = ecst(1, "status", "--json")
	var found struct {
		Attention []struct{ Severity, Subject, Message, Fix string }
	}
	if err := json.Unmarshal([]byte(r.out), &found); err != nil {
		t.Fatal(err)
	}
	if len(found.Attention) != 1 || found.Attention[0].Severity != "critical" || found.Attention[0].Fix != "ecst relay" {
		t.Fatalf("status --json:\n%s", r.out)
	}
	ecst(2, "status", "--database-url", "postgres://nobody@127.0.0.1:1/none")
}
