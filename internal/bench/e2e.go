package bench

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/consumer"
	"github.com/ecst-io/ecst/internal/customers"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/relay"
)

// E2EResult is one rate's run.
type E2EResult struct {
	Written       float64 // events/s written
	P50, P99, Max time.Duration
	N             int // events timed: every one written
}

// timedStore records when each event (key, version) is applied.
type timedStore struct {
	*consumer.Memory[customers.Customer]
	mu        sync.Mutex
	appliedAt map[string]time.Time
}

// applied reports whether every event of committed is applied.
func (s *timedStore) applied(committed map[string]time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range committed {
		if _, ok := s.appliedAt[k]; !ok {
			return false
		}
	}
	return true
}

// latencies are the commit-to-applied times of committed's applied events.
func (s *timedStore) latencies(committed map[string]time.Time) []time.Duration {
	var lat []time.Duration
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, at := range committed {
		if ap, ok := s.appliedAt[k]; ok {
			lat = append(lat, max(ap.Sub(at), 0))
		}
	}
	return lat
}

func (s *timedStore) Apply(ctx context.Context, name string, b *consumer.Batch[customers.Customer]) error {
	if err := s.Memory.Apply(ctx, name, b); err != nil {
		return err
	}
	now := time.Now()
	s.mu.Lock()
	for _, c := range b.Changes {
		s.appliedAt[c.Key+"@"+strconv.FormatInt(c.State.Version, 10)] = now
	}
	s.mu.Unlock()
	return nil
}

// E2E runs the whole path for d on a fresh topic: writers commit business
// transactions that each publish one customer's full state, rate events/s
// in all; a relay publishes them; a consumer applies them to a memory
// model. It returns the latency from each transaction's commit to the
// moment the model applied it, exact: every event is timed.
func E2E(ctx context.Context, pool *pgxpool.Pool, kopts []kgo.Opt, registry *Registry, rate, writers int, d time.Duration) (E2EResult, error) {
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	topic := "bench-e2e-" + suffix
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return E2EResult{}, err
	}
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, 6, -1, nil, topic)
	cl.Close()
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return E2EResult{}, err
	}
	reg, err := registry.Client()
	if err != nil {
		return E2EResult{}, err
	}
	defer reg.Close()
	pub, err := producer.New(producer.Config{Service: "bench", Registry: reg, AutoRegister: true,
		Entities: map[string]*config.Entity{"customer": {Name: "customer", Topic: topic, SchemaText: customers.Schema}}})
	if err != nil {
		return E2EResult{}, err
	}
	if err := pub.Resolve(ctx); err != nil {
		return E2EResult{}, err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	relay, err := relay.New(relay.Config{Pool: pool, KafkaOpts: kopts, Service: "bench-" + suffix, Topics: []string{topic}, PollMin: time.Millisecond, PollMax: 50 * time.Millisecond})
	if err != nil {
		return E2EResult{}, err
	}
	store := &timedStore{Memory: consumer.NewMemory[customers.Customer](), appliedAt: map[string]time.Time{}}
	cons, err := consumer.New(consumer.Config[customers.Customer]{Name: "bench", Topic: topic, KafkaOpts: kopts, Registry: reg, ReaderSchema: customers.Schema, Store: store})
	if err != nil {
		return E2EResult{}, err
	}
	var bg sync.WaitGroup
	errs := make(chan error, 2)
	bg.Add(2)
	go func() { defer bg.Done(); errs <- relay.Run(runCtx) }()
	go func() { defer bg.Done(); errs <- cons.Run(runCtx) }()
	if err := cons.WaitReady(ctx); err != nil {
		return E2EResult{}, err
	}

	committed, written, err := writeEvents(ctx, pool, pub, rate, writers, d)
	if err != nil {
		return E2EResult{}, err
	}
	// Wait for the model to apply everything written.
	last := time.Now().Add(30 * time.Second)
	for !store.applied(committed) && !time.Now().After(last) {
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	bg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return E2EResult{}, err
		}
	}
	lat := store.latencies(committed)
	if len(lat) != len(committed) {
		return E2EResult{}, fmt.Errorf("%d of %d events never reached the model", len(committed)-len(lat), len(committed))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) time.Duration { return lat[min(int(p*float64(len(lat))), len(lat)-1)] }
	return E2EResult{Written: float64(written) / d.Seconds(), P50: q(0.5), P99: q(0.99), Max: lat[len(lat)-1], N: len(lat)}, nil
}

// writeEvents commits events for d: writers each commit one customer's full
// state per tick, rate events/s in all. It returns when each event was
// committed, by key@version, and how many were.
func writeEvents(ctx context.Context, pool *pgxpool.Pool, pub *producer.Publisher, rate, writers int, d time.Duration) (map[string]time.Time, int64, error) {
	var mu sync.Mutex
	committed := map[string]time.Time{}
	tier := "gold"
	written, err := Pace(ctx, writers, rate, d, func(w, i int) error {
		v := int64(i) + 1
		key := "w" + strconv.Itoa(w) + "-" + strconv.FormatInt(v%500, 10)
		c := customers.Customer{ID: key, Version: v, Name: "n", Email: "e", Tier: &tier, UpdatedAt: time.Now()}
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return pub.Publish(ctx, tx, "customer", key, v, &c) }); err != nil {
			return err
		}
		at := time.Now()
		mu.Lock()
		committed[key+"@"+strconv.FormatInt(v, 10)] = at
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return committed, written, nil
}
