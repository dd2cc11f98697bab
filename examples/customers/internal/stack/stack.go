// Package stack gives the customers example's tests the parts the two
// services run on: an ecsttest.World (a migrated PostgreSQL database, a
// broker with the customer topic, an in-process Schema Registry, and an
// ecst.yaml with the ECST_* variables that point at them) with the
// example's own partition count, and a way to talk to the services.
// Test packages that use it call pgtest.Main from TestMain.
package stack

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ecst-io/ecst/examples/customers/api"
	"github.com/ecst-io/ecst/internal/ecsttest"
)

// Stack is one test's world.
type Stack = ecsttest.World

// Options adjust New.
type Options struct {
	// Unregistered leaves the customer schema out of the registry.
	Unregistered bool
}

// partitions is what examples/customers/ecst.yaml declares.
const partitions = 6

// New builds a stack for t.
func New(t testing.TB, o Options) *Stack {
	t.Helper()
	return ecsttest.New(t, ecsttest.Options{Partitions: partitions, Unregistered: o.Unregistered})
}

// ServeAPI serves the customers API on s (its table created, the world's
// Publisher) until the test ends, and returns its URL.
func ServeAPI(t testing.TB, s *Stack) string {
	t.Helper()
	if err := api.EnsureTable(context.Background(), s.Pool); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.New(s.Pool, s.Pub, nil).Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

// Reply is a service's HTTP reply, read whole.
type Reply struct {
	Status int
	Header http.Header
	Body   []byte
}

// Do sends a request to a service and reads its reply.
func Do(t testing.TB, method, url, body string) Reply {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return Reply{resp.StatusCode, resp.Header, b}
}

// Service is one of the example's services running in the background on
// a listener of its own.
type Service struct {
	URL    string // http://host:port
	cancel context.CancelFunc
	done   chan error
}

// Start runs run, a service's Run, on a new listener until Stop or the end
// of the test.
func Start(t testing.TB, run func(ctx context.Context, ln net.Listener) error) *Service {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{URL: "http://" + ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- run(ctx, ln) }()
	t.Cleanup(cancel)
	return s
}

// Done receives what Run returned, once it has.
func (s *Service) Done() <-chan error { return s.done }

// Stop ends Run's context and returns what Run returned; the test fails if
// Run has not returned within 30 s.
func (s *Service) Stop(t testing.TB) error {
	t.Helper()
	s.cancel()
	select {
	case err := <-s.done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30 s of the end of its context")
		return nil
	}
}
