package cli

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/consumer"
	"github.com/ecst-io/ecst/examples/customers"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/relay"
	"github.com/ecst-io/ecst/schemas"
)

func newBenchE2ECmd(a *app) *cobra.Command {
	var rates, transport string
	var warmup, d, hold time.Duration
	var writers int
	cmd := &cobra.Command{
		Use:   "e2e",
		Short: "Commit-to-read-model latency with the relay and a consumer running, at given write rates",
		Long: `Runs the whole path in one process on a throwaway durable PostgreSQL and the broker
named by ECST_BROKERS (or an in-process kfake): writers commit business
transactions that each publish one customer's full state, at each --rates
value for --duration; the relay publishes them; a consumer applies them to a
memory model. Reports the latency from each transaction's commit to the moment
the model applied it: p50, p99 and max, exact (every event is timed).

--hold-snapshot D holds a REPEATABLE READ snapshot open from the start of each
rate's run, on a table other than the outbox, as a long pg_dump, report or
idle transaction does on a production primary: the run then lasts D, the
latencies are those of its last --duration (when the snapshot is oldest), and
the dead tuples column is the outbox's at the end (pg_stat_user_tables).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			out := cmd.OutOrStdout()
			switch transport {
			case "table":
			case "wal":
				return fmt.Errorf("--transport wal: the WAL transport is not built yet; measure the table transport (--transport table)")
			default:
				return fmt.Errorf("--transport %q: use table or wal", transport)
			}
			if hold < 0 || (hold > 0 && hold < d) {
				return fmt.Errorf("--hold-snapshot %s: hold the snapshot at least as long as --duration (%s)", hold, d)
			}
			parts, err := a.benchParts(ctx, out, writers+8)
			if err != nil {
				return err
			}
			defer parts.stop()
			broker := parts.broker
			fakeReg := srfake.New()
			defer fakeReg.Close()
			fmt.Fprintf(out, "commit -> read model applied, %s, durable PostgreSQL, %d writers, %s transport, 2 cores\n", broker, writers, transport)
			if hold > 0 {
				fmt.Fprintf(out, "a REPEATABLE READ snapshot held for %s from the start of each run; latencies of its last %s\n", hold, d)
			}
			fmt.Fprintln(out)
			if warmup > 0 {
				// A fresh broker's first transactions (coordinator and
				// partition set-up) take hundreds of ms: not what is measured.
				if _, err := e2eRun(ctx, parts, fakeReg, e2eOpts{rate: 1000, writers: writers, measure: warmup}); err != nil {
					return err
				}
				fmt.Fprintf(out, "(warm-up: %s at 1000/s, not counted)\n", warmup)
			}
			fmt.Fprintf(out, "%10s %10s %8s %8s %8s %8s %12s\n", "offered/s", "written/s", "p50 ms", "p99 ms", "max ms", "events", "dead tuples")
			for _, r := range strings.Split(rates, ",") {
				rate, err := strconv.Atoi(strings.TrimSpace(r))
				if err != nil {
					return fmt.Errorf("--rates: %q is not a number", r)
				}
				res, err := e2eRun(ctx, parts, fakeReg, e2eOpts{rate: rate, writers: writers, measure: d, hold: hold})
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "%10d %10.0f %8.1f %8.1f %8.1f %8d %12d\n", rate, res.written, ms(res.p50), ms(res.p99), ms(res.max), res.n, res.dead)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&rates, "rates", "2000,10000", "comma-separated write rates, events/s")
	cmd.Flags().DurationVar(&warmup, "warmup", 2*time.Second, "an uncounted run first, at 1000 events/s (0 skips it)")
	cmd.Flags().DurationVar(&d, "duration", 10*time.Second, "how long each rate runs")
	cmd.Flags().IntVar(&writers, "writers", 16, "concurrent writers")
	cmd.Flags().DurationVar(&hold, "hold-snapshot", 0, "hold a REPEATABLE READ snapshot open for this long from the start of each run (the run lasts as long)")
	cmd.Flags().StringVar(&transport, "transport", "table", "the outbox transport measured: table or wal")
	return cmd
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

type e2eResult struct {
	written       float64
	p50, p99, max time.Duration
	n             int
	dead          int64 // the outbox's dead tuples at the end
}

// e2eOpts is one run: rate events/s from writers writers for measure, or,
// with a snapshot held, for hold, of which the last measure is timed.
type e2eOpts struct {
	rate, writers int
	measure, hold time.Duration
}

// timedStore records when each event (key, version) is applied, from
// from on.
type timedStore struct {
	*consumer.Memory[customers.Customer]
	from    time.Time
	mu      sync.Mutex
	applied map[string]time.Time
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
		s.applied[c.Key+"@"+strconv.FormatInt(c.State.Version, 10)] = now
	}
	s.mu.Unlock()
	return nil
}

func e2eRun(ctx context.Context, parts *benchParts, fakeReg *srfake.Registry, o e2eOpts) (e2eResult, error) {
	pool, kopts, rate, writers := parts.pool, parts.kopts, o.rate, o.writers
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	topic := "bench-e2e-" + suffix
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return e2eResult{}, err
	}
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, 6, -1, nil, topic)
	cl.Close()
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return e2eResult{}, err
	}
	reg, err := schemas.NewRegistry(config.Registry{URL: config.SecretURL(fakeReg.URL())})
	if err != nil {
		return e2eResult{}, err
	}
	defer reg.Close()
	pub, err := producer.New(producer.Config{Service: "bench", Registry: reg, AutoRegister: true,
		Entities: map[string]*config.Entity{"customer": {Name: "customer", Topic: topic, SchemaText: customers.Schema}}})
	if err != nil {
		return e2eResult{}, err
	}
	if err := pub.Resolve(ctx); err != nil {
		return e2eResult{}, err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	relay, err := relay.New(relay.Config{Pool: pool, KafkaOpts: kopts, Service: "bench-" + suffix, Topics: []string{topic}, PollMin: time.Millisecond, PollMax: 50 * time.Millisecond})
	if err != nil {
		return e2eResult{}, err
	}
	run := max(o.measure, o.hold)
	start := time.Now()
	measureFrom := start.Add(run - o.measure)
	store := &timedStore{Memory: consumer.NewMemory[customers.Customer](), applied: map[string]time.Time{}, from: measureFrom}
	cons, err := consumer.New(consumer.Config[customers.Customer]{Name: "bench", Topic: topic, KafkaOpts: kopts, Registry: reg, ReaderSchema: customers.Schema, Store: store})
	if err != nil {
		return e2eResult{}, err
	}
	var bg sync.WaitGroup
	errs := make(chan error, 2)
	bg.Add(2)
	go func() { defer bg.Done(); errs <- relay.Run(runCtx) }()
	go func() { defer bg.Done(); errs <- cons.Run(runCtx) }()
	if err := cons.WaitReady(ctx); err != nil {
		return e2eResult{}, err
	}

	if o.hold > 0 {
		release, err := holdSnapshot(ctx, parts.dbURL)
		if err != nil {
			return e2eResult{}, err
		}
		defer release()
	}
	var mu sync.Mutex
	committed := map[string]time.Time{}
	var written atomic.Int64
	per := time.Duration(float64(time.Second) * float64(writers) / float64(rate))
	deadline := start.Add(run)
	var wg sync.WaitGroup
	var werr atomic.Pointer[error]
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(per)
			defer t.Stop()
			tier := "gold"
			for i := int64(1); time.Now().Before(deadline); i++ {
				<-t.C
				key := "w" + strconv.Itoa(w) + "-" + strconv.FormatInt(i%500, 10)
				c := customers.Customer{ID: key, Version: i, Name: "n", Email: "e", Tier: &tier, UpdatedAt: time.Now()}
				err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return pub.Publish(ctx, tx, "customer", key, i, &c) })
				if err != nil {
					werr.CompareAndSwap(nil, &err)
					return
				}
				written.Add(1)
				if at := time.Now(); !at.Before(measureFrom) {
					mu.Lock()
					committed[key+"@"+strconv.FormatInt(i, 10)] = at
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if p := werr.Load(); p != nil {
		return e2eResult{}, *p
	}
	var dead int64
	if err := pool.QueryRow(ctx, `SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables WHERE schemaname = 'ecst' AND relname LIKE 'outbox%'`).Scan(&dead); err != nil {
		return e2eResult{}, fmt.Errorf("read the outbox's dead tuples: %w", err)
	}
	// Wait for the model to apply everything written.
	last := time.Now().Add(30 * time.Second)
	for {
		store.mu.Lock()
		done := true
		for k := range committed {
			if _, ok := store.applied[k]; !ok {
				done = false
				break
			}
		}
		store.mu.Unlock()
		if done || time.Now().After(last) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	bg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return e2eResult{}, err
		}
	}
	var lat []time.Duration
	store.mu.Lock()
	for k, at := range committed {
		if ap, ok := store.applied[k]; ok {
			lat = append(lat, max(ap.Sub(at), 0))
		}
	}
	store.mu.Unlock()
	if len(lat) != len(committed) {
		return e2eResult{}, fmt.Errorf("%d of %d events never reached the model", len(committed)-len(lat), len(committed))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) time.Duration { return lat[min(int(p*float64(len(lat))), len(lat)-1)] }
	return e2eResult{written: float64(written.Load()) / run.Seconds(), p50: q(0.5), p99: q(0.99), max: lat[len(lat)-1], n: len(lat), dead: dead}, nil
}

// holdSnapshot opens a REPEATABLE READ transaction on a connection of its
// own and takes its snapshot with a read of a catalog table, not the outbox;
// release rolls it back.
func holdSnapshot(ctx context.Context, dbURL string) (release func(), err error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return nil, fmt.Errorf("--hold-snapshot: connect: %w", err)
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err == nil {
		_, err = tx.Exec(ctx, "SELECT count(*) FROM pg_class")
	}
	if err != nil {
		conn.Close(ctx)
		return nil, fmt.Errorf("--hold-snapshot: take the snapshot: %w", err)
	}
	return func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = tx.Rollback(cctx)
		conn.Close(cctx)
	}, nil
}
