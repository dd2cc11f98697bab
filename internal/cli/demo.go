package cli

import (
	"io"

	"github.com/spf13/cobra"

	"github.com/ecst-io/ecst/internal/demo"
	"github.com/ecst-io/ecst/verify"
)

func newDemoCmd(_ *app) *cobra.Command {
	return &cobra.Command{
		Use:   "demo",
		Short: "Tell the ecst story, narrated, on the embedded stack: write, relay, consume, break, verify, repair",
		Long: `Starts the embedded stack (what 'ecst dev' runs: PostgreSQL, an in-process Kafka
broker and Schema Registry) and tells the whole story in about a minute or less:

  the write path   migrations; the customers service writing its rows and their
                   full-state events in one transaction; a rolled-back transaction
                   leaving no event; an invalid state refused; an update and a
                   deletion (tombstone)
  the read side    the relay publishing to the compacted topic; two consumers
                   replaying it from offset 0, into a Postgres table and into memory
  recovery         a read model corrupted by hand (UPDATE and DELETE), a source row
                   hot-fixed with no event, a consumer losing its state; 'ecst verify'
                   naming exactly that drift, and the repair it suggests
                   republishing exactly those keys, then finding none

Everything it starts is stopped and removed at the end. Needs the PostgreSQL
server binaries (make setup installs them). Exits 0 only if the story converged.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The demo's stack is its own, not the one --config names:
			// its suggestions carry no global flags.
			plain := &app{}
			return demo.Run(cmd.Context(), cmd.OutOrStdout(), func(w io.Writer, r *verify.Report) { printReport(w, r, plain.repairHint) })
		},
	}
}
