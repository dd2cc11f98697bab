package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ecst-io/ecst/internal/bench"
)

func newBenchE2ECmd(a *app) *cobra.Command {
	var o benchE2EOptions
	cmd := benchCommand("e2e", "Commit-to-read-model latency with the relay and a consumer running, at given write rates",
		`Runs the whole path in one process on a throwaway durable PostgreSQL and the broker
named by ECST_BROKERS (or an in-process kfake): writers commit business
transactions that each publish one customer's full state, at each --rates
value for --duration; the relay publishes them; a consumer applies them to a
memory model. Reports the latency from each transaction's commit to the moment
the model applied it: p50, p99 and max, exact (every event is timed).`,
		func(ctx context.Context, out io.Writer) error { return a.benchE2E(ctx, out, o) })
	cmd.Flags().StringVar(&o.rates, "rates", "2000,10000", "comma-separated write rates, events/s")
	cmd.Flags().DurationVar(&o.warmup, "warmup", 2*time.Second, "an uncounted run first, at 1000 events/s (0 skips it)")
	cmd.Flags().DurationVar(&o.duration, "duration", 10*time.Second, "how long each rate runs")
	cmd.Flags().IntVar(&o.writers, "writers", 16, "concurrent writers")
	return cmd
}

// benchE2EOptions are what `ecst bench e2e` is asked to measure.
type benchE2EOptions struct {
	rates            string // --rates as given
	warmup, duration time.Duration
	writers          int
}

// benchE2E runs the whole path at each rate, printing each rate's
// latencies as they are measured.
func (a *app) benchE2E(ctx context.Context, out io.Writer, o benchE2EOptions) error {
	parts, err := a.benchParts(ctx, out, o.writers+8)
	if err != nil {
		return err
	}
	defer parts.close()
	kopts, pool := parts.broker.Opts, parts.db.Pool
	registry := bench.StartRegistry()
	defer registry.Close()
	fmt.Fprintf(out, "commit -> read model applied, %s, durable PostgreSQL, %d writers, 2 cores\n\n", parts.broker.Name, o.writers)
	if o.warmup > 0 {
		// A fresh broker's first transactions (coordinator and
		// partition set-up) take hundreds of ms: not what is measured.
		if _, err := bench.E2E(ctx, pool, kopts, registry, 1000, o.writers, o.warmup); err != nil {
			return err
		}
		fmt.Fprintf(out, "(warm-up: %s at 1000/s, not counted)\n", o.warmup)
	}
	fmt.Fprintf(out, "%10s %10s %8s %8s %8s %8s\n", "offered/s", "written/s", "p50 ms", "p99 ms", "max ms", "events")
	for _, r := range strings.Split(o.rates, ",") {
		rate, err := strconv.Atoi(strings.TrimSpace(r))
		if err != nil {
			return fmt.Errorf("--rates: %q is not a number", r)
		}
		res, err := bench.E2E(ctx, pool, kopts, registry, rate, o.writers, o.duration)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%10d %10.0f %8.1f %8.1f %8.1f %8d\n", rate, res.Written, ms(res.P50), ms(res.P99), ms(res.Max), res.N)
	}
	return nil
}
