package billing_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/consumer"
	"github.com/ecst-io/ecst/examples/customers"
	"github.com/ecst-io/ecst/examples/customers/billing"
	"github.com/ecst-io/ecst/examples/customers/internal/stack"
	"github.com/ecst-io/ecst/internal/pgtest"
	"github.com/ecst-io/ecst/internal/wait"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	r := stack.Do(t, "GET", url, "")
	return r.Status, r.Body
}

func send(t *testing.T, method, url, body string, status int) {
	t.Helper()
	if r := stack.Do(t, method, url, body); r.Status != status {
		t.Fatalf("%s %s: status %d, want %d: %s", method, url, r.Status, status, r.Body)
	}
}

// TestNotReadyUntilCaughtUp: a model still catching up is never served as
// if whole: /readyz and reads are 503 until the consumer is ready.
func TestNotReadyUntilCaughtUp(t *testing.T) {
	t.Parallel()
	var ready atomic.Bool
	m := billing.NewModel()
	m.Bind(ready.Load)
	srv := httptest.NewServer(billing.Handler(m, ready.Load, nil))
	defer srv.Close()
	for _, path := range []string{"/readyz", "/customers/cust-1"} {
		if code, body := get(t, srv.URL+path); code != http.StatusServiceUnavailable {
			t.Fatalf("GET %s before catching up: %d %s", path, code, body)
		}
	}
	if code, _ := get(t, srv.URL+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d", code)
	}
	ready.Store(true)
	if code, body := get(t, srv.URL+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz once caught up: %d %s", code, body)
	}
	if code, body := get(t, srv.URL+"/customers/cust-1"); code != http.StatusNotFound || !strings.Contains(string(body), `"error"`) {
		t.Fatalf("GET an unknown customer: %d %s", code, body)
	}
}

// world is the example end to end: the customers API writing to its
// database and outbox, the relay draining it to the topic, and billing
// instances reading the topic into their models.
type world struct {
	t   *testing.T
	s   *stack.Stack
	api string // the customers API's URL
}

func newWorld(t *testing.T) *world {
	t.Helper()
	s := stack.New(t, stack.Options{})
	return &world{t: t, s: s, api: stack.ServeAPI(t, s)}
}

// instance is one billing process: a consumer filling a model, served.
type instance struct {
	model *billing.Model
	c     *consumer.Consumer[customers.Customer]
	url   string
}

// startBilling starts a billing instance on a fresh model: it replays the
// topic from offset 0.
func (w *world) startBilling() *instance {
	w.t.Helper()
	in := &instance{model: billing.NewModel()}
	var err error
	in.c, err = consumer.New(consumer.Config[customers.Customer]{
		Name: billing.Name, Topic: w.s.Topic, KafkaOpts: w.s.Kafka(), Registry: w.s.Registry,
		ReaderSchema: customers.Schema, Store: in.model,
	})
	if err != nil {
		w.t.Fatal(err)
	}
	in.model.Bind(in.c.Ready)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.c.Run(ctx) }()
	w.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			w.t.Errorf("billing consumer: %v", err)
		}
	})
	srv := httptest.NewServer(billing.Handler(in.model, in.c.Ready, nil))
	w.t.Cleanup(srv.Close)
	in.url = srv.URL
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	defer wcancel()
	if err := in.c.WaitReady(wctx); err != nil {
		w.t.Fatalf("billing never caught up: %v", err)
	}
	return in
}

// accounts reads ids through billing's HTTP API: the account, or nil for
// a 404.
func (w *world) accounts(url string, ids ...string) map[string]*billing.Account {
	w.t.Helper()
	out := map[string]*billing.Account{}
	for _, id := range ids {
		code, body := get(w.t, url+"/customers/"+id)
		switch code {
		case http.StatusNotFound:
			out[id] = nil
		case http.StatusOK:
			var a billing.Account
			if err := json.Unmarshal(body, &a); err != nil {
				w.t.Fatal(err)
			}
			out[id] = &a
		default:
			w.t.Fatalf("billing GET %s: %d %s", id, code, body)
		}
	}
	return out
}

// expect is one account as billing should hold it; nil: absent.
type expect = map[string]*billing.Account

func tier(s string) *string { return &s }

func describe(m map[string]*billing.Account) string {
	var b strings.Builder
	for k, a := range m {
		if a == nil {
			fmt.Fprintf(&b, "%s: absent; ", k)
			continue
		}
		t := "<nil>"
		if a.Tier != nil {
			t = *a.Tier
		}
		fmt.Fprintf(&b, "%s: v%d %s %s %s; ", k, a.Version, a.Name, a.Email, t)
	}
	return b.String()
}

func same(a, b *billing.Account) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.ID == b.ID && a.Name == b.Name && a.Email == b.Email && a.Version == b.Version &&
		(a.Tier == nil) == (b.Tier == nil) && (a.Tier == nil || *a.Tier == *b.Tier)
}

// waitFor waits until billing's API serves want, re-reading after each
// batch the model applies.
func (w *world) waitFor(in *instance, want expect) {
	w.t.Helper()
	ids := make([]string, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	timeout := time.After(time.Minute)
	for {
		changed := in.model.Changed()
		got := w.accounts(in.url, ids...)
		ok := true
		for id, a := range want {
			ok = ok && same(got[id], a)
		}
		if ok {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			w.t.Fatalf("billing serves %s\nwant %s", describe(got), describe(want))
		}
	}
}

// TestBillingFollowsTheCustomersAPI: creates, updates and deletes made
// over the customers API reach billing's model through the outbox, the
// relay and the topic; a new billing instance replays the same state from
// offset 0.
func TestBillingFollowsTheCustomersAPI(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	first := w.startBilling() // on an empty topic: ready at once

	send(t, "POST", w.api+"/customers", `{"id": "c1", "name": "Ada", "email": "ada@example.com", "tier": "gold"}`, 201)
	send(t, "POST", w.api+"/customers", `{"id": "c2", "name": "Grace", "email": "grace@example.com"}`, 201)
	send(t, "POST", w.api+"/customers", `{"id": "c3", "name": "Edsger", "email": "edsger@example.com", "tier": "free"}`, 201)
	send(t, "PUT", w.api+"/customers/c2", `{"name": "Grace Hopper", "email": "grace@example.com", "tier": "pro"}`, 200)
	send(t, "DELETE", w.api+"/customers/c3", ``, 204)
	if n := w.s.OutboxLen(); n != 5 {
		t.Fatalf("%d outbox rows after 5 writes", n)
	}
	// Nothing reaches billing before the relay runs.
	if got := w.accounts(first.url, "c1"); got["c1"] != nil {
		t.Fatalf("billing has c1 before the relay ran: %+v", got["c1"])
	}
	w.s.Drain()
	w.waitFor(first, expect{
		"c1": {ID: "c1", Name: "Ada", Email: "ada@example.com", Tier: tier("gold"), Version: 1},
		"c2": {ID: "c2", Name: "Grace Hopper", Email: "grace@example.com", Tier: tier("pro"), Version: 2},
		"c3": nil,
	})

	// A second round: an update that clears the tier, a deletion, and a
	// deleted id created again.
	send(t, "PUT", w.api+"/customers/c1", `{"name": "Ada King", "email": "ada@example.org", "tier": null}`, 200)
	send(t, "DELETE", w.api+"/customers/c2", ``, 204)
	send(t, "POST", w.api+"/customers", `{"id": "c3", "name": "Edsger Dijkstra", "email": "ewd@example.com"}`, 201)
	w.s.Drain()
	final := expect{
		"c1": {ID: "c1", Name: "Ada King", Email: "ada@example.org", Version: 2},
		"c2": nil,
		"c3": {ID: "c3", Name: "Edsger Dijkstra", Email: "ewd@example.com", Version: 1},
	}
	w.waitFor(first, final)
	if n := first.model.Len(); n != 2 {
		t.Fatalf("billing holds %d accounts, want 2", n)
	}

	// A new instance replays the topic from offset 0 to the same state,
	// and is ready only once it has.
	second := w.startBilling()
	if got := w.accounts(second.url, "c1", "c2", "c3"); !same(got["c1"], final["c1"]) || got["c2"] != nil || !same(got["c3"], final["c3"]) {
		t.Fatalf("a replayed billing serves %s\nwant %s", describe(got), describe(final))
	}
	if n := second.model.Len(); n != 2 {
		t.Fatalf("the replayed billing holds %d accounts, want 2", n)
	}
}

// TestRun: billing as main runs it, from ecst.yaml and ECST_* variables:
// it serves /readyz once it has replayed the topic, /metrics, and stops
// when its context ends. A poison record under halt stops it with an
// error.
func TestRun(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	send(t, "POST", w.api+"/customers", `{"id": "c1", "name": "Ada", "email": "ada@example.com"}`, 201)
	w.s.Drain()

	model := billing.NewModel()
	svc := stack.Start(t, func(ctx context.Context, ln net.Listener) error {
		return billing.Run(ctx, billing.Options{ConfigPath: w.s.ConfigPath, Env: w.s.Getenv, Listener: ln, Model: model})
	})
	in := &instance{model: model, url: svc.URL}
	wait.Eventually(t, time.Minute, "billing to be ready", func() bool {
		select {
		case err := <-svc.Done():
			t.Fatalf("billing.Run returned before it was ready: %v", err)
		default:
		}
		code, _ := get(t, in.url+"/readyz")
		return code == http.StatusOK
	})
	w.waitFor(in, expect{"c1": {ID: "c1", Name: "Ada", Email: "ada@example.com", Version: 1}})
	if code, body := get(t, in.url+"/metrics"); code != http.StatusOK || !strings.Contains(string(body), `ecst_consumer_applied_total{consumer="billing"`) {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}

	// Bytes that are not Confluent wire format: billing halts, and says
	// where.
	cl := w.s.Client()
	defer cl.Close()
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: w.s.Topic, Key: []byte("junk"), Value: []byte{0xde, 0xad}}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-svc.Done():
		if !errors.Is(err, consumer.ErrPoison) || !strings.Contains(err.Error(), w.s.Topic) {
			t.Fatalf("billing.Run over a poison record: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("billing kept running over a poison record")
	}
}

// TestRunStops: cancelling the context stops billing cleanly.
func TestRunStops(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	svc := stack.Start(t, func(ctx context.Context, ln net.Listener) error {
		return billing.Run(ctx, billing.Options{ConfigPath: w.s.ConfigPath, Env: w.s.Getenv, Listener: ln})
	})
	if code, _ := get(t, svc.URL+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d", code)
	}
	if err := svc.Stop(t); err != nil {
		t.Fatalf("billing.Run after its context ended: %v", err)
	}
}
