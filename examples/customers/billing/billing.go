// Package billing is a consumer of the customers.state topic: it keeps its
// own read model of the customers it bills (id, name, email, tier), built
// by replaying the topic from offset 0 on every start, and serves it.
//
//	GET /customers/{id}   200 the account, 404, or 503 while catching up
//	GET /readyz           503 until the model has caught up with the topic
//	GET /healthz          200 while the process runs
//
// The model lives in memory (consumer.Memory), so it has nothing to lose:
// a restart replays the compacted topic, which holds every customer's
// latest state.
package billing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"

	"github.com/ecst-io/ecst/consumer"
	"github.com/ecst-io/ecst/examples/customers"
	"github.com/ecst-io/ecst/examples/customers/internal/web"
)

// Account is what billing keeps of a customer.
type Account struct {
	// ID, Name, Email and Tier are the customer's (Tier nil: none).
	ID    string  `json:"id"`
	Name  string  `json:"name"`  // see ID
	Email string  `json:"email"` // see ID
	Tier  *string `json:"tier"`  // see ID
	// Version is the customer's version this account reflects.
	Version int64 `json:"version"`
}

func accountOf(c customers.Customer) Account {
	return Account{ID: c.ID, Name: c.Name, Email: c.Email, Tier: c.Tier, Version: c.Version}
}

// Model is billing's read model: a consumer.Store of customers that keeps
// only the accounts. It is safe for concurrent use.
type Model struct {
	accounts *consumer.Memory[Account]

	mu      sync.Mutex
	changed chan struct{} // closed and replaced after every applied batch
}

// NewModel returns an empty model.
func NewModel() *Model {
	return &Model{accounts: consumer.NewMemory[Account](), changed: make(chan struct{})}
}

// Bind makes reads fail with consumer.ErrNotReady until ready reports true
// (Consumer.Ready).
func (m *Model) Bind(ready func() bool) { m.accounts.Bind(ready) }

// Offsets implements consumer.Store: what this process has applied, so a
// new process replays from offset 0.
func (m *Model) Offsets(ctx context.Context, name, topic string) (map[int32]int64, error) {
	return m.accounts.Offsets(ctx, name, topic)
}

// Apply implements consumer.Store: each customer's state becomes its
// account, each deletion removes it, all under one lock.
func (m *Model) Apply(ctx context.Context, name string, b *consumer.Batch[customers.Customer]) error {
	ab := &consumer.Batch[Account]{Topic: b.Topic, From: b.From, Next: b.Next, Skipped: b.Skipped,
		Changes: make([]consumer.Change[Account], len(b.Changes))}
	for i, c := range b.Changes {
		ab.Changes[i] = consumer.Change[Account]{Key: c.Key, Deleted: c.Deleted, Partition: c.Partition, Offset: c.Offset, Headers: c.Headers, Schema: c.Schema}
		if !c.Deleted {
			ab.Changes[i].State = accountOf(c.State)
		}
	}
	if err := m.accounts.Apply(ctx, name, ab); err != nil {
		return err
	}
	m.mu.Lock()
	close(m.changed)
	m.changed = make(chan struct{})
	m.mu.Unlock()
	return nil
}

// Changed returns a channel that is closed when the next batch has been
// applied: take it, read the model, and wait on it if what you looked for
// is not there yet.
func (m *Model) Changed() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changed
}

// Get returns the account of customer id; consumer.ErrNotReady while the
// model is catching up.
func (m *Model) Get(id string) (Account, bool, error) { return m.accounts.Get(id) }

// Len is the number of accounts held.
func (m *Model) Len() int { return m.accounts.Len() }

// Handler serves the model; ready is Consumer.Ready.
func Handler(m *Model, ready func() bool, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /customers/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		a, ok, err := m.Get(id)
		switch {
		case errors.Is(err, consumer.ErrNotReady):
			web.Error(w, http.StatusServiceUnavailable, err.Error())
		case err != nil:
			log.Error("read model", "err", err)
			web.Error(w, http.StatusInternalServerError, "internal error; the server's log has the cause")
		case !ok:
			web.Error(w, http.StatusNotFound, fmt.Sprintf("customer %q not found", id))
		default:
			web.JSON(w, http.StatusOK, a)
		}
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			web.Error(w, http.StatusServiceUnavailable, "catching up with the topic")
			return
		}
		web.JSON(w, http.StatusOK, map[string]any{"status": "ready", "accounts": m.Len()})
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		web.JSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	return web.Log(mux, log)
}

var _ consumer.Store[customers.Customer] = (*Model)(nil)
