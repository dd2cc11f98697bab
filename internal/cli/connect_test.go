package cli_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/internal/cli"
	"github.com/ecst-io/ecst/internal/pgtest"
)

// TestSilentDatabaseTimesOut: a PostgreSQL host that accepts the connection
// and never answers makes migrate, verify and relay fail within the connect
// bound (the default, or the URL's connect_timeout), with an error that
// names the bound and how to raise it, and no password.
func TestSilentDatabaseTimesOut(t *testing.T) {
	t.Parallel()
	addr := pgtest.Silent(t)
	cfg := topicsConfig(t, "silent.state", 1, "    source:\n      table: customers\n      key: id\n")
	type tc struct {
		name  string
		args  []string
		query string
		bound time.Duration
	}
	// Every command connects the same way (config.Database.Connect): one
	// waits out the default, the others show the URL's bound is honored.
	cases := []tc{
		{"migrate_default", []string{"migrate"}, "", config.DefaultConnectTimeout},
		{"migrate", []string{"migrate"}, "?connect_timeout=1", time.Second},
		{"verify", []string{"--config", cfg, "verify", "customer"}, "?connect_timeout=1", time.Second},
		{"relay", []string{"--config", cfg, "relay", "--drain"}, "?connect_timeout=1", time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{
				"ECST_DATABASE_URL":        "postgres://app:hunter2@" + addr + "/app" + tc.query,
				"ECST_BROKERS":             "127.0.0.1:1",
				"ECST_SCHEMA_REGISTRY_URL": "http://127.0.0.1:1",
				"ECST_METRICS_ADDR":        "off",
			}
			// The deadline only keeps a regression from hanging the test.
			ctx, cancel := context.WithTimeout(context.Background(), tc.bound+30*time.Second)
			defer cancel()
			var out, errb bytes.Buffer
			start := time.Now()
			code := cli.Run(ctx, tc.args, cli.IO{In: strings.NewReader(""), Out: &out, Err: &errb, Env: func(k string) string { return env[k] }})
			took := time.Since(start)
			if code != cli.ExitError {
				t.Fatalf("code %d, want %d\n%s%s", code, cli.ExitError, out.String(), errb.String())
			}
			want := fmt.Sprintf("no answer within %s; ", tc.bound)
			if !strings.Contains(errb.String(), want) || !strings.Contains(errb.String(), "connect_timeout=N") {
				t.Errorf("error lacks %q and the setting to raise it:\n%s", want, errb.String())
			}
			if strings.Contains(out.String()+errb.String(), "hunter2") {
				t.Errorf("password printed:\n%s", errb.String())
			}
			if took < tc.bound || took > tc.bound+5*time.Second {
				t.Errorf("gave up after %v, want about %v", took, tc.bound)
			}
		})
	}
}
