// Package wait has the sleeps and polls the relay, the consumers,
// republish, verify and the demo share, and the one poll tests use
// (Eventually).
package wait

import (
	"context"
	"fmt"
	"time"
)

// Sleep sleeps for d or until ctx ends; it reports whether it slept the
// whole time.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Until calls done every interval until it reports true or an error, ctx
// ends, or limit passes; then the error names what was awaited.
func Until(ctx context.Context, limit, interval time.Duration, what string, done func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	for {
		ok, err := done()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up after %s waiting for %s", limit, what)
		}
		if !Sleep(ctx, interval) {
			return ctx.Err()
		}
	}
}

// TB is the part of testing.TB that Eventually uses: this package is linked
// into the ecst binary, which must not link package testing.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Eventually polls cond every few milliseconds until it holds, and fails
// the test, naming what it waited for, if limit passes first. It is the
// tests' one way to wait for a condition that sends no signal.
func Eventually(t TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := Until(context.Background(), limit, 5*time.Millisecond, what, func() (bool, error) { return cond(), nil }); err != nil {
		t.Fatalf("%v", err)
	}
}
