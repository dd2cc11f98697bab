package cli_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/internal/wait"
)

// TestVerifyEvery runs `ecst verify --every` as a process: it verifies on
// schedule, records each run, serves what the last one found on /metrics
// (and the republish runs' state), sees drift planted between two runs, and
// stops cleanly, exit 0, on SIGTERM.
func TestVerifyEvery(t *testing.T) {
	t.Parallel()
	w := ecsttest.New(t, ecsttest.Options{})
	ctx := context.Background()
	cfgPath, env := recoveryConfig(t, w)
	w.Seed(ctx, ecsttest.Keys(10))
	w.Drain()

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "--config", cfgPath, "verify", "customer", "--every", "300ms", "--verify-metrics-addr", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "ECST_TEST_RUN_AS_ECST=1")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr syncBuf
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{}) // closed once the process exited, with waitErr
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		_ = cmd.Process.Kill() // if it is still running
		<-exited
	}()

	// The port it picked is in its log.
	listening := regexp.MustCompile(`serving /metrics, /healthz" addr=(127\.0\.0\.1:\d+)`)
	scrape := func() (string, error) {
		m := listening.FindStringSubmatch(stderr.String())
		if m == nil {
			return "", errors.New("not listening yet")
		}
		resp, err := http.Get("http://" + m[1] + "/metrics")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	// waitFor polls /metrics until each of the samples has its value.
	waitFor := func(what string, samples map[string]float64) string {
		t.Helper()
		var last string
		err := wait.Until(ctx, 60*time.Second, 50*time.Millisecond, what, func() (bool, error) {
			select {
			case <-exited:
				t.Fatalf("verify --every exited: %v\n%s", waitErr, stderr.String())
			default:
			}
			m, err := scrape()
			if err != nil {
				return false, nil // not listening yet
			}
			last = m
			for s, v := range samples {
				if got, ok := sample(m, s); !ok || got < v {
					return false, nil
				}
			}
			return true, nil
		})
		if err != nil {
			t.Fatalf("%v\nlast /metrics:\n%s\nstderr:\n%s", err, last, stderr.String())
		}
		return last
	}
	m := waitFor("a run in sync", map[string]float64{`ecst_verify_runs_total{entity="customer",result="in_sync"}`: 1})
	for s, want := range map[string]float64{
		`ecst_verify_drift_keys{entity="customer",kind="stale"}`:        0,
		`ecst_verify_drift_keys{entity="customer",kind="missing"}`:      0,
		`ecst_verify_runs_total{entity="customer",result="error"}`:      0,
		`ecst_verify_every_seconds{entity="customer"}`:                  0.3,
		`ecst_verify_runs_total{entity="customer",result="drift"}`:      0,
		`ecst_verify_last_success_timestamp_seconds{entity="customer"}`: float64(time.Now().Add(-time.Minute).Unix()),
	} {
		got, ok := sample(m, s)
		if !ok || (strings.Contains(s, "timestamp") && got < want) || (!strings.Contains(s, "timestamp") && got != want) {
			t.Errorf("%s = %v (present %v), want %v", s, got, ok, want)
		}
	}

	// Drift behind ecst's back, and a republish run that failed.
	w.Exec(`UPDATE customers SET name = 'renamed' WHERE id = 'c00003'`)
	w.Exec(`INSERT INTO ecst.republish_runs (entity, selection, state, error) VALUES ('customer', '{}', 'failed', 'broker gone')`)
	waitFor("the drift and the failed run", map[string]float64{
		`ecst_verify_drift_keys{entity="customer",kind="stale"}`: 1,
		`ecst_republish_last_run_failed{entity="customer"}`:      1,
	})
	var results []string
	rows, err := w.Pool.Query(ctx, `SELECT result FROM ecst.verify_runs WHERE entity = 'customer' ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var r string
		_ = rows.Scan(&r)
		results = append(results, r)
	}
	if len(results) < 2 || results[0] != "in_sync" || results[len(results)-1] != "drift" {
		t.Fatalf("recorded runs %v, want in_sync first and drift last", results)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("after SIGTERM: %v\n%s", waitErr, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("verify --every did not stop within 30s of SIGTERM\n%s", stderr.String())
	}
	if e := stderr.String(); !strings.Contains(e, "verify --every stopped") || !strings.Contains(e, "drift found") {
		t.Errorf("stderr:\n%s", e)
	}
	if o := stdout.String(); !strings.Contains(o, "in sync: source 10 keys") || !strings.Contains(o, "stale   1  (different content): c00003") {
		t.Errorf("stdout:\n%s", o)
	}
}

// TestVerifyEveryArgs: several entities only with --every.
func TestVerifyEveryArgs(t *testing.T) {
	t.Parallel()
	const cfg = "../../examples/customers/ecst.yaml"
	r := run(t, nil, "--config", cfg, "verify", "customer", "customer")
	if r.code != 2 || !strings.Contains(r.err, "takes one ENTITY, and was given 2: customer customer\nUsage: ecst verify ENTITY [flags]\nwith --every, several entities are verified in turn") {
		t.Fatalf("two entities: code %d\n%s", r.code, r.err)
	}
	r = run(t, nil, "--config", cfg, "verify", "--every", "1h")
	if r.code != 2 || !strings.Contains(r.err, "ENTITY is missing") {
		t.Fatalf("--every without an entity: code %d\n%s", r.code, r.err)
	}
	r = run(t, nil, "--config", cfg, "verify", "customer", "--every", "-1h")
	if r.code != 2 || !strings.Contains(r.err, "--every: -1h0m0s is negative") {
		t.Fatalf("negative --every: code %d\n%s", r.code, r.err)
	}
}

// sample reads one sample's value from the Prometheus text format.
func sample(metrics, series string) (float64, bool) {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(metrics)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
