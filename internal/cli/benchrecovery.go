package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/ecst-io/ecst/internal/bench"
)

func newBenchRecoveryCmd(a *app) *cobra.Command {
	var o benchRecoveryOptions
	cmd := benchCommand("recovery", "Republish and verify of a large source table, against COPY and a raw topic scan",
		`Fills a customers table of --rows rows (values of about 300 bytes) on a throwaway
durable PostgreSQL cluster, then measures in one run:

  copy        the same rows COPYed into a plain table (no index): the baseline
  republish   'ecst republish --all' of every row into the outbox (--batch keys per
              transaction), as rows/s and as a ratio of the COPY
  verify      'ecst verify' of source ⇄ topic after the relay drained the outbox to
              the broker named by ECST_BROKERS (or an in-process kfake), against a raw
              scan of the same topic (records counted, not decoded)`,
		func(ctx context.Context, out io.Writer) error { return a.benchRecovery(ctx, out, o) })
	cmd.Flags().IntVar(&o.rows, "rows", 1_000_000, "source rows")
	cmd.Flags().IntVar(&o.batch, "batch", 500, "republish keys per transaction")
	return cmd
}

// benchRecoveryOptions are what `ecst bench recovery` is asked to measure.
type benchRecoveryOptions struct {
	rows, batch int
}

// benchRecovery measures each step against its baseline, printing each as
// it is measured: COPY then republish, relay, raw scan then verify.
func (a *app) benchRecovery(ctx context.Context, out io.Writer, o benchRecoveryOptions) error {
	parts, err := a.benchParts(ctx, out, 0)
	if err != nil {
		return err
	}
	defer parts.close()
	registry := bench.StartRegistry()
	defer registry.Close()
	r, err := bench.NewRecovery(parts.db.Pool, parts.broker.Opts, registry)
	if err != nil {
		return err
	}
	defer r.Close()

	fmt.Fprintf(out, "filling customers with %d rows...\n", o.rows)
	if err := r.Fill(ctx, o.rows); err != nil {
		return err
	}
	copyD, err := r.Copy(ctx)
	if err != nil {
		return err
	}
	copyRate := float64(o.rows) / copyD.Seconds()
	fmt.Fprintf(out, "copy       %9.0f rows/s  (%s)\n", copyRate, copyD.Round(time.Millisecond))

	res, repD, err := r.Republish(ctx, o.batch)
	if err != nil {
		return err
	}
	repRate := float64(res.Written) / repD.Seconds()
	fmt.Fprintf(out, "republish  %9.0f rows/s  (%s, %d rows, batch %d) = %.2f× copy\n", repRate, repD.Round(time.Millisecond), res.Written, o.batch, repRate/copyRate)

	fmt.Fprintf(out, "relaying %d rows to %s...\n", res.Written, parts.broker.Name)
	relayD, err := r.Relay(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "relay      %9.0f rows/s  (%s)\n", float64(res.Written)/relayD.Seconds(), relayD.Round(time.Millisecond))

	n, scanD, err := r.Scan(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "raw scan   %9.0f records/s  (%s, %d records)\n", float64(n)/scanD.Seconds(), scanD.Round(time.Millisecond), n)
	rep, verD, err := r.Verify(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "verify     %9.0f keys/s  (%s for %d keys; in sync: %v) = %.1f× the raw scan's time\n",
		float64(rep.SourceKeys)/verD.Seconds(), verD.Round(time.Millisecond), rep.SourceKeys, rep.InSync(), verD.Seconds()/scanD.Seconds())
	if !rep.InSync() {
		return problem("verify found drift in a quiet benchmark: %+v", rep)
	}
	return nil
}
