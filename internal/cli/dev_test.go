package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/internal/cli"
	"github.com/ecst-io/ecst/internal/testkit"
)

// devChildEnv makes the test binary act as the ecst binary: main's signal
// handling, then cli.Run on the arguments in the variable (one per line).
// It is checked in init, before TestMain starts a PostgreSQL server the
// child does not need.
const devChildEnv = "ECST_CLI_TEST_CHILD_ARGS"

func init() {
	args, ok := os.LookupEnv(devChildEnv)
	if !ok {
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, strings.Split(args, "\n"), cli.IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr, Env: os.Getenv})
	stop()
	os.Exit(code)
}

// TestDevEnvThenSIGTERM drives `ecst dev --env` as scripts do: a separate
// process whose stdout gives the three settings once the stack is ready;
// each service answers; SIGTERM stops it with exit 0, and the PostgreSQL
// server and its temporary directory are gone.
func TestDevEnvThenSIGTERM(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), devChildEnv+"=dev\n--env")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()

	env := map[string]string{}
	var order []string
	sc := bufio.NewScanner(stdout)
	for len(order) < 3 && sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			t.Fatalf("stdout line %q is not NAME=value", sc.Text())
		}
		env[k] = unquote(t, v)
		order = append(order, k)
	}
	if got := strings.Join(order, " "); got != "ECST_DATABASE_URL ECST_BROKERS ECST_SCHEMA_REGISTRY_URL" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait() // stderr is complete only then
		t.Fatalf("stdout names %q; stderr:\n%s", got, stderr.String())
	}

	// PostgreSQL, and where its files and postmaster are.
	conn, err := pgx.Connect(ctx, env["ECST_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	var dataDir string
	if err := conn.QueryRow(ctx, "SHOW data_directory").Scan(&dataDir); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	pm, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	postmaster, _ := strconv.Atoi(strings.SplitN(string(pm), "\n", 2)[0])
	clusterDir := filepath.Dir(dataDir)

	// Kafka.
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(env["ECST_BROKERS"], ",")...))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kadm.NewClient(cl).ListBrokers(ctx); err != nil {
		t.Errorf("kafka at %s: %v", env["ECST_BROKERS"], err)
	}
	cl.Close()

	// The registry.
	resp, err := http.Get(env["ECST_SCHEMA_REGISTRY_URL"] + "/subjects")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "[]" {
		t.Errorf("registry GET /subjects: %d %s", resp.StatusCode, body)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(stdout)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("ecst dev after SIGTERM: %v; stderr:\n%s", err, stderr.String())
	}
	if len(rest) != 0 {
		t.Errorf("stdout after the settings: %q", rest)
	}
	if syscall.Kill(postmaster, 0) == nil {
		t.Errorf("postmaster %d still running after ecst dev exited", postmaster)
	}
	if _, err := os.Stat(clusterDir); !os.IsNotExist(err) {
		t.Errorf("temporary cluster directory %s left behind (%v)", clusterDir, err)
	}
}

// TestDevHumanOutputAndRestart runs ecst dev in-process twice on one
// --data-dir: the settings printed, a row written, and the second run on
// the same directory and ports finding it.
func TestDevHumanOutputAndRestart(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "ecst-cli-dev-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // the postgres user must reach it when root
		t.Fatal(err)
	}
	pgPort := strconv.Itoa(testkit.FreePort(t))
	args := []string{"dev", "--data-dir", filepath.Join(dir, "dev"), "--postgres-port", pgPort, "--kafka-port", strconv.Itoa(testkit.FreePort(t))}
	url := "postgres://postgres@127.0.0.1:" + pgPort + "/postgres?sslmode=disable"

	for i, stmt := range []string{"CREATE TABLE kept (x int); INSERT INTO kept VALUES (1)", "SELECT x FROM kept"} {
		ctx, cancel := context.WithCancel(context.Background())
		out := &lineWriter{lines: make(chan string, 64)}
		var errb bytes.Buffer
		done := make(chan int, 1)
		go func() { done <- cli.Run(ctx, args, cli.IO{In: strings.NewReader(""), Out: out, Err: &errb}) }()
		var printed []string
		timeout := time.After(time.Minute)
	read:
		for {
			select {
			case line := <-out.lines:
				printed = append(printed, line)
				if strings.Contains(line, "Ctrl-C stops everything") {
					break read
				}
			case code := <-done:
				t.Fatalf("run %d: exit %d before the stack was up; stderr:\n%s", i+1, code, errb.String())
			case <-timeout:
				cancel()
				t.Fatalf("run %d: no settings within a minute; printed:\n%s", i+1, strings.Join(printed, "\n"))
			}
		}
		all := strings.Join(printed, "\n")
		for _, want := range []string{"The dev stack is up", "export ECST_DATABASE_URL='" + url + "'", "kept: start again with --data-dir"} {
			if !strings.Contains(all, want) {
				t.Errorf("run %d: output lacks %q:\n%s", i+1, want, all)
			}
		}
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, stmt); err != nil {
			t.Errorf("run %d: %s: %v", i+1, stmt, err)
		}
		conn.Close(ctx)
		cancel()
		if code := <-done; code != 0 {
			t.Fatalf("run %d: exit %d after cancel; stderr:\n%s", i+1, code, errb.String())
		}
	}
}

func TestDevPortInUseNamesTheFlag(t *testing.T) {
	t.Parallel()
	port := strconv.Itoa(testkit.BusyPort(t))
	for _, flag := range []string{"--kafka-port", "--registry-port", "--postgres-port"} {
		r := run(t, nil, "dev", flag, port)
		if r.code != cli.ExitError || !strings.Contains(r.err, flag+": ") || !strings.Contains(r.err, "already in use") {
			t.Errorf("%s %s taken: code %d, stderr %q", flag, port, r.code, r.err)
		}
	}
}

func TestDevReadyFileDirectoryMissing(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "no-such-dir", "dev.env")
	start := time.Now()
	r := run(t, nil, "dev", "--ready-file", missing)
	if r.code != cli.ExitError || !strings.Contains(r.err, "--ready-file "+missing) || !strings.Contains(r.err, "does not exist") {
		t.Fatalf("code %d, stderr %q", r.code, r.err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v: the check should come before the stack starts", d)
	}
}

// lineWriter hands each line written to it to a channel.
type lineWriter struct {
	buf   []byte
	lines chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.lines <- string(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
}

func unquote(t *testing.T, v string) string {
	t.Helper()
	if !strings.HasPrefix(v, "'") {
		return v
	}
	if !strings.HasSuffix(v, "'") || len(v) < 2 {
		t.Fatalf("badly quoted value %s", v)
	}
	return strings.ReplaceAll(v[1:len(v)-1], `'\''`, "'")
}
