package cli_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/internal/wait"
)

// TestConsoleCommand runs `ecst console` as a process with its token in a
// file: it logs where it serves, serves the overview, /healthz and
// /metrics, refuses an action with a wrong token (403), never logs the
// token, and stops cleanly, exit 0, on SIGTERM.
func TestConsoleCommand(t *testing.T) {
	t.Parallel()
	w := ecsttest.New(t, ecsttest.Options{})
	ctx := context.Background()
	cfgPath, env := recoveryConfig(t, w)
	const secret = "tok-3a9d0c7e-console"
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "--config", cfgPath, "console", "--addr", "127.0.0.1:0", "--token-file", tokenFile)
	cmd.Env = append(os.Environ(), "ECST_TEST_RUN_AS_ECST=1")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr syncBuf
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		_ = cmd.Process.Kill()
		<-exited
	}()

	listening := regexp.MustCompile(`console serving" addr=(127\.0\.0\.1:\d+) actions=true`)
	var base string
	if err := wait.Until(ctx, 60*time.Second, 20*time.Millisecond, "the console to serve", func() (bool, error) {
		select {
		case <-exited:
			t.Fatalf("console exited: %v\n%s", waitErr, stderr.String())
		default:
		}
		m := listening.FindStringSubmatch(stderr.String())
		if m != nil {
			base = "http://" + m[1]
		}
		return m != nil, nil
	}); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/"); code != 200 || !strings.Contains(body, w.Topic) {
		t.Fatalf("overview: %d\n%s", code, body)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz: %d", code)
	}
	resp, err := http.PostForm(base+"/actions/verify", url.Values{"entity": {"customer"}, "confirm": {"yes"}, "token": {"wrong"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("wrong token: %d", resp.StatusCode)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, `ecst_console_actions_total{action="verify",result="refused"} 1`) {
		t.Fatalf("/metrics: %d\n%s", code, body)
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
		t.Fatalf("console did not stop within 30s of SIGTERM\n%s", stderr.String())
	}
	if e := stderr.String(); !strings.Contains(e, "console stopped") || !strings.Contains(e, "action refused") || strings.Contains(e, secret) {
		t.Errorf("stderr:\n%s", e)
	}
}
