package cli_test

import (
	"bytes"
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/ecst-io/ecst/internal/cli"
	"github.com/ecst-io/ecst/internal/pgtest"
)

func TestMain(m *testing.M) {
	// The test binary stands in for the ecst binary when a test runs it
	// from a shell (the completion test does).
	// Like cmd/ecst, it stops on SIGINT and SIGTERM.
	if os.Getenv("ECST_TEST_RUN_AS_ECST") == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := cli.Run(ctx, os.Args[1:], cli.IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr, Env: os.Getenv})
		stop()
		os.Exit(code)
	}
	pgtest.Main(m)
}

type result struct {
	code     int
	out, err string
}

func run(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := cli.Run(context.Background(), args, cli.IO{
		In: strings.NewReader(""), Out: &out, Err: &errb,
		Env: func(k string) string { return env[k] },
	})
	return result{code, out.String(), errb.String()}
}

func TestMigrateCommand(t *testing.T) {
	t.Parallel()
	env := map[string]string{"ECST_DATABASE_URL": pgtest.NewDBURL(t, pgtest.Empty())}
	dir := t.TempDir() // no ecst.yaml: migrate needs none
	cfg := filepath.Join(dir, "none.yaml")
	_ = cfg

	r := run(t, env, "migrate", "--status")
	if r.code != cli.ExitProblem || !regexp.MustCompile(`(?m)^001\s+initial\s+pending\s+-$`).MatchString(r.out) {
		t.Fatalf("status before: code %d\n%s%s", r.code, r.out, r.err)
	}
	r = run(t, env, "migrate")
	if r.code != 0 || !strings.Contains(r.out, "applied 001_initial") {
		t.Fatalf("migrate: code %d\n%s%s", r.code, r.out, r.err)
	}
	r = run(t, env, "migrate")
	if r.code != 0 || !strings.Contains(r.out, "up to date") || strings.Contains(r.out, "applied") {
		t.Fatalf("second migrate: code %d\n%s%s", r.code, r.out, r.err)
	}
	r = run(t, env, "migrate", "--status")
	if r.code != 0 || !regexp.MustCompile(`(?m)^001\s+initial\s+applied\s+\d{4}-`).MatchString(r.out) {
		t.Fatalf("status after: code %d\n%s%s", r.code, r.out, r.err)
	}
}

func TestConnectionErrorsAreExit2AndRedacted(t *testing.T) {
	t.Parallel()
	r := run(t, map[string]string{"ECST_DATABASE_URL": "postgres://app:hunter2@127.0.0.1:1/app?connect_timeout=2"}, "migrate")
	if r.code != cli.ExitError {
		t.Fatalf("code %d, want 2\n%s", r.code, r.err)
	}
	if strings.Contains(r.err+r.out, "hunter2") {
		t.Fatalf("password printed:\n%s", r.err)
	}
	if !strings.Contains(r.err, "ECST_DATABASE_URL") {
		t.Errorf("error does not say which setting to fix:\n%s", r.err)
	}
	r = run(t, map[string]string{"ECST_DATABASE_URL": "postgres://app:hunter2@[bad/app"}, "migrate")
	if r.code != cli.ExitError || strings.Contains(r.err, "hunter2") {
		t.Fatalf("code %d, err:\n%s", r.code, r.err)
	}
	r = run(t, nil, "migrate")
	if r.code != cli.ExitError || !strings.Contains(r.err, "ECST_DATABASE_URL") {
		t.Fatalf("no URL: code %d, err:\n%s", r.code, r.err)
	}
}

func TestUsageErrorsAreExit2(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"migrate", "--no-such-flag"}, {"no-such-command"}, {"migrate", "extra-arg"}, {"--log-format", "xml", "migrate"}} {
		if r := run(t, nil, args...); r.code != cli.ExitError {
			t.Errorf("%v: code %d, want 2\n%s", args, r.code, r.err)
		}
	}
}

func TestConfigShow(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"ECST_DATABASE_URL":             "postgres://app:hunter2@db/app",
		"ECST_KAFKA_SASL_MECHANISM":     "SCRAM-SHA-512",
		"ECST_KAFKA_SASL_USERNAME":      "relay",
		"ECST_KAFKA_SASL_PASSWORD":      "hunter3",
		"ECST_SCHEMA_REGISTRY_PASSWORD": "hunter4",
		"ECST_SCHEMA_REGISTRY_USERNAME": "sr",
	}
	r := run(t, env, "--config", "../../examples/customers/ecst.yaml", "config", "show", "--brokers", "k1:9092,k2:9092")
	if r.code != 0 {
		t.Fatalf("code %d\n%s", r.code, r.err)
	}
	for _, want := range []string{"customers.state", "FULL_TRANSITIVE", "- k1:9092", "- k2:9092", "postgres://app:xxxxx@db/app", "password: '[REDACTED]'"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("output lacks %q:\n%s", want, r.out)
		}
	}
	for _, secret := range []string{"hunter2", "hunter3", "hunter4"} {
		if strings.Contains(r.out+r.err, secret) {
			t.Fatalf("secret %s printed:\n%s", secret, r.out)
		}
	}
}

func TestConfigShowInvalidListsEveryProblem(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "ecst.yaml")
	os.WriteFile(p, []byte("entities:\n  customer:\n    topic: a\n    schema: missing.avsc\n  account:\n    topic: a\n    schema: missing.avsc\n"), 0o644)
	r := run(t, nil, "--config", p, "config", "show")
	if r.code != cli.ExitError {
		t.Fatalf("code %d", r.code)
	}
	for _, want := range []string{"entities.account.schema", "entities.customer.schema", "is also used by entity"} {
		if !strings.Contains(r.err, want) {
			t.Errorf("error lacks %q:\n%s", want, r.err)
		}
	}
}

// TestHelpShowsNoSecrets: flag defaults come from nowhere secret, even when
// the environment holds credentials.
func TestHelpShowsNoSecrets(t *testing.T) {
	t.Parallel()
	r := run(t, map[string]string{"ECST_DATABASE_URL": "postgres://a:hunter2@h/d", "ECST_KAFKA_SASL_PASSWORD": "hunter3"}, "migrate", "--help")
	if r.code != 0 || strings.Contains(r.out, "hunter") || !strings.Contains(r.out, "--database-url") {
		t.Fatalf("code %d\n%s", r.code, r.out)
	}
}

func TestDemo(t *testing.T) {
	t.Parallel()
	r := run(t, nil, "demo")
	if r.code != 0 {
		t.Fatalf("demo failed: code %d\n%s\n%s", r.code, r.out, r.err)
	}
	for _, want := range []string{"applied 001_initial", "customer.deleted", "null (tombstone)",
		"stale   1  (different content): cust-1", "missing 1  (in the topic, not in the mirror): cust-2", "in sync", "The story converged"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	// The repair verify suggests is the step the demo runs next (and the
	// demo fails unless that step converged).
	m := regexp.MustCompile(`(?m)^\s+Repair it with: (ecst .+)$`).FindStringSubmatch(r.out)
	if m == nil || m[1] != "ecst verify customer --mirror billing_customers --repair" || !strings.Contains(r.out, ". "+m[1]+": ") {
		t.Errorf("the demo suggests %q, and should then run it as a step:\n%s", m, r.out)
	}
}

func newMigratedDB(t *testing.T) string { return pgtest.NewDBURL(t) }
