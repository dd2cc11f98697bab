package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ecst-io/ecst/config/kafkaopts"
	"github.com/ecst-io/ecst/relay"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
)

func newRelayCmd(a *app) *cobra.Command {
	var drain bool
	var shards string
	cmd := &cobra.Command{
		Use:   "relay",
		Short: "Publish outbox rows to their compacted topics, in order per key",
		Long: `Runs the outbox relay. For each outbox shard (outbox.shards in ecst.yaml), one
relay process in the fleet is the leader: it holds a PostgreSQL advisory lock on a
dedicated connection, reads committed rows in id order past its cursor, produces
them in one Kafka transaction (transactional id ecst-relay.<service>.<shard>),
and moves its cursor once the transaction commits; it truncates the outbox's
partitions once every row in them is published. Other processes stand by and
take over within relay.lease_timeout (default 3s) of the leader's death or
stall; the new leader's transactional id fences the old one, so a stalled
leader can never publish an old state after a newer one.

Delivery is at least once: a relay killed after a Kafka commit but before it
saved its cursor (at most once a second) publishes those rows again. Consumers
apply full states, so a duplicate is harmless.

Wake-up is adaptive polling (relay.poll_min doubling to relay.poll_max while
idle), which works behind PgBouncer and costs writers nothing.

A record the broker rejects for good (too large, say) stops the relay with an
error naming the row (relay.on_reject: halt, the default), or is moved to
ecst.outbox_parked and counted (park).

Serves Prometheus metrics on --metrics-addr at /metrics, and /healthz and
/readyz. SIGINT or SIGTERM finishes the batch in flight (or abandons it: its
rows stay in the outbox) and exits 0.`,
		Example: `  ecst relay                        # run until stopped
  ecst relay --drain                # publish everything waiting, say how much, then exit 0
  ecst relay --shards 0,1           # serve only some shards`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			log := a.logger()
			kopts, err := kafkaopts.Client(cfg.Kafka)
			if err != nil {
				return err
			}
			var serve []int
			if shards != "" {
				for _, s := range strings.Split(shards, ",") {
					n, err := strconv.Atoi(strings.TrimSpace(s))
					if err != nil {
						return fmt.Errorf("--shards: %q is not a shard number", s)
					}
					serve = append(serve, n)
				}
			}
			pool, err := connect(ctx, cfg.Database)
			if err != nil {
				return err
			}
			defer pool.Close()

			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			var topics []string
			for _, n := range cfg.EntityNames() {
				topics = append(topics, cfg.Entities[n].Topic)
			}
			rl, err := relay.New(relay.Config{
				Pool:         pool,
				KafkaOpts:    kopts,
				Service:      cfg.Service,
				TotalShards:  cfg.Outbox.Shards,
				Shards:       serve,
				Topics:       topics,
				BatchSize:    cfg.Relay.BatchSize,
				BatchBytes:   cfg.Relay.BatchBytes,
				PollMin:      cfg.Relay.PollMin,
				PollMax:      cfg.Relay.PollMax,
				LeaseTimeout: cfg.Relay.LeaseTimeout,
				OnReject:     relay.RejectPolicy(cfg.Relay.OnReject),
				Drain:        drain,
				Logger:       log,
				Metrics:      relay.NewMetrics(reg),
			})
			if err != nil {
				return err
			}
			if cfg.Relay.MetricsAddr != "" && !drain {
				stop, err := serveOps(ctx, cfg.Relay.MetricsAddr, reg, rl.Ready)
				if err != nil {
					return err
				}
				defer stop()
				log.Info("serving /metrics, /healthz, /readyz", "addr", cfg.Relay.MetricsAddr)
			}
			log.Info("relay starting", "service", cfg.Service, "shards", cfg.Outbox.Shards, "drain", drain)
			err = rl.Run(ctx)
			if err != nil {
				return err
			}
			counts := rl.Counts()
			if drain {
				printDrained(cmd.OutOrStdout(), counts)
			}
			log.Info("relay stopped", "published", relay.Total(counts.Published), "parked", relay.Total(counts.Parked))
			return nil
		},
	}
	cmd.Flags().BoolVar(&drain, "drain", false, "publish everything in the outbox, print the records published per topic and the total, then exit 0")
	cmd.Flags().StringVar(&shards, "shards", "", "comma-separated shards to serve (default all of outbox.shards)")
	return cmd
}

// printDrained says what a drain published, per topic, and ends with the
// totals.
func printDrained(w io.Writer, c relay.Counts) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, t := range slices.Sorted(maps.Keys(c.Published)) {
		fmt.Fprintf(tw, "published to %s\t%s\n", t, records(c.Published[t]))
	}
	for _, t := range slices.Sorted(maps.Keys(c.Parked)) {
		fmt.Fprintf(tw, "parked from %s\t%s\n", t, records(c.Parked[t]))
	}
	tw.Flush()
	published, parked := relay.Total(c.Published), relay.Total(c.Parked)
	summary := fmt.Sprintf("outbox drained: %s published", records(published))
	if n := len(c.Published); n > 1 {
		summary += fmt.Sprintf(" to %d topics", n)
	}
	if parked > 0 {
		summary += fmt.Sprintf("; %s the broker refused parked in ecst.outbox_parked", records(parked))
	}
	fmt.Fprintln(w, summary)
}

func records(n int64) string {
	if n == 1 {
		return "1 record"
	}
	return fmt.Sprintf("%d records", n)
}

// serveOps serves /metrics, /healthz and /readyz until the returned stop is
// called.
func serveOps(ctx context.Context, addr string, reg *prometheus.Registry, ready func() bool) (func(), error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr %s: %w (set another address, or \"off\")", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = err // the listener is ours; Serve fails only when it closes
		}
	}()
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}, nil
}
