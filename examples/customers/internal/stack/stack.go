// Package stack gives the customers example's tests the parts the two
// services run on: an ecsttest.World (a migrated PostgreSQL database, a
// broker with the customer topic, an in-process Schema Registry, and an
// ecst.yaml with the ECST_* variables that point at them) with the
// example's own partition count, and a way to talk to the services.
// Test packages that use it call pgtest.Main from TestMain.
package stack

import (
	"io"
	"net/http"
	"strings"
	"testing"

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
