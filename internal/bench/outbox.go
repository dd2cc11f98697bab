package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/relay"
)

// Outbox is where the relay benchmarks run: an outbox, drained into Topic.
type Outbox struct {
	Pool      *pgxpool.Pool
	KafkaOpts []kgo.Opt
	Topic     string
	Service   string
	Log       *slog.Logger
}

// CreateTopic creates the topic with the given partitions.
func (e *Outbox) CreateTopic(ctx context.Context, partitions int) error {
	cl, err := kgo.NewClient(e.KafkaOpts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, int32(partitions), -1, nil, e.Topic) //nolint:gosec // small
	if err == nil {
		err = resp.Err
	}
	return err
}

// Fill empties the outbox (every run before it drained it: nothing in it is
// pending) and writes rows outbox rows with valueSize-byte values and the
// five headers of the wire contract, with COPY (the fill is not what is
// measured). The ids go on from the last run's, past the relay's cursor.
func (e *Outbox) Fill(ctx context.Context, rows, valueSize int) error {
	if _, err := e.Pool.Exec(ctx, "TRUNCATE ecst.outbox"); err != nil {
		return fmt.Errorf("empty the outbox: %w", err)
	}
	value := make([]byte, valueSize)
	_, _ = rand.Read(value)
	headers := outbox.EncodeHeaders([]outbox.Header{
		{Key: "ecst-event-id", Value: []byte("0193a1c2-7f00-7000-8000-000000000000")},
		{Key: "ecst-entity-version", Value: []byte("12")},
		{Key: "ecst-event-type", Value: []byte("customer.upserted")},
		{Key: "ecst-occurred-at", Value: []byte("2026-11-24T10:00:00.123456Z")},
		{Key: "ecst-source", Value: []byte("bench")},
	})
	const chunk = 50_000
	for done := 0; done < rows; done += chunk {
		n := min(chunk, rows-done)
		src := pgx.CopyFromSlice(n, func(i int) ([]any, error) {
			return []any{int16(0), e.Topic, "customer-" + strconv.Itoa((done+i)%100_000), value, headers}, nil
		})
		if _, err := e.Pool.CopyFrom(ctx, pgx.Identifier{"ecst", "outbox"}, []string{"shard", "topic", "key", "value", "headers"}, src); err != nil {
			return fmt.Errorf("fill outbox: %w", err)
		}
	}
	_, err := e.Pool.Exec(ctx, "VACUUM ANALYZE ecst.outbox")
	return err
}

// Ceiling drains the outbox with the least a relay can do: read a batch in
// id order past the last one, produce it (idempotent, no transaction, no
// headers), wait for the acks. No leader election, fencing, watched
// transactions, encoding, cursor saving or metrics.
func (e *Outbox) Ceiling(ctx context.Context, batch int) (int, time.Duration, error) {
	cl, err := kgo.NewClient(append(e.KafkaOpts, kgo.MaxBufferedRecords(batch*2))...)
	if err != nil {
		return 0, 0, err
	}
	defer cl.Close()
	start := time.Now()
	total := 0
	var last int64
	for {
		rows, err := e.Pool.Query(ctx, "SELECT id, key, value FROM ecst.outbox WHERE shard = 0 AND id > $2 ORDER BY id LIMIT $1", batch, last)
		if err != nil {
			return total, 0, err
		}
		var ids []int64
		var id int64
		var key string
		var value []byte
		var wg sync.WaitGroup
		var failed atomic.Pointer[error]
		_, err = pgx.ForEachRow(rows, []any{&id, &key, &value}, func() error {
			ids = append(ids, id)
			wg.Add(1)
			cl.Produce(ctx, &kgo.Record{Topic: e.Topic, Key: []byte(key), Value: value}, func(_ *kgo.Record, err error) {
				if err != nil {
					failed.CompareAndSwap(nil, &err)
				}
				wg.Done()
			})
			return nil
		})
		if err != nil {
			return total, 0, err
		}
		wg.Wait()
		if p := failed.Load(); p != nil {
			return total, 0, *p
		}
		if len(ids) == 0 {
			return total, time.Since(start), nil
		}
		last = ids[len(ids)-1]
		total += len(ids)
	}
}

// Relay drains the outbox with ecst's relay.
func (e *Outbox) Relay(ctx context.Context, batch int) (int, time.Duration, error) {
	before, err := outbox.PendingCount(ctx, e.Pool, 0)
	if err != nil {
		return 0, 0, err
	}
	r, err := relay.New(relay.Config{
		Pool: e.Pool, KafkaOpts: e.KafkaOpts, Service: e.Service, Topics: []string{e.Topic},
		BatchSize: batch, Drain: true, Logger: e.Log,
	})
	if err != nil {
		return 0, 0, err
	}
	took, err := timed(func() error { return r.Run(ctx) })
	if err != nil {
		return 0, 0, err
	}
	return int(before), took, nil
}

// Round fills the outbox with rows rows of valueSize bytes and drains them
// with the raw ceiling, then again with ecst's relay, both in batches of
// batch rows; it returns both rates, in rows/s.
func (e *Outbox) Round(ctx context.Context, rows, valueSize, batch int) (ceiling, ecst float64, err error) {
	if err := e.Fill(ctx, rows, valueSize); err != nil {
		return 0, 0, err
	}
	n, took, err := e.Ceiling(ctx, batch)
	if err != nil {
		return 0, 0, fmt.Errorf("ceiling: %w", err)
	}
	ceiling = float64(n) / took.Seconds()
	if err := e.Fill(ctx, rows, valueSize); err != nil {
		return 0, 0, err
	}
	n, took, err = e.Relay(ctx, batch)
	if err != nil {
		return 0, 0, fmt.Errorf("ecst relay: %w", err)
	}
	return ceiling, float64(n) / took.Seconds(), nil
}

// RelayRSS runs this binary's relay, `ecst relay --drain`, as a child on
// the database at dbURL and the brokers seeds, with its standard error on
// log, and returns its peak resident set in MB and how long it took.
func RelayRSS(ctx context.Context, dbURL string, seeds []string, service string, log io.Writer) (float64, time.Duration, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, 0, err
	}
	dir, err := os.MkdirTemp("", "ecst-bench-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(dir)
	cfgPath := filepath.Join(dir, "ecst.yaml")
	if err := os.WriteFile(cfgPath, []byte("service: "+service+"\n"), 0o644); err != nil {
		return 0, 0, err
	}
	cmd := exec.CommandContext(ctx, self, "--config", cfgPath, "relay", "--drain")
	cmd.Env = append(os.Environ(), "ECST_DATABASE_URL="+dbURL, "ECST_BROKERS="+strings.Join(seeds, ","), "ECST_METRICS_ADDR=off")
	cmd.Stderr = log
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, 0, fmt.Errorf("relay --drain: %w", err)
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0, 0, fmt.Errorf("no rusage on this platform")
	}
	return float64(ru.Maxrss) / 1024, time.Since(start), nil
}

// Latency is a steady-state measurement.
type Latency struct {
	Rate     int // rows/s offered
	Achieved float64
	P50, P99 time.Duration
}

// Steady writes rate rows/s for d with the relay running, and reports the
// quantiles of ecst_relay_commit_to_ack_seconds: from each row's insert to
// the Kafka commit of its batch.
func (e *Outbox) Steady(ctx context.Context, rate int, d time.Duration, valueSize int) (Latency, error) {
	reg := prometheus.NewRegistry()
	r, err := relay.New(relay.Config{
		Pool: e.Pool, KafkaOpts: e.KafkaOpts, Service: e.Service, Topics: []string{e.Topic},
		Logger: e.Log, Metrics: relay.NewMetrics(reg),
	})
	if err != nil {
		return Latency{}, err
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()

	value := make([]byte, valueSize)
	_, _ = rand.Read(value)
	hs := []outbox.Header{{Key: "ecst-event-type", Value: []byte("customer.upserted")}}
	written, err := Pace(ctx, 8, rate, time.Now().Add(d), func(w, i int) error {
		key := "k-" + strconv.Itoa(w) + "-" + strconv.Itoa(i%1000)
		return pgx.BeginFunc(ctx, e.Pool, func(tx pgx.Tx) error {
			return outbox.Insert(ctx, tx, outbox.Row{Topic: e.Topic, Key: key, Value: value, Headers: hs})
		})
	})
	if err != nil {
		stop()
		<-done
		return Latency{}, err
	}
	// Let the relay finish what was written.
	for {
		if n, err := outbox.PendingCount(ctx, e.Pool, 0); err != nil || n == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		return Latency{}, err
	}
	mfs, err := reg.Gather()
	if err != nil {
		return Latency{}, err
	}
	for _, mf := range mfs {
		if mf.GetName() != "ecst_relay_commit_to_ack_seconds" {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		var bounds []float64
		var counts []uint64
		for _, b := range h.GetBucket() {
			bounds = append(bounds, b.GetUpperBound())
			counts = append(counts, b.GetCumulativeCount())
		}
		return Latency{
			Rate:     rate,
			Achieved: float64(written) / d.Seconds(),
			P50:      quantile(0.5, bounds, counts, h.GetSampleCount()),
			P99:      quantile(0.99, bounds, counts, h.GetSampleCount()),
		}, nil
	}
	return Latency{}, errors.New("no latency histogram")
}

// quantile interpolates linearly within the bucket, as PromQL's
// histogram_quantile does.
func quantile(q float64, bounds []float64, cum []uint64, total uint64) time.Duration {
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	i := sort.Search(len(cum), func(i int) bool { return float64(cum[i]) >= rank })
	if i >= len(bounds) {
		return time.Duration(bounds[len(bounds)-1] * float64(time.Second))
	}
	lo, prev := 0.0, 0.0
	if i > 0 {
		lo, prev = bounds[i-1], float64(cum[i-1])
	}
	hi := bounds[i]
	if math.IsInf(hi, 1) {
		return time.Duration(lo * float64(time.Second))
	}
	frac := (rank - prev) / (float64(cum[i]) - prev)
	return time.Duration((lo + (hi-lo)*frac) * float64(time.Second))
}
