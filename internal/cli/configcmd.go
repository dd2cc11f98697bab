package cli

import (
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

func newConfigCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Inspect the effective configuration",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "show",
		Short: "Validate ecst.yaml with env and flag overrides applied, and print the result",
		Long: `Loads ecst.yaml, applies ECST_* variables and flags, validates everything
(schema files, topics, source queries, TLS and SASL settings) and prints the
effective configuration as YAML. Credentials are shown as [REDACTED] and
passwords inside URLs as xxxxx. Exits 2 with every problem listed when the
configuration is invalid.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			enc := yaml.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent(2)
			if err := enc.Encode(cfg); err != nil {
				return err
			}
			return enc.Close()
		},
	})
	return cmd
}
