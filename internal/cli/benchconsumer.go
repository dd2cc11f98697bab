package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/consumer"
	"github.com/ecst-io/ecst/examples/customers"
	"github.com/ecst-io/ecst/schemas"
)

func newBenchConsumerCmd(a *app) *cobra.Command {
	var entities, valueSize int
	cmd := &cobra.Command{
		Use:   "consumer",
		Short: "Rebuild speed of the read-model stores against raw consumption of the same topic",
		Long: `Writes --entities customer states (Avro values of about --value-size bytes) to a
topic on the broker named by ECST_BROKERS (or an in-process kfake), then reads
the whole topic three ways in one run: raw consumption (records counted, not
decoded), a Memory model, and a Postgres mirror (a throwaway durable cluster),
and prints entities/s and each as a ratio of raw.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			out := cmd.OutOrStdout()
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			kopts, broker, stopBroker, err := benchBroker(cfg)
			if err != nil {
				return err
			}
			defer stopBroker()
			fakeReg := srfake.New()
			defer fakeReg.Close()
			topic := fmt.Sprintf("bench-consumer-%d", time.Now().UnixNano())
			id, _, err := fakeReg.RegisterSchema(topic+"-value", srSchema(customers.Schema))
			if err != nil {
				return err
			}
			reg, err := schemas.NewRegistry(config.Registry{URL: config.SecretURL(fakeReg.URL())})
			if err != nil {
				return err
			}
			defer reg.Close()
			fmt.Fprintf(out, "writing %d entities to %s...\n", entities, broker)
			if err := benchFill(ctx, kopts, topic, id, entities, valueSize); err != nil {
				return err
			}
			raw, err := benchRaw(ctx, kopts, topic, entities)
			if err != nil {
				return err
			}
			rawRate := float64(entities) / raw.Seconds()
			fmt.Fprintf(out, "raw consumption:  %8.0f entities/s\n", rawRate)

			mem := consumer.NewMemory[customers.Customer]()
			memCons, err := consumer.New(consumer.Config[customers.Customer]{Name: "bench-memory", Topic: topic, KafkaOpts: kopts, Registry: reg, Store: mem, MaxBatch: 10_000, ReaderSchema: customers.Schema})
			if err != nil {
				return err
			}
			memStart := time.Now()
			if err := memCons.CatchUp(ctx); err != nil {
				return err
			}
			memTook := time.Since(memStart)
			if mem.Len() != entities {
				return fmt.Errorf("memory model holds %d entities, want %d", mem.Len(), entities)
			}
			memRate := float64(entities) / memTook.Seconds()
			fmt.Fprintf(out, "memory model (generated type): %8.0f entities/s  (%.2f x raw)\n", memRate, memRate/rawRate)

			_, pool, stopDB, err := benchDatabase(ctx, 0)
			if err != nil {
				return err
			}
			defer stopDB()
			s, _ := schemas.Parse(customers.Schema)
			mirror, _ := consumer.NewMirror(s)
			if _, err := pool.Exec(ctx, mirror.CreateTable("bench_mirror")); err != nil {
				return err
			}
			pg := &consumer.Postgres[map[string]any]{Pool: pool, Table: "bench_mirror", Projection: mirror}
			pgTook, err := benchCatchUp(ctx, consumer.Config[map[string]any]{Name: "bench-pg", Topic: topic, KafkaOpts: kopts, Registry: reg, Store: pg, MaxBatch: 10_000})
			if err != nil {
				return err
			}
			var n int
			if err := pool.QueryRow(ctx, "SELECT count(*) FROM bench_mirror").Scan(&n); err != nil || n != entities {
				return fmt.Errorf("postgres mirror holds %d rows (%v), want %d", n, err, entities)
			}
			pgRate := float64(entities) / pgTook.Seconds()
			fmt.Fprintf(out, "postgres mirror:  %8.0f entities/s  (%.2f x raw)\n", pgRate, pgRate/rawRate)
			return nil
		},
	}
	cmd.Flags().IntVar(&entities, "entities", 1_000_000, "entities on the topic (one record each)")
	cmd.Flags().IntVar(&valueSize, "value-size", 300, "approximate Avro value size in bytes")
	return cmd
}

func benchFill(ctx context.Context, kopts []kgo.Opt, topic string, id, n, valueSize int) error {
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

func benchRaw(ctx context.Context, kopts []kgo.Opt, topic string, n int) (time.Duration, error) {
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

func benchCatchUp(ctx context.Context, cfg consumer.Config[map[string]any]) (time.Duration, error) {
	c, err := consumer.New(cfg)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if err := c.CatchUp(ctx); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func srSchema(s string) sr.Schema { return sr.Schema{Schema: s} }
