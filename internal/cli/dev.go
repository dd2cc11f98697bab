package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ecst-io/ecst/internal/devstack"
)

func newDevCmd(a *app) *cobra.Command {
	var (
		opts      devstack.Options
		env       bool
		readyFile string
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

Scripts use --ready-file PATH: once everything is ready the same lines appear
in PATH at once, whole (written to a temporary file, then renamed), and PATH
is removed when ecst dev exits. If the stack fails to start, ecst dev exits 2
at once and never writes PATH, so wait for the file or for the process to end:

  rm -f dev.env
  ecst dev --data-dir .ecst-dev --ready-file dev.env &
  pid=$!
  while [ ! -s dev.env ]; do kill -0 $pid 2>/dev/null || exit 1; sleep 0.1; done
  set -a; . ./dev.env; set +a
  ecst migrate && ecst topics apply && ecst schema register
  ...
  kill $pid        # SIGTERM: stops the stack and cleans up, exit 0`,
		Example: `  ecst dev
  ecst dev --data-dir .ecst-dev --kafka-port 9092 --registry-port 8081 --postgres-port 5433
  ecst dev --ready-file dev.env &`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			log := a.logger()
			opts.Logger = log
			if readyFile != "" {
				// Fail before the slow start, not after it.
				if fi, err := os.Stat(filepath.Dir(readyFile)); err != nil || !fi.IsDir() {
					return fmt.Errorf("--ready-file %s: its directory %s does not exist: create it or choose another path", readyFile, filepath.Dir(readyFile))
				}
			}
			st, err := devstack.Start(ctx, opts)
			if err != nil {
				var pe *devstack.PortInUseError
				if errors.As(err, &pe) {
					return fmt.Errorf("--%s-port: %w: choose another port, or 0 for a free one", pe.Service, err)
				}
				return err
			}
			out := cmd.OutOrStdout()
			switch {
			case env:
				fmt.Fprint(out, envLines(st))
			case readyFile == "":
				printDevSettings(out, st)
			}
			if readyFile != "" {
				if err := writeReadyFile(readyFile, envLines(st)); err != nil {
					_ = st.Close()
					return fmt.Errorf("--ready-file: %w", err)
				}
			}
			<-ctx.Done()
			log.Info("stopping the dev stack")
			if readyFile != "" {
				// First, so that nothing reads settings of a stack that is going.
				if err := os.Remove(readyFile); err != nil && !errors.Is(err, os.ErrNotExist) {
					log.Warn("could not remove the ready file", "path", readyFile, "err", err)
				}
			}
			if err := st.Close(); err != nil {
				return err
			}
			log.Info("dev stack stopped")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.DataDir, "data-dir", "", "keep the stack's state in this directory across restarts (default: temporary)")
	f.IntVar(&opts.KafkaPort, "kafka-port", 0, "Kafka broker port (0: a free one)")
	f.IntVar(&opts.RegistryPort, "registry-port", 0, "Schema Registry port (0: a free one)")
	f.IntVar(&opts.PostgresPort, "postgres-port", 0, "PostgreSQL port (0: a free one)")
	f.BoolVar(&env, "env", false, "print only the ECST_* settings, as shell assignments, once ready")
	f.StringVar(&readyFile, "ready-file", "", "once ready, write the ECST_* settings to this file (whole, at once) instead of printing them; removed on exit")
	return cmd
}

// envLines are the stack's settings as shell assignments, one a line.
func envLines(st *devstack.Stack) string {
	var b strings.Builder
	for _, kv := range st.Env() {
		fmt.Fprintf(&b, "%s=%s\n", kv[0], shellQuote(kv[1]))
	}
	return b.String()
}

// writeReadyFile writes content to a temporary file next to path and
// renames it into place: a script that sees path sees all of it.
func writeReadyFile(path, content string) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("create a temporary file next to %s: %w", path, err)
	}
	_, err = f.WriteString(content)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
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
