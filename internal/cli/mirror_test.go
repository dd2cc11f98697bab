package cli_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ecst-io/ecst/internal/cli"
	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/internal/pgident"
	"github.com/ecst-io/ecst/internal/testkit"
	"github.com/ecst-io/ecst/internal/wait"
)

// runCtx runs the command line on ctx, as the ecst binary does on its
// signal context.
func runCtx(ctx context.Context, env map[string]string, args ...string) result {
	var out, errb testkit.Buffer
	code := cli.Run(ctx, args, cli.IO{In: strings.NewReader(""), Out: &out, Err: &errb, Env: func(k string) string { return env[k] }})
	return result{code, out.String(), errb.String()}
}

// within runs the command line, giving up after d: a command that retries
// forever fails the test instead of hanging it.
func within(t *testing.T, d time.Duration, env map[string]string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return runCtx(ctx, env, args...)
}

// drain runs relay --drain, then waits until the topic's last stable
// offset covers what it published (the topic, read committed, matches the
// source): a real broker writes a transaction's markers a moment after the
// commit returns, and a catch-up goes to the end it sees at start.
func drain(t *testing.T, w *ecsttest.World, cfgPath string, env map[string]string) {
	t.Helper()
	if r := run(t, env, "--config", cfgPath, "relay", "--drain"); r.code != 0 {
		t.Fatalf("relay --drain: code %d\n%s", r.code, r.err)
	}
	if err := wait.Until(context.Background(), time.Minute, 10*time.Millisecond, "the topic to show what the relay published", func() (bool, error) {
		return len(w.TopicMatchesSource()) == 0, nil
	}); err != nil {
		t.Fatalf("%v: %v", err, w.TopicMatchesSource())
	}
}

// TestMirrorTableNames: mirror, verify --mirror and rebuild take a table
// name as SQL writes it, all three the same way: mixed case (folded to
// lower case), double-quoted with capitals and spaces, schema-qualified.
func TestMirrorTableNames(t *testing.T) {
	t.Parallel()
	w := ecsttest.New(t, ecsttest.Options{})
	cfgPath, env := recoveryConfig(t, w)
	ecst := func(wantCode int, args ...string) result {
		t.Helper()
		r := within(t, 2*time.Minute, env, append([]string{"--config", cfgPath}, args...)...)
		if r.code != wantCode {
			t.Fatalf("ecst %q: code %d, want %d\n%s%s", args, r.code, wantCode, r.out, r.err)
		}
		return r
	}
	w.Seed(context.Background(), ecsttest.Keys(30))
	drain(t, w, cfgPath, env)
	w.Exec(`CREATE SCHEMA "My Schema"`)
	w.Exec(`CREATE SCHEMA analytics`)
	for _, table := range []string{"BookMirror", `"Bad Name"`, `"My Schema"."Book Mirror"`, "analytics.BookMirror"} {
		name, err := pgident.Parse(table)
		if err != nil {
			t.Fatal(err)
		}
		r := ecst(0, "mirror", "customer", "--table", table, "--once")
		if want := name.String() + " caught up with " + w.Topic + ": 30 rows"; !strings.Contains(r.out, want) {
			t.Fatalf("mirror --table %s: want %q in\n%s", table, want, r.out)
		}
		if diff := w.MirrorMatchesSource(table); len(diff) > 0 {
			t.Fatalf("mirror %s differs from the source: %v", table, diff)
		}
		if r := ecst(0, "verify", "customer", "--mirror", table); !strings.Contains(r.out, "in sync") {
			t.Fatalf("verify --mirror %s:\n%s", table, r.out)
		}
		// Broken by hand, verify sees it; a rebuild, named either way, mends it.
		w.Exec(`DELETE FROM ` + name.Quoted() + ` WHERE _key = 'c00003'`)
		ecst(1, "verify", "customer", "--mirror", table)
		for _, consumer := range []string{"mirror:" + name.String(), table} {
			r = ecst(0, "rebuild", consumer)
			if want := name.String() + " rebuilt from " + w.Topic + " and swapped in: 30 rows"; !strings.Contains(r.out, want) {
				t.Fatalf("rebuild %s: want %q in\n%s", consumer, want, r.out)
			}
		}
		ecst(0, "verify", "customer", "--mirror", table)
	}
	// BookMirror and analytics.BookMirror are bookmirror, as in SQL.
	var n int
	if err := w.Pool.QueryRow(context.Background(), `SELECT count(*) FROM bookmirror`).Scan(&n); err != nil || n != 30 {
		t.Fatalf("bookmirror: %d rows, %v", n, err)
	}

	// A name SQL cannot read unquoted is refused at once, with the quoting that works.
	r := ecst(2, "mirror", "customer", "--table", "Bad Name", "--once")
	if !strings.Contains(r.err, `--table: "Bad Name" is not a table name`) || !strings.Contains(r.err, `'"Bad Name"'`) {
		t.Fatalf("mirror --table 'Bad Name':\n%s", r.err)
	}
	r = ecst(2, "verify", "customer", "--mirror", "Bad Name")
	if !strings.Contains(r.err, `--mirror: "Bad Name" is not a table name`) {
		t.Fatalf("verify --mirror 'Bad Name':\n%s", r.err)
	}
	ecst(2, "rebuild", "mirror:Bad Name")
}

// TestMirrorOnceCountsRecords: --once reports the records it applied
// (upserts and deletions), not offsets, which transaction markers take
// too, and ends with the totals.
func TestMirrorOnceCountsRecords(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := ecsttest.New(t, ecsttest.Options{})
	cfgPath, env := recoveryConfig(t, w)
	w.Seed(ctx, ecsttest.Keys(3))
	if err := w.Delete(ctx, "c00001"); err != nil {
		t.Fatal(err)
	}
	drain(t, w, cfgPath, env)
	r := within(t, 2*time.Minute, env, "--config", cfgPath, "mirror", "customer", "--once")
	if r.code != 0 {
		t.Fatalf("mirror: code %d\n%s", r.code, r.err)
	}
	if !strings.Contains(r.err, "mirror customer_mirror: 4 records applied, 100% of the topic read") {
		t.Errorf("the progress line does not count the 4 records:\n%s", r.err)
	}
	if want := "customer_mirror caught up with " + w.Topic + ": 2 rows (4 records applied: 3 upserts, 1 deletion)\n"; r.out != want {
		t.Errorf("summary %q, want %q", r.out, want)
	}
	// Again: nothing new, nothing applied.
	r = within(t, 2*time.Minute, env, "--config", cfgPath, "mirror", "customer", "--once")
	if want := ": 2 rows (0 records applied: 0 upserts, 0 deletions)\n"; r.code != 0 || !strings.HasSuffix(r.out, want) {
		t.Errorf("second run: code %d, %q, want it to end with %q\n%s", r.code, r.out, want, r.err)
	}
}

// TestMirrorOnceFailsOnPermanentError: a mirror whose batch PostgreSQL
// refuses for good (a NOT NULL column added by hand) exits 2 with the
// error, at once, instead of retrying every second.
func TestMirrorOnceFailsOnPermanentError(t *testing.T) {
	t.Parallel()
	w := ecsttest.New(t, ecsttest.Options{})
	cfgPath, env := recoveryConfig(t, w)
	w.Seed(context.Background(), ecsttest.Keys(3))
	drain(t, w, cfgPath, env)
	w.Exec(`CREATE TABLE customer_mirror (_key text PRIMARY KEY, id text, version bigint, name text, email text, tier text, updated_at timestamptz, owner text NOT NULL)`)
	r := within(t, time.Minute, env, "--config", cfgPath, "mirror", "customer", "--once")
	if r.code != cli.ExitError || strings.Contains(r.out, "caught up with") ||
		!strings.Contains(r.err, "customer_mirror has not caught up with "+w.Topic+" (0 records applied") || !strings.Contains(r.err, "SQLSTATE 23502") {
		t.Fatalf("mirror over a NOT NULL column: code %d\n%s%s", r.code, r.out, r.err)
	}
}

// TestMirrorOnceInterrupted: a mirror --once stopped (SIGINT) before it
// caught up says so and exits 2; it never claims to have caught up.
func TestMirrorOnceInterrupted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := ecsttest.New(t, ecsttest.Options{})
	cfgPath, env := recoveryConfig(t, w)
	// The first run, on an empty topic, creates the table and catches up.
	if r := within(t, time.Minute, env, "--config", cfgPath, "mirror", "customer", "--once"); r.code != 0 || !strings.Contains(r.out, "caught up with") {
		t.Fatalf("mirror of an empty topic: code %d\n%s%s", r.code, r.out, r.err)
	}
	w.Seed(ctx, ecsttest.Keys(3))
	drain(t, w, cfgPath, env)
	// The table is locked: the mirror's batch waits until it is interrupted.
	locker, err := w.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Rollback(ctx) //nolint:errcheck
	if _, err := locker.Exec(ctx, "LOCK TABLE customer_mirror IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	sigint, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan result, 1)
	go func() { done <- runCtx(sigint, env, "--config", cfgPath, "mirror", "customer", "--once") }()
	wait.Eventually(t, time.Minute, "the mirror to wait on the locked table", func() bool {
		var waiting int
		if err := w.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO "customer_mirror"%'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		return waiting > 0
	})
	cancel()
	r := <-done
	if r.code != cli.ExitError || strings.Contains(r.out, "caught up with") ||
		!strings.Contains(r.err, "customer_mirror has not caught up with "+w.Topic+": interrupted with nothing applied;") {
		t.Fatalf("an interrupted mirror: code %d\n%s%s", r.code, r.out, r.err)
	}
}
