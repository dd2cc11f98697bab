package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ecst-io/ecst/internal/devstack"
)

func newDevCmd(a *app) *cobra.Command {
	var (
		opts devstack.Options
		env  bool
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run Kafka, a Schema Registry and PostgreSQL locally, in one process",
		Long: `Starts the whole stack ecst needs, on 127.0.0.1, and keeps it running in the
foreground until Ctrl-C (SIGINT) or SIGTERM, when it stops everything it
started:

  Kafka            kfake, an in-process broker (Kafka protocol, transactions,
                   consumer groups); topics are not auto-created: use
                   'ecst topics apply'
  Schema Registry  srfake, a Confluent-compatible registry over HTTP
  PostgreSQL       a cluster of its own, from the server binaries on this
                   machine ('make setup' installs them)

Without --data-dir everything is temporary and removed on exit. With
--data-dir DIR, the stack keeps its state there: started again on the same
directory it has its topics, records, committed offsets, schemas (under the
same ids, so old records still decode) and database rows. Only one 'ecst dev'
can use a directory at a time. Ports default to free ones; give them to keep
the same connection settings across restarts.

Once everything accepts connections it prints the settings. With --env it
prints only these lines on standard output, logs go to standard error:

  ECST_DATABASE_URL=...
  ECST_BROKERS=...
  ECST_SCHEMA_REGISTRY_URL=...

Since the command stays in the foreground, eval "$(ecst dev --env)" would
never return. Run it in the background and read the lines once written:

  ecst dev --env --data-dir .ecst-dev > dev.env &
  until [ "$(wc -l < dev.env)" -ge 3 ]; do sleep 0.2; done
  set -a; . ./dev.env; set +a
  ecst migrate && ecst topics apply && ecst schema register
  ...
  kill %1          # stops the stack and cleans up`,
		Example: `  ecst dev
  ecst dev --data-dir .ecst-dev --kafka-port 9092 --registry-port 8081 --postgres-port 5433
  ecst dev --env > dev.env &`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			opts.Logger = a.logger()
			st, err := devstack.Start(ctx, opts)
			if err != nil {
				var pe *devstack.PortInUseError
				if errors.As(err, &pe) {
					return fmt.Errorf("--%s-port: %w: choose another port, or 0 for a free one", pe.Service, err)
				}
				return err
			}
			out := cmd.OutOrStdout()
			if env {
				for _, kv := range st.Env() {
					fmt.Fprintf(out, "%s=%s\n", kv[0], shellQuote(kv[1]))
				}
			} else {
				printDevSettings(out, st)
			}
			<-ctx.Done()
			opts.Logger.Info("stopping the dev stack")
			if err := st.Close(); err != nil {
				return err
			}
			opts.Logger.Info("dev stack stopped")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.DataDir, "data-dir", "", "keep the stack's state in this directory across restarts (default: temporary)")
	f.IntVar(&opts.KafkaPort, "kafka-port", 0, "Kafka broker port (0: a free one)")
	f.IntVar(&opts.RegistryPort, "registry-port", 0, "Schema Registry port (0: a free one)")
	f.IntVar(&opts.PostgresPort, "postgres-port", 0, "PostgreSQL port (0: a free one)")
	f.BoolVar(&env, "env", false, "print only the ECST_* settings, as shell assignments, once ready")
	return cmd
}

func printDevSettings(w io.Writer, st *devstack.Stack) {
	fmt.Fprintf(w, "The dev stack is up.\n\n")
	fmt.Fprintf(w, "  Kafka            %s  (kfake, in-process)\n", strings.Join(st.Brokers, ","))
	fmt.Fprintf(w, "  Schema Registry  %s  (srfake)\n", st.RegistryURL)
	fmt.Fprintf(w, "  PostgreSQL       %s  (server pid %d)\n", st.DatabaseURL, st.Postgres.PID())
	if st.DataDir() != "" {
		fmt.Fprintf(w, "  Data             %s (kept: start again with --data-dir to continue)\n", st.DataDir())
	} else {
		fmt.Fprintf(w, "  Data             temporary, removed on exit (--data-dir keeps it)\n")
	}
	fmt.Fprintf(w, "\nIn another shell:\n\n")
	for _, kv := range st.Env() {
		fmt.Fprintf(w, "  export %s=%s\n", kv[0], shellQuote(kv[1]))
	}
	fmt.Fprintf(w, "\nthen, next to your ecst.yaml:\n\n  ecst migrate && ecst topics apply && ecst schema register\n")
	fmt.Fprintf(w, "\nCtrl-C stops everything.\n")
}

// shellQuote leaves a value alone when no POSIX shell would change it, and
// single-quotes it otherwise ('?' in a URL is a glob character to dash's
// export).
func shellQuote(s string) string {
	safe := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("@%+=:,./_-", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
