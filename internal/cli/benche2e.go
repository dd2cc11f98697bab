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
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/relay"
)

func newBenchE2ECmd(a *app) *cobra.Command {
	var o benchE2EOptions
	cmd := benchCommand("e2e", "Commit-to-read-model latency with the relay and a consumer running, at given write rates",
		`Runs the whole path in one process on a throwaway durable PostgreSQL and the broker
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
		func(ctx context.Context, out io.Writer) error { return a.benchE2E(ctx, out, o) })
	cmd.Flags().StringVar(&o.rates, "rates", "2000,10000", "comma-separated write rates, events/s")
	cmd.Flags().DurationVar(&o.warmup, "warmup", 2*time.Second, "an uncounted run first, at 1000 events/s (0 skips it)")
	cmd.Flags().DurationVar(&o.duration, "duration", 10*time.Second, "how long each rate runs")
	cmd.Flags().IntVar(&o.writers, "writers", 16, "concurrent writers")
	cmd.Flags().DurationVar(&o.hold, "hold-snapshot", 0, "hold a REPEATABLE READ snapshot open for this long from the start of each run (the run lasts as long)")
	cmd.Flags().StringVar(&o.transport, "transport", "table", "the outbox transport measured: table or wal")
	return cmd
}

// benchE2EOptions are what `ecst bench e2e` is asked to measure.
type benchE2EOptions struct {
	rates                  string // --rates as given
	warmup, duration, hold time.Duration
	writers                int
	transport              string
}

// check validates the options before anything starts.
func (o benchE2EOptions) check() error {
	switch o.transport {
	case "table", "wal":
	default:
		return fmt.Errorf("--transport %q: use table or wal", o.transport)
	}
	if o.hold < 0 || (o.hold > 0 && o.hold < o.duration) {
		return fmt.Errorf("--hold-snapshot %s: hold the snapshot at least as long as --duration (%s)", o.hold, o.duration)
	}
	return nil
}

// benchE2E runs the whole path at each rate, printing each rate's
// latencies as they are measured.
func (a *app) benchE2E(ctx context.Context, out io.Writer, o benchE2EOptions) error {
	if err := o.check(); err != nil {
		return err
	}
	parts, err := a.benchParts(ctx, out, o.writers+8)
	if err != nil {
		return err
	}
	defer parts.close()
	kopts, pool := parts.broker.Opts, parts.db.Pool
	transport := outbox.Transport(o.transport)
	if transport == outbox.TransportWAL {
		// As `ecst outbox switch wal` does: the slot, then the WAL opened.
		if _, err := relay.Switch(ctx, pool, transport, relay.SwitchOptions{Service: bench.WALService}); err != nil {
			return fmt.Errorf("switch the bench's database to the WAL transport: %w", err)
		}
	}
	registry := bench.StartRegistry()
	defer registry.Close()
	fmt.Fprintf(out, "commit -> read model applied, %s, durable PostgreSQL, %d writers, %s transport, 2 cores\n", parts.broker.Name, o.writers, o.transport)
	if o.hold > 0 {
		fmt.Fprintf(out, "a REPEATABLE READ snapshot held for %s from the start of each run; latencies of its last %s\n", o.hold, o.duration)
	}
	fmt.Fprintln(out)
	if o.warmup > 0 {
		// A fresh broker's first transactions (coordinator and
		// partition set-up) take hundreds of ms: not what is measured.
		if _, err := bench.E2E(ctx, pool, kopts, registry, bench.E2ERun{Rate: 1000, Writers: o.writers, Measure: o.warmup, Transport: transport}); err != nil {
			return err
		}
		fmt.Fprintf(out, "(warm-up: %s at 1000/s, not counted)\n", o.warmup)
	}
	fmt.Fprintf(out, "%10s %10s %8s %8s %8s %8s %12s\n", "offered/s", "written/s", "p50 ms", "p99 ms", "max ms", "events", "dead tuples")
	for _, r := range strings.Split(o.rates, ",") {
		rate, err := strconv.Atoi(strings.TrimSpace(r))
		if err != nil {
			return fmt.Errorf("--rates: %q is not a number", r)
		}
		res, err := bench.E2E(ctx, pool, kopts, registry, bench.E2ERun{Rate: rate, Writers: o.writers, Measure: o.duration, Hold: o.hold, DBURL: parts.db.URL, Transport: transport})
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%10d %10.0f %8.1f %8.1f %8.1f %8d %12d\n", rate, res.Written, ms(res.P50), ms(res.P99), ms(res.Max), res.N, res.Dead)
	}
	return nil
}
