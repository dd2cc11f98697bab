package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/consumer"
	"github.com/ecst-io/ecst/internal/customers"
	"github.com/ecst-io/ecst/schemas"
)

// FillTopic creates topic (6 partitions) and writes n customer states to
// it, one key each, as Avro values of about valueSize bytes under schema
// id.
func FillTopic(ctx context.Context, kopts []kgo.Opt, topic string, id, n, valueSize int) error {
	cl, err := kgo.NewClient(append(kopts, kgo.MaxBufferedRecords(50_000), kgo.ProducerLinger(5*time.Millisecond))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, 6, -1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return err
	}
	s, _ := schemas.Parse(customers.Schema)
	pad := make([]byte, max(valueSize-90, 1)/2)
	_, _ = rand.Read(pad)
	name := hex.EncodeToString(pad)
	var failed atomic.Pointer[error]
	for i := range n {
		key := "c" + strconv.Itoa(i)
		v, err := avro.Marshal(s, map[string]any{"id": key, "version": int64(1), "name": name, "email": key + "@example.com", "tier": nil, "updated_at": time.Now()})
		if err != nil {
			return err
		}
		cl.Produce(ctx, &kgo.Record{Topic: topic, Key: []byte(key), Value: append(schemas.AppendWire(nil, id), v...)}, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.CompareAndSwap(nil, &err)
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	if p := failed.Load(); p != nil {
		return *p
	}
	return nil
}

// Raw reads the first n records of topic, counted, not decoded, and says
// how long it took.
func Raw(ctx context.Context, kopts []kgo.Opt, topic string, n int) (time.Duration, error) {
	cl, err := kgo.NewClient(append(kopts, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	start := time.Now()
	seen := 0
	for seen < n {
		fs := cl.PollRecords(ctx, 10_000)
		if err := fs.Err0(); err != nil {
			return 0, err
		}
		seen += fs.NumRecords()
	}
	return time.Since(start), nil
}

// MemoryModel rebuilds a Memory model of the generated type from topic,
// checks that it holds the n entities, and says how long it took.
func MemoryModel(ctx context.Context, kopts []kgo.Opt, reg *schemas.Registry, topic string, n int) (time.Duration, error) {
	mem := consumer.NewMemory[customers.Customer]()
	took, err := catchUp(ctx, consumer.Config[customers.Customer]{Name: "bench-memory", Topic: topic, KafkaOpts: kopts, Registry: reg, Store: mem, MaxBatch: 10_000, ReaderSchema: customers.Schema})
	if err != nil {
		return 0, err
	}
	if mem.Len() != n {
		return 0, fmt.Errorf("memory model holds %d entities, want %d", mem.Len(), n)
	}
	return took, nil
}

// PostgresMirror rebuilds a Postgres mirror table from topic, checks that
// it holds the n entities, and says how long it took.
func PostgresMirror(ctx context.Context, pool *pgxpool.Pool, kopts []kgo.Opt, reg *schemas.Registry, topic string, n int) (time.Duration, error) {
	s, _ := schemas.Parse(customers.Schema)
	mirror, _ := consumer.NewMirror(s)
	if _, err := pool.Exec(ctx, mirror.CreateTable("bench_mirror")); err != nil {
		return 0, err
	}
	pg := &consumer.Postgres[map[string]any]{Pool: pool, Table: "bench_mirror", Projection: mirror}
	took, err := catchUp(ctx, consumer.Config[map[string]any]{Name: "bench-pg", Topic: topic, KafkaOpts: kopts, Registry: reg, Store: pg, MaxBatch: 10_000})
	if err != nil {
		return 0, err
	}
	var rows int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM bench_mirror").Scan(&rows); err != nil || rows != n {
		return 0, fmt.Errorf("postgres mirror holds %d rows (%v), want %d", rows, err, n)
	}
	return took, nil
}

// catchUp runs a consumer of cfg to the end of its topic, and says how long
// that took.
func catchUp[T any](ctx context.Context, cfg consumer.Config[T]) (time.Duration, error) {
	c, err := consumer.New(cfg)
	if err != nil {
		return 0, err
	}
	return timed(func() error { return c.CatchUp(ctx) })
}
