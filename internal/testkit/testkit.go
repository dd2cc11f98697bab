// Package testkit has the small pieces that tests across ecst share and
// that need neither a database nor a broker: a buffer that a goroutine
// writes while the test reads it, a free port, a directory other users can
// enter, and a metric's value. (Waiting on a condition is wait.Eventually;
// a whole system is ecsttest.World.)
package testkit

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Buffer is a bytes.Buffer safe for concurrent use: a log or a process's
// output, written by one goroutine and read by the test.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(tb testing.TB) int {
	tb.Helper()
	l := listen(tb)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// BusyPort returns a TCP port on 127.0.0.1 that is taken (listened on, never
// answered) until the test ends.
func BusyPort(tb testing.TB) int {
	tb.Helper()
	l := listen(tb)
	tb.Cleanup(func() { l.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

func listen(tb testing.TB) net.Listener {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

// OpenTempDir is a temporary directory, removed when the test ends, that
// other users can enter: PostgreSQL runs as the postgres user when the
// tests run as root, and t.TempDir's directories are private to root.
func OpenTempDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "ecst-test-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// Metric sums the values of a metric over its labels: counters and gauges
// by value, histograms by sample count. A metric not registered is 0.
func Metric(tb testing.TB, reg *prometheus.Registry, name string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

// FirstDiff names the first line where a committed file and the one
// generated now part, for a test that fails when generated docs are stale.
func FirstDiff(committed, generated string) string {
	a, b := strings.Split(committed, "\n"), strings.Split(generated, "\n")
	for i := range max(len(a), len(b)) {
		var x, y string
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			return "line " + strconv.Itoa(i+1) + ": committed " + strconv.Quote(x) + ", generated " + strconv.Quote(y)
		}
	}
	return "(line endings)"
}

// Parallel runs fn(0) … fn(n-1), each in a goroutine of its own, waits for
// them all, and fails the test with the errors they returned.
func Parallel(tb testing.TB, n int, fn func(i int) error) {
	tb.Helper()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = fn(i) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		tb.Fatal(err)
	}
}

// Background runs run in a goroutine until stop is called or the test
// ends; stop ends run's context and returns what run returned.
func Background(tb testing.TB, run func(ctx context.Context) error) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	tb.Cleanup(func() { _ = stop() })
	return stop
}
