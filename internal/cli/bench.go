package cli

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ecst-io/ecst/internal/bench"
)

func newBenchCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Benchmarks, with peers measured in the same run (docs/benchmarks.md)"}
	var o benchRelayOptions
	relay := benchCommand("relay", "Relay throughput against the raw ceiling, steady-state latency, memory",
		`Measures the relay on a throwaway durable PostgreSQL cluster (started for the
run) and the broker named by ECST_BROKERS, or an in-process kfake broker when
it is unset:

  drain     --rows outbox rows of --value-size bytes, drained by the raw ceiling
            (a minimal read-produce loop: no transactions, headers, leader
            election or metrics) and by ecst's relay, alternately, --rounds times;
            reported as rows/s and as the ratio ecst/ceiling
  steady    --rate rows/s written by 8 writers for --steady with the relay
            running: commit-to-ack latency p50 and p99
  memory    peak RSS of an 'ecst relay --drain' process on --rss-rows rows

Figures are for comparing with each other; machines differ and are noisy.`,
		func(ctx context.Context, out io.Writer) error { return a.benchRelay(ctx, out, o) })
	f := relay.Flags()
	f.IntVar(&o.rows, "rows", 200_000, "backlog rows per drain")
	f.IntVar(&o.valueSize, "value-size", 300, "value bytes per row")
	f.IntVar(&o.rounds, "rounds", 2, "drain rounds (ceiling and ecst alternate)")
	f.IntVar(&o.batch, "batch", 2000, "rows per batch, for both")
	f.IntVar(&o.rate, "rate", 5000, "rows/s written in the steady-state run")
	f.DurationVar(&o.steady, "steady", 10*time.Second, "steady-state run length (0 skips it)")
	f.IntVar(&o.rssRows, "rss-rows", 1_000_000, "backlog for the memory run (0 skips it)")
	cmd.AddCommand(relay, newBenchConsumerCmd(a), newBenchE2ECmd(a), newBenchRecoveryCmd(a))
	return cmd
}

// benchRelayOptions are what `ecst bench relay` is asked to measure.
type benchRelayOptions struct {
	rows, valueSize, rounds, batch, rate, rssRows int
	steady                                        time.Duration
}

// benchRelay drains the outbox with the raw ceiling and with ecst's relay
// in alternate rounds, then measures steady-state latency and the relay's
// memory, printing each as it is measured.
func (a *app) benchRelay(ctx context.Context, out io.Writer, o benchRelayOptions) error {
	parts, err := a.benchParts(ctx, out, 0)
	if err != nil {
		return err
	}
	defer parts.close()
	suffix := fmt.Sprint(time.Now().UnixNano())
	ob := &bench.Outbox{Pool: parts.db.Pool, KafkaOpts: parts.broker.Opts, Topic: "bench-relay-" + suffix, Service: "bench-" + suffix, Log: a.logger()}
	if err := ob.CreateTopic(ctx, 6); err != nil {
		return fmt.Errorf("create topic: %w", err)
	}
	fmt.Fprintf(out, "relay drain: %d rows of %d B, batch %d, %s, 2 cores\n\n", o.rows, o.valueSize, o.batch, parts.broker.Name)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "round\tceiling rows/s\tecst rows/s\tecst/ceiling\t")
	var sumRatio float64
	for i := range o.rounds {
		ceil, ecst, err := ob.Round(ctx, o.rows, o.valueSize, o.batch)
		if err != nil {
			return err
		}
		sumRatio += ecst / ceil
		fmt.Fprintf(tw, "%d\t%.0f\t%.0f\t%.2f\t\n", i+1, ceil, ecst, ecst/ceil)
	}
	tw.Flush()
	fmt.Fprintf(out, "mean ecst/ceiling: %.2f\n\n", sumRatio/float64(o.rounds))
	if o.steady > 0 {
		lat, err := ob.Steady(ctx, o.rate, o.steady, o.valueSize)
		if err != nil {
			return fmt.Errorf("steady state: %w", err)
		}
		fmt.Fprintf(out, "steady state: %d rows/s offered, %.0f written; commit-to-ack p50 %.1f ms, p99 %.1f ms\n\n",
			lat.Rate, lat.Achieved, ms(lat.P50), ms(lat.P99))
	}
	if o.rssRows > 0 {
		if err := ob.Fill(ctx, o.rssRows, o.valueSize); err != nil {
			return err
		}
		rss, took, err := bench.RelayRSS(ctx, parts.db.URL, parts.broker.Seeds, ob.Service, out)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "memory: 'ecst relay --drain' on %d rows: peak RSS %.0f MB, %.0f rows/s\n", o.rssRows, rss, float64(o.rssRows)/took.Seconds())
	}
	return nil
}

// ms is d in milliseconds, to the microsecond.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// benchParts are what a bench command runs against: the configured broker
// (or an in-process kfake) and a throwaway durable PostgreSQL.
type benchParts struct {
	broker *bench.Broker
	db     *bench.Database
}

func (p *benchParts) close() {
	p.db.Close()
	p.broker.Close()
}

// benchParts starts the parts; a pool of maxConns connections (0: pgx's
// default).
func (a *app) benchParts(ctx context.Context, out io.Writer, maxConns int) (*benchParts, error) {
	broker, err := a.benchBroker()
	if err != nil {
		return nil, err
	}
	fmt.Fprintln(out, "starting a throwaway PostgreSQL (fsync on)...")
	db, err := bench.StartDatabase(ctx, maxConns)
	if err != nil {
		broker.Close()
		return nil, err
	}
	return &benchParts{broker: broker, db: db}, nil
}

// benchBroker is the configured broker, or an in-process kfake when none
// is configured.
func (a *app) benchBroker() (*bench.Broker, error) {
	cfg, err := a.loadConfig()
	if err != nil {
		return nil, err
	}
	return bench.StartBroker(cfg.Kafka)
}

// benchCommand is a bench subcommand: it takes no arguments and prints its
// figures on stdout as it measures them.
func benchCommand(use, short, long string, run func(ctx context.Context, out io.Writer) error) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), cmd.OutOrStdout())
		},
	}
}
