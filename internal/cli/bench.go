package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/config/kafkaopts"
	"github.com/ecst-io/ecst/internal/benchrelay"
	"github.com/ecst-io/ecst/internal/pgcluster"
	"github.com/ecst-io/ecst/migrate"
)

func newBenchCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Benchmarks, with peers measured in the same run (docs/benchmarks.md)"}
	var rows, valueSize, rounds, batch, rate, rssRows int
	var steady time.Duration
	relay := &cobra.Command{
		Use:   "relay",
		Short: "Relay throughput against the raw ceiling, steady-state latency, memory",
		Long: `Measures the relay on a throwaway durable PostgreSQL cluster (started for the
run) and the broker named by ECST_BROKERS, or an in-process kfake broker when
it is unset:

  drain     --rows outbox rows of --value-size bytes, drained by the raw ceiling
            (a minimal read-produce loop: no transactions, headers, leader
            election or metrics) and by ecst's relay, alternately, --rounds times;
            reported as rows/s and as the ratio ecst/ceiling
  steady    --rate rows/s written by 8 writers for --steady with the relay
            running: commit-to-ack latency p50 and p99
  memory    peak RSS of an 'ecst relay --drain' process on --rss-rows rows

Figures are for comparing with each other; machines differ and are noisy.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			out := cmd.OutOrStdout()
			parts, err := a.benchParts(ctx, out, 0)
			if err != nil {
				return err
			}
			defer parts.stop()
			kopts, brokerName, dbURL, pool := parts.kopts, parts.broker, parts.dbURL, parts.pool
			suffix := fmt.Sprint(time.Now().UnixNano())
			env := &benchrelay.Env{Pool: pool, KafkaOpts: kopts, Topic: "bench-relay-" + suffix, Service: "bench-" + suffix, Log: a.logger()}
			if err := env.CreateTopic(ctx, 6); err != nil {
				return fmt.Errorf("create topic: %w", err)
			}
			fmt.Fprintf(out, "relay drain: %d rows of %d B, batch %d, %s, 2 cores\n\n", rows, valueSize, batch, brokerName)
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "round\tceiling rows/s\tecst rows/s\tecst/ceiling\t")
			var sumRatio float64
			for i := range rounds {
				if err := env.Fill(ctx, rows, valueSize); err != nil {
					return err
				}
				n, took, err := env.Ceiling(ctx, batch)
				if err != nil {
					return fmt.Errorf("ceiling: %w", err)
				}
				ceil := float64(n) / took.Seconds()
				if err := env.Fill(ctx, rows, valueSize); err != nil {
					return err
				}
				n, took, err = env.Relay(ctx, batch)
				if err != nil {
					return fmt.Errorf("ecst relay: %w", err)
				}
				ecst := float64(n) / took.Seconds()
				sumRatio += ecst / ceil
				fmt.Fprintf(tw, "%d\t%.0f\t%.0f\t%.2f\t\n", i+1, ceil, ecst, ecst/ceil)
			}
			tw.Flush()
			fmt.Fprintf(out, "mean ecst/ceiling: %.2f\n\n", sumRatio/float64(rounds))
			if steady > 0 {
				lat, err := env.Steady(ctx, rate, steady, valueSize)
				if err != nil {
					return fmt.Errorf("steady state: %w", err)
				}
				fmt.Fprintf(out, "steady state: %d rows/s offered, %.0f written; commit-to-ack p50 %.1f ms, p99 %.1f ms\n\n",
					lat.Rate, lat.Achieved, float64(lat.P50.Microseconds())/1000, float64(lat.P99.Microseconds())/1000)
			}
			if rssRows > 0 {
				if err := env.Fill(ctx, rssRows, valueSize); err != nil {
					return err
				}
				rss, took, err := relayRSS(ctx, dbURL, parts.brokers, env.Service, out)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "memory: 'ecst relay --drain' on %d rows: peak RSS %.0f MB, %.0f rows/s\n", rssRows, rss, float64(rssRows)/took.Seconds())
			}
			return nil
		},
	}
	f := relay.Flags()
	f.IntVar(&rows, "rows", 200_000, "backlog rows per drain")
	f.IntVar(&valueSize, "value-size", 300, "value bytes per row")
	f.IntVar(&rounds, "rounds", 2, "drain rounds (ceiling and ecst alternate)")
	f.IntVar(&batch, "batch", 2000, "rows per batch, for both")
	f.IntVar(&rate, "rate", 5000, "rows/s written in the steady-state run")
	f.DurationVar(&steady, "steady", 10*time.Second, "steady-state run length (0 skips it)")
	f.IntVar(&rssRows, "rss-rows", 1_000_000, "backlog for the memory run (0 skips it)")
	cmd.AddCommand(relay, newBenchConsumerCmd(a), newBenchE2ECmd(a), newBenchRecoveryCmd(a))
	return cmd
}

// relayRSS runs this binary's relay in drain mode as a child and returns its
// peak resident set in MB.
func relayRSS(ctx context.Context, dbURL string, brokers []string, service string, log io.Writer) (float64, time.Duration, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, 0, err
	}
	dir, err := os.MkdirTemp("", "ecst-bench-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(dir)
	cfgPath := filepath.Join(dir, "ecst.yaml")
	if err := os.WriteFile(cfgPath, []byte("service: "+service+"\n"), 0o644); err != nil {
		return 0, 0, err
	}
	cmd := exec.CommandContext(ctx, self, "--config", cfgPath, "relay", "--drain")
	cmd.Env = append(os.Environ(), "ECST_DATABASE_URL="+dbURL, "ECST_BROKERS="+strings.Join(brokers, ","), "ECST_METRICS_ADDR=off")
	cmd.Stderr = log
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, 0, fmt.Errorf("relay --drain: %w", err)
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0, 0, fmt.Errorf("no rusage on this platform")
	}
	return float64(ru.Maxrss) / 1024, time.Since(start), nil
}

// benchParts are what a bench command runs against: the configured broker
// (or an in-process kfake) and a throwaway durable PostgreSQL.
type benchParts struct {
	kopts   []kgo.Opt
	brokers []string // seeds, for a child process
	broker  string   // for the report
	dbURL   string
	pool    *pgxpool.Pool
	stop    func()
}

// benchParts starts the parts; a pool of maxConns connections (0: pgx's
// default).
func (a *app) benchParts(ctx context.Context, out io.Writer, maxConns int) (*benchParts, error) {
	cfg, err := a.loadConfig()
	if err != nil {
		return nil, err
	}
	kopts, broker, stopBroker, err := benchBroker(cfg)
	if err != nil {
		return nil, err
	}
	fmt.Fprintln(out, "starting a throwaway PostgreSQL (fsync on)...")
	dbURL, pool, stopDB, err := benchDatabase(ctx, maxConns)
	if err != nil {
		stopBroker()
		return nil, err
	}
	return &benchParts{kopts: kopts, brokers: cfg.Kafka.Brokers, broker: broker, dbURL: dbURL, pool: pool, stop: func() { stopDB(); stopBroker() }}, nil
}

// benchBroker returns client options for the configured brokers, or for an
// in-process kfake broker (whose address it writes into cfg) when none is
// configured; stop releases the kfake broker.
func benchBroker(cfg *config.Config) (kopts []kgo.Opt, name string, stop func(), err error) {
	if len(cfg.Kafka.Brokers) > 0 {
		kopts, err = kafkaopts.Client(cfg.Kafka)
		return kopts, "Kafka at " + strings.Join(cfg.Kafka.Brokers, ","), func() {}, err
	}
	fake, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		return nil, "", nil, err
	}
	cfg.Kafka.Brokers = fake.ListenAddrs()
	return []kgo.Opt{kgo.SeedBrokers(fake.ListenAddrs()...)}, "kfake (in process)", fake.Close, nil
}

// benchDatabase starts a throwaway durable PostgreSQL cluster (fsync on, as
// in production), migrates it, and returns its URL and a pool of maxConns
// connections (0: pgxpool's default); stop removes it all.
func benchDatabase(ctx context.Context, maxConns int) (url string, pool *pgxpool.Pool, stop func(), err error) {
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{Durable: true})
	if err != nil {
		return "", nil, nil, err
	}
	url = cluster.URL("postgres")
	pcfg, err := config.Database{URL: config.SecretURL(url)}.PoolConfig()
	if err == nil && maxConns > 0 {
		pcfg.MaxConns = int32(maxConns) //nolint:gosec // small
	}
	if err == nil {
		pool, err = pgxpool.NewWithConfig(ctx, pcfg)
	}
	if err != nil {
		_ = cluster.Stop()
		return "", nil, nil, err
	}
	stop = func() {
		pool.Close()
		_ = cluster.Stop()
	}
	if _, err := migrate.Up(ctx, pool); err != nil {
		stop()
		return "", nil, nil, err
	}
	return url, pool, stop, nil
}
