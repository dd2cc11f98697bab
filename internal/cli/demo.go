package cli

import (
	"github.com/spf13/cobra"

	"github.com/ecst-io/ecst/internal/demo"
)

func newDemoCmd(_ *app) *cobra.Command {
	return &cobra.Command{
		Use:   "demo",
		Short: "Tell the ecst story, narrated, on a throwaway local stack",
		Long: `Starts a throwaway PostgreSQL cluster and an in-process Schema Registry, then
walks through the write path step by step: migrations, the customers service
writing its rows and their full-state events in one transaction, a rolled-back
transaction leaving no event, an invalid state refused, an update and a
deletion (tombstone). Everything it starts is stopped and removed at the end.

Needs the PostgreSQL server binaries (make setup installs them). Exits 0 only
if every step did what it says.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return demo.Run(cmd.Context(), cmd.OutOrStdout())
		},
	}
}
