package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/ecst-io/ecst/internal/bench"
	"github.com/ecst-io/ecst/internal/customers"
)

func newBenchConsumerCmd(a *app) *cobra.Command {
	var o benchConsumerOptions
	cmd := benchCommand("consumer", "Rebuild speed of the read-model stores against raw consumption of the same topic",
		`Writes --entities customer states (Avro values of about --value-size bytes) to a
topic on the broker named by ECST_BROKERS (or an in-process kfake), then reads
the whole topic three ways in one run: raw consumption (records counted, not
decoded), a Memory model, and a Postgres mirror (a throwaway durable cluster),
and prints entities/s and each as a ratio of raw.`,
		func(ctx context.Context, out io.Writer) error { return a.benchConsumer(ctx, out, o) })
	cmd.Flags().IntVar(&o.entities, "entities", 1_000_000, "entities on the topic (one record each)")
	cmd.Flags().IntVar(&o.valueSize, "value-size", 300, "approximate Avro value size in bytes")
	return cmd
}

// benchConsumerOptions are what `ecst bench consumer` is asked to measure.
type benchConsumerOptions struct {
	entities, valueSize int
}

// benchConsumer fills a topic, then reads it raw, into a memory model and
// into a Postgres mirror, printing each rate as it is measured.
func (a *app) benchConsumer(ctx context.Context, out io.Writer, o benchConsumerOptions) error {
	broker, err := a.benchBroker()
	if err != nil {
		return err
	}
	defer broker.Close()
	registry := bench.StartRegistry()
	defer registry.Close()
	topic := fmt.Sprintf("bench-consumer-%d", time.Now().UnixNano())
	id, err := registry.Register(topic+"-value", customers.Schema)
	if err != nil {
		return err
	}
	reg, err := registry.Client()
	if err != nil {
		return err
	}
	defer reg.Close()
	fmt.Fprintf(out, "writing %d entities to %s...\n", o.entities, broker.Name)
	if err := bench.FillTopic(ctx, broker.Opts, topic, id, o.entities, o.valueSize); err != nil {
		return err
	}
	raw, err := bench.Raw(ctx, broker.Opts, topic, o.entities)
	if err != nil {
		return err
	}
	rawRate := float64(o.entities) / raw.Seconds()
	fmt.Fprintf(out, "raw consumption:  %8.0f entities/s\n", rawRate)

	took, err := bench.MemoryModel(ctx, broker.Opts, reg, topic, o.entities)
	if err != nil {
		return err
	}
	rate := float64(o.entities) / took.Seconds()
	fmt.Fprintf(out, "memory model (generated type): %8.0f entities/s  (%.2f x raw)\n", rate, rate/rawRate)

	db, err := bench.StartDatabase(ctx, 0)
	if err != nil {
		return err
	}
	defer db.Close()
	if took, err = bench.PostgresMirror(ctx, db.Pool, broker.Opts, reg, topic, o.entities); err != nil {
		return err
	}
	rate = float64(o.entities) / took.Seconds()
	fmt.Fprintf(out, "postgres mirror:  %8.0f entities/s  (%.2f x raw)\n", rate, rate/rawRate)
	return nil
}
