package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/republish"
	"github.com/ecst-io/ecst/verify"
)

// verifyEvery is verify --every: rounds of the entities named, one every
// interval, until the command's context ends (SIGINT, SIGTERM), which is a
// clean stop. A run that fails is logged and the next one runs on time:
// only what keeps it from starting is an error.
func (a *app) verifyEvery(cmd *cobra.Command, cfg *config.Config, names []string, o verify.Options, every time.Duration, jsonOut bool) error {
	ctx := cmd.Context()
	var entities []*config.Entity
	for _, n := range names {
		e, err := cfg.Entity(n)
		if err != nil {
			return err
		}
		if !slices.Contains(entities, e) {
			entities = append(entities, e)
		}
	}
	if o.Mirror != "" && len(entities) > 1 {
		return errors.New("--mirror names one entity's mirror: give one ENTITY with it (run an `ecst verify --every` per mirror)")
	}
	log := a.logger()
	c, err := openRecovery(ctx, cfg, o.Repair)
	if err != nil {
		return err
	}
	defer c.close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := verify.NewMetrics(reg)
	reg.MustRegister(republish.NewCollector(c.pool, log))
	for _, e := range entities {
		m.Every(e.Name, every)
	}
	if addr := cfg.Verify.MetricsAddr; addr != "" {
		bound, stop, err := serveMetrics(ctx, addr, reg)
		if err != nil {
			return err
		}
		defer stop()
		log.Info("serving /metrics, /healthz", "addr", bound)
	}
	for {
		round := time.Now()
		for _, e := range entities {
			vc := verify.Config{Pool: c.pool, Registry: c.reg, Entity: e, Kafka: c.kopts, Logger: log, Publisher: c.pub, Metrics: m}
			if !a.verifyOnce(ctx, cmd.OutOrStdout(), log, vc, o, jsonOut) {
				log.Info("verify --every stopped")
				return nil
			}
		}
		next := round.Add(every)
		log.Info("next verification", "at", next.Format(time.RFC3339))
		if !wait.Sleep(ctx, time.Until(next)) {
			log.Info("verify --every stopped")
			return nil
		}
	}
}

// verifyOnce runs one verification of verify --every, prints its report and
// logs its verdict. It returns false when ctx ended.
func (a *app) verifyOnce(ctx context.Context, out io.Writer, log *slog.Logger, vc verify.Config, o verify.Options, jsonOut bool) bool {
	name := vc.Entity.Name
	log.Info("verifying", "entity", name)
	rep, err := verify.Run(ctx, vc, o)
	if ctx.Err() != nil {
		return false
	}
	if rep != nil {
		if jsonOut {
			_ = json.NewEncoder(out).Encode(rep)
		} else {
			hint := a.repairHint
			if o.Repair {
				hint = nil
			}
			printReport(out, rep, hint)
		}
	}
	switch verify.ResultOf(rep, err) {
	case verify.ResultError:
		log.Error("verification failed; the next one runs on time", "entity", name, "err", inFlags(err, name))
	case verify.ResultDrift:
		log.Warn("drift found", "entity", name, "verify_run", rep.VerifyRun)
	default:
		log.Info("in sync", "entity", name, "verify_run", rep.VerifyRun, "elapsed", rep.Elapsed)
	}
	return true
}

// serveMetrics serves /metrics and /healthz on addr until the returned stop
// is called. It returns the address it listens on (port 0 picks one).
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry) (string, func(), error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("verify.metrics_addr %s: %w (set another address with --verify-metrics-addr or ECST_VERIFY_METRICS_ADDR, or \"off\")", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }() // Serve returns when Shutdown closes the listener
	return l.Addr().String(), func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}, nil
}
