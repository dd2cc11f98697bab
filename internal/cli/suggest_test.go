package cli_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ecst-io/ecst/internal/cli"
	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/outbox"
)

// suggestionRE finds the commands a verify report suggests.
var suggestionRE = regexp.MustCompile(`(?m)^(?:Repair it with|or [a-z ]+): (ecst .+)$`)

// TestVerifySuggestionsRun plants drift, lets verify suggest its repairs,
// and runs each suggestion in a shell, as printed: each must repair the
// drift (verify then exits 0, and the topic and the mirror equal the
// source). The config sits in a directory whose name has a space, and the
// registry is given by a flag only, so a suggestion that dropped --config
// or a global flag, or did not quote, fails.
func TestVerifySuggestionsRun(t *testing.T) {
	t.Parallel()
	w := ecsttest.New(t, ecsttest.Options{})
	ctx := context.Background()
	cfgPath, env := recoveryConfigIn(t, w, filepath.Join(t.TempDir(), "my ecst"))
	global := []string{"--config", cfgPath, "--schema-registry-url", env["ECST_SCHEMA_REGISTRY_URL"]}
	delete(env, "ECST_SCHEMA_REGISTRY_URL")
	ecst := runner(t, env, global...)
	const table = "billing_customers"
	keys := ecsttest.Keys(30)
	w.Seed(ctx, keys)
	ecst(0, "relay", "--drain")
	ecst(0, "mirror", "customer", "--table", table, "--once")
	// What a repair needs running: the relay and the mirror.
	stopRelay := w.StartRelay()
	defer stopRelay() //nolint:errcheck
	w.WaitRelayLeads()
	stopMirror := background(t, env, append(global, "mirror", "customer", "--table", table)...)
	defer stopMirror()
	sh := shell(t, env)

	round := 0
	plant := map[string]func(){
		// The mirror alone: a stale row, a row deleted, a row the topic
		// never had.
		"mirror": func() {
			w.Exec(`UPDATE billing_customers SET email = $1 WHERE _key = $2`, fmt.Sprintf("wrong-%d@example.com", round), keys[round])
			w.Exec(`DELETE FROM billing_customers WHERE _key = $1`, keys[10+round])
			w.Exec(`INSERT INTO billing_customers (_key, id, version, name, email, updated_at) VALUES ($1, $1, 1, 'ghost', 'g@example.com', now())`, fmt.Sprintf("ghost-%d", round))
		},
		// The source, behind ecst's back: stale, extra and missing on the topic.
		"source": func() {
			w.Exec(`UPDATE customers SET name = $1 WHERE id = $2`, fmt.Sprintf("changed-%d", round), keys[5+round])
			w.Exec(`DELETE FROM customers WHERE id = $1`, keys[20+round])
			w.Exec(`INSERT INTO customers (id, version, name, email) VALUES ($1, 1, 'new', 'n@example.com')`, fmt.Sprintf("new-%d", round))
		},
	}
	for _, tc := range []struct {
		name   string
		plant  []string
		verify []string
		want   []string // the suggestions, in order, without the global flags
	}{
		{"mirror only", []string{"mirror"}, []string{"verify", "customer", "--mirror", table},
			[]string{"verify customer --mirror billing_customers --repair", "rebuild mirror:billing_customers"}},
		{"source only", []string{"source"}, []string{"verify", "customer"},
			[]string{"verify customer --repair", "republish customer --all --tombstone-orphans"}},
		{"source and mirror", []string{"source", "mirror"}, []string{"verify", "customer", "--mirror", table},
			[]string{"verify customer --mirror billing_customers --repair"}},
	} {
		for i := range tc.want {
			name := fmt.Sprintf("%s, suggestion %d", tc.name, i+1)
			for _, p := range tc.plant {
				plant[p]()
			}
			r := ecst(1, tc.verify...)
			var got []string
			for _, m := range suggestionRE.FindAllStringSubmatch(r.out, -1) {
				got = append(got, m[1])
			}
			prefix := "ecst --config '" + cfgPath + "' --schema-registry-url " + global[3] + " "
			if len(got) != len(tc.want) {
				t.Fatalf("%s: suggestions %q, want %d\n%s", name, got, len(tc.want), r.out)
			}
			for j, want := range tc.want {
				if got[j] != prefix+want {
					t.Fatalf("%s: suggestion %q, want %q\n%s", name, got[j], prefix+want, r.out)
				}
			}
			if s := sh(got[i]); s.code != 0 {
				t.Fatalf("%s: %s: code %d\n%s%s", name, got[i], s.code, s.out, s.err)
			}
			// Whatever the suggestion waited for or not, the relay and the
			// mirror converge, and verify then finds nothing.
			if err := wait.Until(ctx, 30*time.Second, 20*time.Millisecond, "the topic and the mirror to match the source", func() (bool, error) {
				return len(w.MirrorMatchesSource(table)) == 0 && len(w.TopicMatchesSource()) == 0, nil
			}); err != nil {
				t.Fatalf("%s: %s: %v\ntopic: %v\nmirror: %v", name, got[i], err, w.TopicMatchesSource(), w.MirrorMatchesSource(table))
			}
			if r := ecst(0, "verify", "customer", "--mirror", table); !strings.Contains(r.out, "\nin sync: ") {
				t.Fatalf("%s: verify after %s:\n%s", name, got[i], r.out)
			}
			round++
		}
	}
}

// TestVerifyRepairSaysWhatItWaitsFor: with no relay running, verify
// --repair fails in seconds, naming what to start, and writes nothing.
// With a relay but no mirror, it says at once what it waits for, gives up
// after --wait saying what was written and what to start, and that advice
// works.
func TestVerifyRepairSaysWhatItWaitsFor(t *testing.T) {
	t.Parallel()
	w, ecst := mirroredWorld(t, 20)
	ctx := context.Background()
	cfgPath, env := w.ConfigPath, w.Env
	w.Exec(`UPDATE customers SET name = 'changed' WHERE id = 'c00001'`)
	w.Exec(`UPDATE billing_customers SET email = 'wrong@example.com' WHERE _key = 'c00002'`)
	counts := func() (pending int64, runs int) {
		t.Helper()
		pending, err := outbox.PendingCount(ctx, w.Pool, 0)
		if err == nil {
			err = w.Pool.QueryRow(ctx, `SELECT count(*) FROM ecst.republish_runs`).Scan(&runs)
		}
		if err != nil {
			t.Fatal(err)
		}
		return pending, runs
	}
	cfgFlag := "ecst --config " + cfgPath + " "

	start := time.Now()
	r := ecst(cli.ExitError, "verify", "customer", "--mirror", "billing_customers", "--repair")
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("a repair with no relay took %s to fail", took)
	}
	for _, want := range []string{"no relay is running", "start `" + cfgFlag + "relay`",
		"run `" + cfgFlag + "verify customer --mirror billing_customers --repair` again", "Nothing was written"} {
		if !strings.Contains(r.err, want) {
			t.Errorf("no relay: the error lacks %q:\n%s", want, r.err)
		}
	}
	if !strings.Contains(r.out, "drift found") || strings.Contains(r.out, "Repair it with") {
		t.Errorf("no relay: the report should show the drift, and not suggest the repair that just failed:\n%s", r.out)
	}
	if o, runs := counts(); o != 0 || runs != 0 {
		t.Fatalf("no relay: %d outbox rows and %d republish runs written", o, runs)
	}

	stop := w.StartRelay()
	defer stop() //nolint:errcheck
	w.WaitRelayLeads()
	r = ecst(cli.ExitError, "verify", "customer", "--mirror", "billing_customers", "--repair", "--wait", "2s")
	relayLine := "repair: waiting for the relay to publish 2 outbox rows to " + w.Topic + "\n"
	mirrorLine := regexp.MustCompile(`repair: waiting for mirror billing_customers to consume (\d+) offsets of ` + regexp.QuoteMeta(w.Topic) +
		` \(` + "`" + regexp.QuoteMeta(cfgFlag+"mirror customer --table billing_customers") + "`" + ` must be running\)\n`)
	gaveUp := regexp.MustCompile(`gave up after 2s waiting for mirror billing_customers to catch up: it is (\d+) offsets behind the end of ` + regexp.QuoteMeta(w.Topic) +
		`\. The repair is on the topic, and the mirror applies it once it runs: start ` + "`" + regexp.QuoteMeta(cfgFlag+"mirror customer --table billing_customers") + "`" +
		` \(or run it with --once\), then check with ` + "`(" + regexp.QuoteMeta(cfgFlag) + `verify customer --mirror billing_customers)` + "`")
	ri, mi, gi := strings.Index(r.err, relayLine), mirrorLine.FindStringIndex(r.err), gaveUp.FindStringSubmatchIndex(r.err)
	if ri < 0 || mi == nil || gi == nil || ri > mi[0] || mi[0] > gi[0] {
		t.Fatalf("relay but no mirror: stderr should say what the repair waits for, in order, then give up:\n%s", r.err)
	}
	if !strings.Contains(r.out, "repair: run 1 republished 2 keys and tombstoned 0; it did not finish") {
		t.Errorf("relay but no mirror: the report should say what was written:\n%s", r.out)
	}
	// The advice works: the mirror, once, then the check it names.
	ecst(0, "mirror", "customer", "--table", "billing_customers", "--once")
	check := r.err[gi[4]:gi[5]]
	if c := shell(t, env)(check); c.code != 0 || !strings.Contains(c.out, "\nin sync: ") {
		t.Fatalf("%s: code %d\n%s%s", check, c.code, c.out, c.err)
	}
}

// TestVerifySummary: a verification prints no progress when it is quick,
// and ends with a line that has the totals.
func TestVerifySummary(t *testing.T) {
	t.Parallel()
	w := ecsttest.New(t, ecsttest.Options{})
	ctx := context.Background()
	cfgPath, env := recoveryConfig(t, w)
	w.Seed(ctx, ecsttest.Keys(40))
	w.Delete(ctx, "c00039")
	if r := run(t, env, "--config", cfgPath, "relay", "--drain"); r.code != 0 {
		t.Fatal(r.err)
	}
	if r := run(t, env, "--config", cfgPath, "mirror", "customer", "--table", "m", "--once"); r.code != 0 {
		t.Fatal(r.err)
	}
	r := run(t, env, "--config", cfgPath, "verify", "customer", "--mirror", "m")
	if r.code != 0 || r.err != "" {
		t.Fatalf("code %d; stderr should be empty for a quick verify:\n%s", r.code, r.err)
	}
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	if !strings.HasPrefix(lines[0], "customer: source 39 keys, topic "+w.Topic+" 39 keys alive in 41 records, 0 in flight") ||
		!regexp.MustCompile(`^in sync: source 39 keys, topic 39 keys alive in 41 records, mirror 39 rows, 0 in flight; \d`).MatchString(lines[len(lines)-1]) {
		t.Fatalf("verify output:\n%s", r.out)
	}
	w.Exec(`DELETE FROM m WHERE _key = 'c00001'`)
	w.Exec(`UPDATE customers SET name = 'x' WHERE id = 'c00002'`)
	r = run(t, env, "--config", cfgPath, "verify", "customer", "--mirror", "m")
	if !regexp.MustCompile(`(?m)^drift found: 1 stale on the topic; 1 missing in mirror m \(of source 39 keys, topic 39 keys alive in 41 records, mirror 38 rows, 0 in flight; \d`).MatchString(r.out) {
		t.Fatalf("verify output:\n%s", r.out)
	}
}

// background runs an ecst command line in process until stop.
func background(t *testing.T, env map[string]string, args ...string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- cli.Run(ctx, args, cli.IO{In: strings.NewReader(""), Out: &out, Err: &errb, Env: func(k string) string { return env[k] }})
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			<-done
			if t.Failed() {
				t.Logf("ecst %v:\n%s%s", args, out.String(), errb.String())
			}
		})
	}
}

// shell returns a runner of command lines in bash, with this test binary
// as ecst on the PATH and env in the environment.
func shell(t *testing.T, env map[string]string) func(line string) result {
	t.Helper()
	path := selfOnPath(t)
	return func(line string) result {
		t.Helper()
		cmd := exec.Command("bash", "-c", line)
		cmd.Env = append(os.Environ(), "PATH="+path)
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		var exit *exec.ExitError
		code := 0
		switch {
		case errors.As(err, &exit):
			code = exit.ExitCode()
		case err != nil:
			t.Fatalf("%s: %v", line, err)
		}
		return result{code, out.String(), errb.String()}
	}
}
