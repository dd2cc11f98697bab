package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/internal/wait"
)

// TestVerifyRepublishMirror drives the recovery story through the CLI: a
// mirror in sync, then a corrupted mirror and a source changed behind
// ecst's back; verify --json reports the drift (exit 1), republish --all
// --tombstone-orphans repairs it, and verify reports none (exit 0).
func TestVerifyRepublishMirror(t *testing.T) {
	t.Parallel()
	w, ecst := mirroredWorld(t, 40)
	recoveryStory(t, w, ecst)
}

// mirroredWorld is a world with n customers on the topic and in the mirror
// billing_customers, each put there by the CLI; ecst runs the CLI on it.
func mirroredWorld(t *testing.T, n int) (w *ecsttest.World, ecst func(wantCode int, args ...string) result) {
	t.Helper()
	w = ecsttest.New(t, ecsttest.Options{})
	cfgPath, env := recoveryConfig(t, w)
	ecst = runner(t, env, "--config", cfgPath)
	w.Seed(context.Background(), ecsttest.Keys(n))
	ecst(0, "relay", "--drain")
	ecst(0, "mirror", "customer", "--table", "billing_customers", "--once")
	return w, ecst
}

// recoveryConfig is w's ecst.yaml, with its source, and the environment
// that points it at w.
func recoveryConfig(t *testing.T, w *ecsttest.World) (string, map[string]string) {
	return w.ConfigPath, maps.Clone(w.Env)
}

// runner runs ecst with env and the global flags, and fails the test when
// it exits with another code than wantCode.
func runner(t *testing.T, env map[string]string, global ...string) func(wantCode int, args ...string) result {
	return func(wantCode int, args ...string) result {
		t.Helper()
		r := run(t, env, append(slices.Clone(global), args...)...)
		if r.code != wantCode {
			t.Fatalf("ecst %v: code %d, want %d\n%s%s", args, r.code, wantCode, r.out, r.err)
		}
		return r
	}
}

// recoveryConfigIn writes it in dir.
func recoveryConfigIn(t *testing.T, w *ecsttest.World, dir string) (string, map[string]string) {
	return w.WriteConfig(dir, ""), maps.Clone(w.Env)
}

func recoveryStory(t *testing.T, w *ecsttest.World, ecst func(int, ...string) result) {
	r := ecst(0, "verify", "customer", "--mirror", "billing_customers")
	if !strings.Contains(r.out, "in sync") {
		t.Fatalf("verify of a system in sync:\n%s", r.out)
	}

	// Corrupt the read model, and change the source behind ecst's back.
	w.Exec(`UPDATE billing_customers SET email = 'wrong@example.com' WHERE _key = 'c00001'`)
	w.Exec(`DELETE FROM billing_customers WHERE _key = 'c00002'`)
	w.Exec(`UPDATE customers SET name = 'changed' WHERE id = 'c00010'`)
	w.Exec(`DELETE FROM customers WHERE id = 'c00011'`)
	r = ecst(1, "verify", "customer", "--mirror", "billing_customers", "--json")
	var rep struct {
		Missing, Extra, Stale int
		Samples               struct{ Missing, Extra, Stale []string }
		Mirror                struct {
			Missing, Extra, Stale int
			Samples               struct{ Missing, Extra, Stale []string }
		}
	}
	if err := json.Unmarshal([]byte(r.out), &rep); err != nil {
		t.Fatalf("verify --json printed no JSON object: %v\n%s", err, r.out)
	}
	if rep.Missing != 0 || rep.Extra != 1 || rep.Stale != 1 || rep.Samples.Extra[0] != "c00011" || rep.Samples.Stale[0] != "c00010" ||
		rep.Mirror.Missing != 1 || rep.Mirror.Stale != 1 || rep.Mirror.Samples.Missing[0] != "c00002" || rep.Mirror.Samples.Stale[0] != "c00001" {
		t.Fatalf("verify --json: %s", r.out)
	}

	r = ecst(0, "republish", "customer", "--dry-run", "--all", "--tombstone-orphans")
	if !strings.Contains(r.out, "39 keys of customer selected, 1 orphans") {
		t.Fatalf("dry run:\n%s", r.out)
	}
	r = ecst(0, "republish", "customer", "--all", "--tombstone-orphans")
	if !strings.Contains(r.out, "39 full states and 1 tombstones") {
		t.Fatalf("republish:\n%s", r.out)
	}
	ecst(0, "relay", "--drain")
	ecst(0, "mirror", "customer", "--table", "billing_customers", "--once")
	r = ecst(0, "verify", "customer", "--mirror", "billing_customers")
	if !strings.Contains(r.out, "in sync") {
		t.Fatalf("verify after the republish:\n%s", r.out)
	}
	// Usage and config errors exit 2.
	ecst(2, "verify", "nosuch")
	ecst(2, "republish", "customer")
	ecst(2, "republish", "customer", "--all", "--rate", "fast")
}

// TestRepublishKilledAndResumed: an `ecst republish` process killed with
// SIGKILL at 40% leaves its run resumable; --resume writes every selected
// key, and the counts add up (every key exactly once in the outbox).
func TestRepublishKilledAndResumed(t *testing.T) {
	t.Parallel()
	w := ecsttest.New(t, ecsttest.Options{})
	ctx := context.Background()
	cfgPath, env := recoveryConfig(t, w)
	const n = 400
	keys := ecsttest.Keys(n)
	w.Seed(ctx, keys)
	w.Exec(`DELETE FROM ecst.outbox`)

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "--config", cfgPath, "republish", "customer", "--all", "--batch", "10", "--rate", "400")
	cmd.Env = append(os.Environ(), "ECST_TEST_RUN_AS_ECST=1")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() }) // the run never got to 40%
	var runID, written int64
	wait.Eventually(t, 30*time.Second, "the run to reach 40%", func() bool {
		_ = w.Pool.QueryRow(ctx, `SELECT id, rows_written FROM ecst.republish_runs`).Scan(&runID, &written)
		return written >= n*4/10
	})
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	var state string
	_ = w.Pool.QueryRow(ctx, `SELECT state, rows_written FROM ecst.republish_runs WHERE id = $1`, runID).Scan(&state, &written)
	if state != "running" || written >= n {
		t.Fatalf("killed run: state %s, written %d", state, written)
	}
	t.Logf("killed run %d at %d of %d", runID, written, n)

	r := run(t, env, "--config", cfgPath, "republish", "customer", "--resume", fmt.Sprint(runID))
	if r.code != 0 || !strings.Contains(r.out, fmt.Sprintf("run %d resumed and finished: %d full states", runID, n)) {
		t.Fatalf("resume: code %d\n%s%s", r.code, r.out, r.err)
	}
	var rows, distinct int
	_ = w.Pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT key) FROM ecst.outbox`).Scan(&rows, &distinct)
	var selected int64
	_ = w.Pool.QueryRow(ctx, `SELECT state, rows_written, rows_selected FROM ecst.republish_runs WHERE id = $1`, runID).Scan(&state, &written, &selected)
	if rows != n || distinct != n || written != n || selected != n || state != "completed" {
		t.Fatalf("after resume: outbox %d rows (%d keys), run %s written %d of %d; want %d each, completed", rows, distinct, state, written, selected, n)
	}
}
