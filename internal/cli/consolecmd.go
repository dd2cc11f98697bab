package cli

import (
	"errors"
	"fmt"
	"net"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/internal/console"
	sysstatus "github.com/ecst-io/ecst/internal/status"
	"github.com/ecst-io/ecst/republish"
)

func newConsoleCmd(a *app) *cobra.Command {
	var (
		addr, tokenFile string
		o               sysstatus.Options
	)
	cmd := &cobra.Command{
		Use:   "console",
		Short: "Serve a web console: the status, drift and republish runs, with guarded actions",
		Long: `Serves a web page over the same snapshot 'ecst status' prints: entities and
their topics, outbox shards, read models with lag bars, what needs attention;
per entity the last verification's drift (sample keys, and field diffs side by
side: source against topic, topic against mirror); and the republish runs with
live progress. It is rendered on the server, embedded in the binary, and
readable on a phone.

Actions (verify now, republish keys or every key, resume a run) change the
system: each asks for confirmation and for the console's token, and is refused
(403) without it. The token comes from ECST_CONSOLE_TOKEN, or from the file
--token-file names (its first line); never from a flag's value, and it is
never logged. Without a token the console is read-only.

It also serves /healthz, /metrics (ecst_console_actions_total, the republish
runs' state) and /api/status (the snapshot as 'ecst status --json' prints it).
SIGINT or SIGTERM stop it gracefully: requests in flight finish, and an action
under way is cancelled (a republish run can be resumed from the page).`,
		Example: `  ECST_CONSOLE_TOKEN=$(openssl rand -hex 16) ecst console --addr 127.0.0.1:8080
  ecst console --addr :8080 --token-file /run/secrets/ecst-console-token`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			token := a.io.Env("ECST_CONSOLE_TOKEN")
			if tokenFile != "" {
				if token != "" {
					return errors.New("--token-file and ECST_CONSOLE_TOKEN both give a token: keep one")
				}
				if token, err = console.TokenFromFile(tokenFile); err != nil {
					return fmt.Errorf("--token-file: %w", err)
				}
			}
			ctx := cmd.Context()
			log := a.logger()
			c, err := openRecovery(ctx, cfg, true)
			if err != nil {
				return err
			}
			defer c.close()
			cl, err := kgo.NewClient(c.kopts...)
			if err != nil {
				return err
			}
			defer cl.Close()
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			reg.MustRegister(republish.NewCollector(c.pool, log))
			o.DB, o.Admin, o.Config = c.pool, kadm.NewClient(cl), cfg
			srv, err := console.New(console.Config{Status: o, Token: token, Pool: c.pool, Registry: c.reg, Publisher: c.pub,
				Kafka: c.kopts, Logger: log, Metrics: reg})
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("--addr: %w", err)
			}
			log.Info("console serving", "addr", ln.Addr().String(), "actions", token != "")
			if err := srv.Serve(ctx, ln); err != nil {
				return err
			}
			log.Info("console stopped")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "addr", "127.0.0.1:8080", "address to serve the console on (port 0 picks one; the log says which)")
	f.StringVar(&tokenFile, "token-file", "", "file holding the token that actions need (instead of ECST_CONSOLE_TOKEN)")
	f.DurationVar(&o.MaxBacklogAge, "max-backlog-age", sysstatus.DefaultMaxBacklogAge, "an outbox row waiting longer, or a lagging read model idle longer, needs attention")
	return cmd
}
