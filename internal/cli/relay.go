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

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/capture"
	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/config/kafkaopts"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/relay"
	"github.com/ecst-io/ecst/republish"
	"github.com/ecst-io/ecst/schemas"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
)

func newRelayCmd(a *app) *cobra.Command {
	var drain, recoverSlot bool
	var shards string
	cmd := &cobra.Command{
		Use:   "relay",
		Short: "Publish outbox events to their compacted topics, in order per key",
		Long: `Runs the outbox relay. For each outbox shard (outbox.shards in ecst.yaml), one
relay process in the fleet is the leader: it holds a PostgreSQL advisory lock on a
dedicated connection, reads committed rows in id order past its cursor, produces
them in one Kafka transaction (transactional id ecst-relay.<service>.<shard>),
and moves its cursor once the transaction commits; it truncates the outbox's
partitions once every row in them is published. Other processes stand by and
take over within relay.lease_timeout (default 3s) of the leader's death or
stall; the new leader's transactional id fences the old one, so a stalled
leader can never publish an old state after a newer one.

With outbox.transport: wal there are no shards: one leader streams the replication
slot ecst_<service> in commit order (transactional id ecst-relay.<service>.wal) and
confirms a position to the slot once everything before it is committed to Kafka.
A slot that PostgreSQL invalidated (max_slot_wal_keep_size) or lost (a failover)
stops the relay with an error that names the recovery: --recover-slot drops the
dead slot, creates a new one, republishes every entity (--all
--tombstone-orphans), then relays on.

Delivery is at least once: a relay killed after a Kafka commit but before it
recorded the commit (the table transport saves its cursor at most once a
second) publishes those events again. Consumers apply full states, so a
duplicate is harmless.

Wake-up is adaptive polling (relay.poll_min doubling to relay.poll_max while
idle), which works behind PgBouncer and costs writers nothing; the WAL transport
is pushed its events by the stream.

A record the broker rejects for good (too large, say) stops the relay with an
error naming the row (relay.on_reject: halt, the default), or is moved to
ecst.outbox_parked and counted (park).

Serves Prometheus metrics on --metrics-addr at /metrics, and /healthz and
/readyz (with the WAL transport they report the slot, and fail while it is lost).
SIGINT or SIGTERM finishes the batch in flight (or abandons it: its events stay
in the outbox) and exits 0.

The relay also resolves capture markers (ecst capture): before it moves past a
marker it writes the current state of the marker's keys to the outbox, and
publishes them after; --drain exits once those are published too.`,
		Example: `  ecst relay                        # run until stopped
  ecst relay --drain                # publish everything waiting, say how much, then exit 0
  ecst relay --shards 0,1           # serve only some shards
  ecst relay --recover-slot         # WAL transport: replace a lost slot, republish, relay on`,
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
			transport := outbox.Transport(cfg.Outbox.Transport)
			if recoverSlot && transport != outbox.TransportWAL {
				return errors.New("--recover-slot: the relay runs outbox.transport table, which has no slot")
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

			preg := prometheus.NewRegistry()
			preg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			var topics []string
			for _, n := range cfg.EntityNames() {
				topics = append(topics, cfg.Entities[n].Topic)
			}
			// The capture path: markers are resolved through the entities'
			// source queries and encoded as the producer does, which needs
			// the registry; a relay without one refuses markers (say so).
			var resolver relay.Resolver
			if cfg.Registry.URL != "" {
				reg, err := schemas.NewRegistry(cfg.Registry)
				if err != nil {
					return err
				}
				defer reg.Close()
				pub, err := producer.FromConfig(cfg, reg)
				if err != nil {
					return err
				}
				if resolver, err = capture.NewResolver(capture.ResolverConfig{Pool: pool, Config: cfg, Publisher: pub, Kafka: kopts, Logger: log}); err != nil {
					return err
				}
			}
			rl, err := relay.New(relay.Config{
				Pool:         pool,
				KafkaOpts:    kopts,
				Service:      cfg.Service,
				Transport:    transport,
				WALHeartbeat: cfg.Relay.WALHeartbeat,
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
				Resolver:     resolver,
				Logger:       log,
				Metrics:      relay.NewMetrics(preg),
			})
			if err != nil {
				return err
			}
			if cfg.Relay.MetricsAddr != "" && !drain {
				stop, err := serveOps(ctx, cfg.Relay.MetricsAddr, preg, rl.Ready, rl.Health)
				if err != nil {
					return err
				}
				defer stop()
				log.Info("serving /metrics, /healthz, /readyz", "addr", cfg.Relay.MetricsAddr)
			}
			if transport == outbox.TransportWAL {
				if len(serve) > 0 || cfg.Outbox.Shards > 1 {
					log.Warn("outbox.shards and --shards do not apply to the WAL transport: one leader streams the slot", "slot", relay.SlotName(cfg.Service))
				}
				log.Info("relay starting", "service", cfg.Service, "transport", transport, "slot", relay.SlotName(cfg.Service), "drain", drain)
			} else {
				log.Info("relay starting", "service", cfg.Service, "shards", cfg.Outbox.Shards, "drain", drain)
			}
			if recoverSlot {
				err = recoverAndRun(ctx, cmd, a, cfg, pool, kopts, rl, drain)
			} else {
				err = rl.Run(ctx)
			}
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
	cmd.Flags().BoolVar(&recoverSlot, "recover-slot", false, "WAL transport: replace a lost or invalidated slot, republish every entity (--all --tombstone-orphans), then relay on")
	return cmd
}

// recoverAndRun replaces a lost or invalidated slot and republishes every
// entity that has a source: the new slot holds everything written from its
// creation on, and the republish puts the current state of every key after
// it, so the topics converge on the source whatever the dead slot lost.
// Then it relays as usual: while the republish runs (its backpressure
// needs a relay), or after it with --drain (which publishes it all).
func recoverAndRun(ctx context.Context, cmd *cobra.Command, a *app, cfg *config.Config, pool *pgxpool.Pool, kopts []kgo.Opt, rl *relay.Relay, drain bool) error {
	log := a.logger()
	if err := relay.RecoverSlot(ctx, pool, cfg.Service); err != nil {
		return fmt.Errorf("--recover-slot: %w", err)
	}
	slot := relay.SlotName(cfg.Service)
	fmt.Fprintf(cmd.ErrOrStderr(), "replaced replication slot %s; republishing every entity from its source\n", slot)
	reg, err := schemas.NewRegistry(cfg.Registry)
	if err != nil {
		return err
	}
	defer reg.Close()
	pub, err := producer.FromConfig(cfg, reg)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ran := make(chan error, 1)
	if !drain {
		go func() { ran <- rl.Run(rctx) }()
	}
	var errs []error
	for _, name := range cfg.EntityNames() {
		e := cfg.Entities[name]
		if e.Source == nil {
			log.Warn("entity has no source: it cannot be republished; its topic may lack what the dead slot lost", "entity", name)
			continue
		}
		opts := republish.Options{All: true, TombstoneOrphans: true}
		if drain {
			opts.MaxBacklog = -1 // the drain that follows publishes it all
		}
		res, err := republish.Run(ctx, republish.Config{Pool: pool, Publisher: pub, Entity: e, Kafka: kopts, Logger: log}, opts)
		if err != nil {
			errs = append(errs, fmt.Errorf("republish %s: %w", name, err))
			continue
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "republished %s: run %d, %d full states, %d tombstones\n", name, res.RunID, res.Written, res.Tombstones)
	}
	if err := errors.Join(errs...); err != nil {
		if !drain {
			cancel()
			<-ran
		}
		return fmt.Errorf("--recover-slot: the new slot %s is in place, and %w; finish with `ecst republish ENTITY --all --tombstone-orphans`", slot, err)
	}
	if drain {
		return rl.Run(ctx)
	}
	return <-ran
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
// called. With a slot to watch (health not nil), both report it, and fail
// while it is lost or invalidated.
func serveOps(ctx context.Context, addr string, reg *prometheus.Registry, ready func() bool, health func() *relay.SlotStatus) (func(), error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	slot := func(w http.ResponseWriter) bool {
		st := health()
		if st == nil {
			return true
		}
		if st.Err != nil {
			http.Error(w, "slot "+st.Slot+": "+st.Err.Error(), http.StatusServiceUnavailable)
			return false
		}
		fmt.Fprintf(w, "slot %s: wal_status %s, lag %d bytes, %.1fs, retains %d bytes\n", st.Slot, st.WALStatus, st.LagBytes, st.LagSeconds, st.RetainedBytes)
		return true
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if slot(w) {
			fmt.Fprintln(w, "ok")
		}
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		if slot(w) {
			fmt.Fprintln(w, "ready")
		}
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

// noSlot is serveOps's health for processes without a slot to watch.
func noSlot() *relay.SlotStatus { return nil }
