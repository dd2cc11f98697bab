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
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/relay"
)

// E2ERun is one rate's run.
type E2ERun struct {
	Rate, Writers int
	// Measure is how long the events are written and timed. With Hold, a
	// REPEATABLE READ snapshot is held open from the start for Hold (on a
	// connection to DBURL), the events are written for Hold, and those of
	// its last Measure are timed: when the snapshot is oldest.
	Measure, Hold time.Duration
	DBURL         string
	// Transport is the outbox transport written and relayed (table when
	// zero). For wal the database must already run it (relay.Switch, with
	// Service WALService).
	Transport outbox.Transport
}

// WALService is the relay's service on the WAL transport: it names the
// slot, which outlives each run, so every run streams the same one.
const WALService = "bench"

// E2EResult is one rate's run.
type E2EResult struct {
	Written       float64 // events/s written
	P50, P99, Max time.Duration
	N             int   // events timed: every one written in the timed part
	Dead          int64 // the outbox's dead tuples once the writers stopped
}

// timedStore records when each event (key, version) is applied, from from
// on.
type timedStore struct {
	*consumer.Memory[customers.Customer]
	from      time.Time
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
	if now.Before(s.from) {
		return nil
	}
	s.mu.Lock()
	for _, c := range b.Changes {
		s.appliedAt[c.Key+"@"+strconv.FormatInt(c.State.Version, 10)] = now
	}
	s.mu.Unlock()
	return nil
}

// E2E runs the whole path on a fresh topic: writers commit business
// transactions that each publish one customer's full state, run.Rate
// events/s in all; a relay publishes them; a consumer applies them to a
// memory model. It returns the latency from each transaction's commit to
// the moment the model applied it, exact: every event of the timed part is
// timed.
func E2E(ctx context.Context, pool *pgxpool.Pool, kopts []kgo.Opt, registry *Registry, run E2ERun) (E2EResult, error) {
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
	pub, err := producer.New(producer.Config{Service: "bench", Registry: reg, AutoRegister: true, Transport: run.Transport,
		Entities: map[string]*config.Entity{"customer": {Name: "customer", Topic: topic, SchemaText: customers.Schema}}})
	if err != nil {
		return E2EResult{}, err
	}
	if err := pub.Resolve(ctx); err != nil {
		return E2EResult{}, err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	service := "bench-" + suffix
	if run.Transport == outbox.TransportWAL {
		service = WALService
	}
	relay, err := relay.New(relay.Config{Pool: pool, KafkaOpts: kopts, Service: service, Transport: run.Transport, Topics: []string{topic}, PollMin: time.Millisecond, PollMax: 50 * time.Millisecond})
	if err != nil {
		return E2EResult{}, err
	}
	length := max(run.Measure, run.Hold)
	start := time.Now()
	from := start.Add(length - run.Measure)
	store := &timedStore{Memory: consumer.NewMemory[customers.Customer](), appliedAt: map[string]time.Time{}, from: from}
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

	if run.Hold > 0 {
		release, err := holdSnapshot(ctx, run.DBURL)
		if err != nil {
			return E2EResult{}, err
		}
		defer release()
	}
	committed, written, err := writeEvents(ctx, pool, pub, run.Rate, run.Writers, start.Add(length), from)
	if err != nil {
		return E2EResult{}, err
	}
	var dead int64
	if err := pool.QueryRow(ctx, `SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables WHERE schemaname = 'ecst' AND relname LIKE 'outbox%'`).Scan(&dead); err != nil {
		return E2EResult{}, fmt.Errorf("read the outbox's dead tuples: %w", err)
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
	return E2EResult{Written: float64(written) / length.Seconds(), P50: q(0.5), P99: q(0.99), Max: lat[len(lat)-1], N: len(lat), Dead: dead}, nil
}

// holdSnapshot opens a REPEATABLE READ transaction on a connection of its
// own and takes its snapshot with a read of a catalog table, not the outbox,
// as a pg_dump of other tables or a report does; release rolls it back.
func holdSnapshot(ctx context.Context, dbURL string) (release func(), err error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return nil, fmt.Errorf("hold a snapshot: connect: %w", err)
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err == nil {
		_, err = tx.Exec(ctx, "SELECT count(*) FROM pg_class")
	}
	if err != nil {
		conn.Close(ctx)
		return nil, fmt.Errorf("hold a snapshot: %w", err)
	}
	return func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = tx.Rollback(cctx)
		conn.Close(cctx)
	}, nil
}

// writeEvents commits events until deadline: writers each commit one
// customer's full state per tick, rate events/s in all. It returns when each
// event committed from from on was committed, by key@version, and how many
// were committed in all.
func writeEvents(ctx context.Context, pool *pgxpool.Pool, pub *producer.Publisher, rate, writers int, deadline, from time.Time) (map[string]time.Time, int64, error) {
	var mu sync.Mutex
	committed := map[string]time.Time{}
	tier := "gold"
	written, err := Pace(ctx, writers, rate, deadline, func(w, i int) error {
		v := int64(i) + 1
		key := "w" + strconv.Itoa(w) + "-" + strconv.FormatInt(v%500, 10)
		c := customers.Customer{ID: key, Version: v, Name: "n", Email: "e", Tier: &tier, UpdatedAt: time.Now()}
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return pub.Publish(ctx, tx, "customer", key, v, &c) }); err != nil {
			return err
		}
		if at := time.Now(); !at.Before(from) {
			mu.Lock()
			committed[key+"@"+strconv.FormatInt(v, 10)] = at
			mu.Unlock()
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return committed, written, nil
}
