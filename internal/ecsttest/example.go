package ecsttest

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
)

// Example is a world for a package's runnable examples (func Example...),
// set up as a service finds its world: the working directory holds the
// world's ecst.yaml (the customers example's, with the world's topic) and
// its schema, and the ECST_* variables are the world's Env. An example
// therefore starts as a service does, with config.Load("ecst.yaml",
// os.Getenv), and README's snippets can be its code, word for word.
//
// Examples get no *testing.T: a step of the set-up that fails panics, with
// what the world logged, and Close undoes everything (working directory,
// variables, database, broker). Examples run one at a time, after the
// tests, so that changing the process's directory and environment for one
// is safe.
type Example struct {
	*World
	tb *exampleTB
}

// NewExample builds a world for an example. Call Close when the example
// ends: defer it.
func NewExample() *Example {
	tb := &exampleTB{name: "example"}
	e := &Example{tb: tb, World: New(tb, Options{})}
	for k, v := range e.Env {
		tb.Setenv(k, v)
	}
	tb.Chdir(filepath.Dir(e.ConfigPath))
	return e
}

// Close restores the working directory and the environment, and removes
// the world.
func (e *Example) Close() { e.tb.cleanup() }

// Customer writes a customer the way the customers service does: the row
// and its event in one transaction. tier "" is none.
func (e *Example) Customer(id, name, email, tier string) {
	ctx := context.Background()
	var t *string
	if tier != "" {
		t = &tier
	}
	_, err := e.tx(ctx, func(tx pgx.Tx) (int64, error) {
		row := tx.QueryRow(ctx, `INSERT INTO customers (id, version, name, email, tier) VALUES ($1, 1, $2, $3, $4)
			ON CONFLICT (id) DO UPDATE SET version = customers.version + 1, name = $2, email = $3, tier = $4, updated_at = now()
			RETURNING id, version, name, email, tier, updated_at`, id, name, email, t)
		state, version, err := scanState(row)
		if err != nil {
			return 0, err
		}
		return version, e.Pub.Publish(ctx, tx, "customer", id, version, state)
	})
	if err != nil {
		e.tb.Fatal(err)
	}
}

// exampleTB is the testing.TB an example's world is built with. Embedding
// the interface (nil) supplies only its unexported method; every exported
// one is defined here.
type exampleTB struct {
	testing.TB
	name string

	mu       sync.Mutex
	log      strings.Builder
	cleanups []func()
	failed   bool
	ctx      context.Context
	cancel   context.CancelFunc
}

func (tb *exampleTB) cleanup() {
	tb.mu.Lock()
	fns := tb.cleanups
	tb.cleanups = nil
	cancel := tb.cancel
	tb.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	for _, f := range slices.Backward(fns) {
		f()
	}
}

func (tb *exampleTB) Cleanup(f func()) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.cleanups = append(tb.cleanups, f)
}

func (tb *exampleTB) Log(args ...any) { tb.Logf("%s", fmt.Sprintln(args...)) }

func (tb *exampleTB) Logf(format string, args ...any) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	fmt.Fprintf(&tb.log, format, args...)
	if !strings.HasSuffix(tb.log.String(), "\n") {
		tb.log.WriteString("\n")
	}
}

func (tb *exampleTB) Error(args ...any) { tb.Log(args...); tb.Fail() }

func (tb *exampleTB) Errorf(format string, args ...any) { tb.Logf(format, args...); tb.Fail() }

func (tb *exampleTB) Fatal(args ...any) { tb.Log(args...); tb.FailNow() }

func (tb *exampleTB) Fatalf(format string, args ...any) { tb.Logf(format, args...); tb.FailNow() }

func (tb *exampleTB) Fail() {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.failed = true
}

// FailNow panics: an example has no test to stop. The panic carries the
// log, and ends the test binary, which reports it.
func (tb *exampleTB) FailNow() {
	tb.Fail()
	tb.mu.Lock()
	defer tb.mu.Unlock()
	panic("ecsttest: the example's world failed:\n" + tb.log.String())
}

func (tb *exampleTB) Failed() bool {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return tb.failed
}

func (tb *exampleTB) Helper()      {}
func (tb *exampleTB) Name() string { return tb.name }

func (tb *exampleTB) TempDir() string {
	dir, err := os.MkdirTemp("", "ecst-example-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func (tb *exampleTB) ArtifactDir() string { return tb.TempDir() }

func (tb *exampleTB) Context() context.Context {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if tb.ctx == nil {
		tb.ctx, tb.cancel = context.WithCancel(context.Background())
	}
	return tb.ctx
}

func (tb *exampleTB) Output() io.Writer { return logWriter{tb} }

type logWriter struct{ tb *exampleTB }

func (w logWriter) Write(p []byte) (int, error) {
	w.tb.mu.Lock()
	defer w.tb.mu.Unlock()
	return w.tb.log.Write(p)
}

func (tb *exampleTB) Attr(key, value string) { tb.Logf("%s=%s", key, value) }

func (tb *exampleTB) Setenv(key, value string) {
	old, had := os.LookupEnv(key)
	os.Setenv(key, value)
	tb.Cleanup(func() {
		if had {
			os.Setenv(key, old)
		} else {
			os.Unsetenv(key)
		}
	})
}

func (tb *exampleTB) Chdir(dir string) {
	wd, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.Chdir(dir); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.Chdir(wd) })
}

// An example's world never skips: a skip is a failure.
func (tb *exampleTB) Skip(args ...any)                 { tb.Fatal(append([]any{"skipped:"}, args...)...) }
func (tb *exampleTB) Skipf(format string, args ...any) { tb.Fatalf("skipped: "+format, args...) }
func (tb *exampleTB) SkipNow()                         { tb.Fatal("skipped") }
func (tb *exampleTB) Skipped() bool                    { return false }
