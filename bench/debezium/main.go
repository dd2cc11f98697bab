// Command debezium measures ecst's relay side by side with Debezium: Kafka
// Connect standalone with debezium-connector-postgres and its Outbox Event
// Router, reading ecst's own outbox rows, on the same PostgreSQL and the same
// broker. bench/debezium/run.sh fetches the Connect jars, starts a real Kafka
// broker and runs this; README.md has the versions, the method and results.
//
//	bench/debezium/run.sh                     # everything, on a real broker
//	bench/debezium/run.sh -workloads drain    # flags go through to this command
//
// PostgreSQL: a throwaway durable cluster (internal/pgcluster, fsync on,
// wal_level=logical), or $ECST_BENCH_DATABASE_URL (wal_level must be logical).
// Kafka: $ECST_BENCH_BROKERS (comma-separated); Kafka Connect cannot use the
// in-process kfake, so there is no default.
//
// # Workloads
//
// drain: -rows events are written first (COPY, not timed), then the system
// starts. Debezium's start-up (JVM launch to the connector's task RUNNING,
// polled on Connect's REST API every 10 ms) is reported on its own; its
// drain runs from RUNNING until the topic's end offsets add up to -rows.
// ecst's relay runs in a process of its own (this binary, -relay-child)
// with Drain set, as `ecst relay --drain`: start-up is until it reports
// ready, drain from then until it exits.
//
// steady: the system runs; -writers writers commit one event per
// transaction at -rate events/s in all for -duration (after an uncounted
// -warmup at the same rate), each noting when its COMMIT returned; a read_committed
// consumer reads the topic and notes when each record arrived. Latency is
// commit → consumed, exact over every event (the method of `ecst bench
// e2e`, which stops at the consumer's apply instead), and commit → the
// broker's LogAppendTime (ms resolution; for ecst this is before its Kafka
// transaction commits, so only commit → consumed compares like with like).
//
// After each run the topic is read back whole: every event once, each key
// in the partition Kafka's default partitioner picks, in commit order.
// The CPU time of PostgreSQL, the broker, the harness and the system under
// test is reported too (cpu.go): unlike the wall-clock figures, it does not
// move with what else the shared machine runs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/internal/bench"
	"github.com/ecst-io/ecst/internal/pgcluster"
	"github.com/ecst-io/ecst/migrate"
	"github.com/ecst-io/ecst/outbox"
)

type config struct {
	systems     []string
	workloads   []string
	rows        int
	valueSize   int
	keys        int
	partitions  int
	rate        int
	duration    time.Duration
	warmup      time.Duration
	writers     int
	table       string
	connectLibs string
	connectPort int
	connectHeap string
	dbzPoll     time.Duration
	dbzBatch    int
	timeout     time.Duration
	csvDir      string

	relayChild   bool
	relayTopic   string
	relayService string
	relayDrain   bool
	relayTransp  string
}

func main() {
	var c config
	var systems, workloads string
	flag.StringVar(&systems, "systems", "debezium,debezium-stock,ecst-table", "systems to measure, in order: debezium (tuned for latency), debezium-stock (Debezium's defaults), ecst-table, ecst-wal")
	flag.StringVar(&workloads, "workloads", "drain,steady", "workloads: drain, steady")
	flag.IntVar(&c.rows, "rows", 200_000, "drain: rows in the backlog")
	flag.IntVar(&c.valueSize, "value-size", 300, "payload bytes per event (at least 8)")
	flag.IntVar(&c.keys, "keys", 100_000, "drain: distinct keys")
	flag.IntVar(&c.partitions, "partitions", 6, "partitions of each topic")
	flag.IntVar(&c.rate, "rate", 5000, "steady: events/s written")
	flag.DurationVar(&c.duration, "duration", 30*time.Second, "steady: how long the rate is held")
	flag.DurationVar(&c.warmup, "warmup", 10*time.Second, "steady: an uncounted run at -rate first, so that a JVM's JIT is warm (0 skips it)")
	flag.IntVar(&c.writers, "writers", 16, "steady: concurrent writers")
	flag.StringVar(&c.table, "outbox-table", "ecst.outbox", "the outbox table Debezium reads (schema.name); a partitioned one is published through its root")
	flag.StringVar(&c.connectLibs, "connect-libs", os.Getenv("ECST_BENCH_CONNECT_LIBS"), "directory holding Kafka Connect's and Debezium's jars (run.sh fetches them)")
	flag.IntVar(&c.connectPort, "connect-port", 8083, "Kafka Connect's REST port on 127.0.0.1")
	flag.StringVar(&c.connectHeap, "connect-heap", "-Xms256m -Xmx1g", "Kafka Connect's JVM heap options")
	flag.DurationVar(&c.dbzPoll, "debezium-poll-interval", 10*time.Millisecond, "system debezium: poll.interval.ms (debezium-stock keeps Debezium's default, 500ms)")
	flag.IntVar(&c.dbzBatch, "debezium-max-batch-size", 2048, "Debezium max.batch.size (its default 2048; max.queue.size is 4x)")
	flag.DurationVar(&c.timeout, "timeout", 30*time.Minute, "abort the whole run after this long")
	flag.StringVar(&c.csvDir, "csv", "", "steady: write every measured event's times to <dir>/<system>-steady.csv")
	flag.BoolVar(&c.relayChild, "relay-child", false, "internal: run ecst's relay on -relay-topic (the ecst-table system's process)")
	flag.StringVar(&c.relayTopic, "relay-topic", "", "internal: see -relay-child")
	flag.StringVar(&c.relayService, "relay-service", "", "internal: see -relay-child")
	flag.BoolVar(&c.relayDrain, "relay-drain", false, "internal: see -relay-child")
	flag.StringVar(&c.relayTransp, "relay-transport", "table", "internal: see -relay-child")
	flag.Parse()
	if c.relayChild {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := runRelayChild(ctx, c.relayTopic, c.relayService, outbox.Transport(c.relayTransp), c.relayDrain)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "debezium -relay-child:", err)
			os.Exit(1)
		}
		return
	}
	c.systems = splitList(systems)
	c.workloads = splitList(workloads)
	if err := c.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "debezium:", err)
		os.Exit(2)
	}
	if err := bench.RunFor(c.timeout, func(ctx context.Context) error { return run(ctx, c) }); err != nil {
		fmt.Fprintf(os.Stderr, "debezium: %v\n", err)
		os.Exit(1)
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func (c *config) validate() error {
	if c.rows <= 0 || c.valueSize < 8 || c.keys <= 0 || c.partitions <= 0 || c.rate <= 0 || c.writers <= 0 || c.duration <= 0 {
		return errors.New("bad flags: -rows, -keys, -partitions, -rate, -writers, -duration must be > 0 and -value-size >= 8")
	}
	for _, s := range c.systems {
		if err := c.validSystem(s); err != nil {
			return err
		}
	}
	for _, w := range c.workloads {
		if w != "drain" && w != "steady" {
			return fmt.Errorf("-workloads: unknown workload %q (drain, steady)", w)
		}
	}
	if len(c.systems) == 0 || len(c.workloads) == 0 {
		return errors.New("-systems and -workloads must name at least one each")
	}
	if _, _, ok := strings.Cut(c.table, "."); !ok {
		return fmt.Errorf("-outbox-table %q: give it as schema.name", c.table)
	}
	return nil
}

func (c *config) validSystem(s string) error {
	switch s {
	case "debezium", "debezium-stock":
		if c.connectLibs == "" {
			return errors.New("-systems debezium needs -connect-libs (or ECST_BENCH_CONNECT_LIBS): run bench/debezium/run.sh, which fetches the jars and sets it")
		}
	case "ecst-table", "ecst-wal":
	default:
		return fmt.Errorf("-systems: unknown system %q (debezium, debezium-stock, ecst-table, ecst-wal)", s)
	}
	return nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "debezium: "+format+"\n", args...)
}

func run(ctx context.Context, c config) (err error) {
	e := &env{cfg: c, table: c.table, runID: strconv.FormatInt(time.Now().UnixNano(), 36), cpu: &cpuMeter{}}
	e.cpu.broker, _ = strconv.Atoi(os.Getenv("ECST_BENCH_BROKER_PID"))
	stopDB, pgVersion, err := openDatabase(ctx, e)
	if err != nil {
		return err
	}
	defer stopDB()
	e.brokers = splitList(os.Getenv("ECST_BENCH_BROKERS"))
	if len(e.brokers) == 0 {
		return errors.New("ECST_BENCH_BROKERS is not set: Kafka Connect needs a real broker (run bench/debezium/run.sh, which starts one)")
	}
	e.kopts = []kgo.Opt{kgo.SeedBrokers(e.brokers...)}
	kcl, err := kgo.NewClient(e.kopts...)
	if err != nil {
		return err
	}
	defer kcl.Close()
	e.adm = kadm.NewClient(kcl)
	if e.dir, err = os.MkdirTemp("", "ecst-bench-debezium-"); err != nil {
		return err
	}
	defer func() {
		// A failed run keeps Connect's files: its errors point at connect.log.
		if err == nil && os.Getenv("ECST_BENCH_KEEP") == "" {
			_ = os.RemoveAll(e.dir)
		} else {
			logf("Kafka Connect's files are kept in %s", e.dir)
		}
	}()
	systems, cleanup, err := newSystems(ctx, e)
	defer cleanup()
	if err != nil {
		return err
	}

	logf("load average before: %s", loadavg())
	fmt.Printf("bench/debezium: Kafka at %s, PostgreSQL %s (durable, wal_level=logical), outbox %s, %d partitions, %d-byte values, 2 cores\n",
		strings.Join(e.brokers, ","), pgVersion, e.table, c.partitions, c.valueSize)
	fmt.Printf("debezium: poll.interval.ms=%d, debezium-stock: 500 (the default); both max.batch.size=%d; ecst relay: its defaults (batch 2000, poll 5ms..500ms)\n\n", c.dbzPoll.Milliseconds(), c.dbzBatch)
	for _, w := range c.workloads {
		report := reportDrain
		if w == "steady" {
			report = reportSteady
		}
		if err := report(ctx, e, systems); err != nil {
			return err
		}
	}
	return nil
}

// openDatabase starts a throwaway durable cluster with wal_level=logical
// (or takes $ECST_BENCH_DATABASE_URL), opens e.pool and migrates.
func openDatabase(ctx context.Context, e *env) (stop func(), version string, err error) {
	stops := []func(){}
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	e.dbURL = os.Getenv("ECST_BENCH_DATABASE_URL")
	if e.dbURL == "" {
		logf("starting a throwaway PostgreSQL cluster (durable, wal_level=logical)")
		pg, err := pgcluster.Start(ctx, pgcluster.Options{Durable: true, Settings: map[string]string{"wal_level": "logical"}})
		if err != nil {
			return stop, "", fmt.Errorf("start postgres: %w", err)
		}
		stops = append(stops, func() { _ = pg.Stop() })
		e.dbURL = pg.URL("postgres")
		e.cpu.postmaster = pg.PID()
	}
	pcfg, err := pgxpool.ParseConfig(e.dbURL)
	if err != nil {
		return stop, "", fmt.Errorf("ECST_BENCH_DATABASE_URL: %w", err)
	}
	pcfg.MaxConns = int32(e.cfg.writers + 8) //nolint:gosec // small
	if e.pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		return stop, "", err
	}
	stops = append(stops, e.pool.Close)
	var walLevel string
	if err := e.pool.QueryRow(ctx, "SELECT current_setting('wal_level'), current_setting('server_version')").Scan(&walLevel, &version); err != nil {
		return stop, "", fmt.Errorf("postgres: %w", err)
	}
	if walLevel != "logical" {
		return stop, "", fmt.Errorf("wal_level is %s: Debezium (and ecst's WAL transport) need wal_level = logical; set it in postgresql.conf and restart PostgreSQL", walLevel)
	}
	if _, err := migrate.Up(ctx, e.pool); err != nil {
		return stop, "", fmt.Errorf("migrate: %w", err)
	}
	return stop, version, nil
}

// newSystems builds the systems -systems names, in its order; cleanup drops
// what they set up (Debezium's publications).
func newSystems(ctx context.Context, e *env) ([]system, func(), error) {
	var systems []system
	var cleanups []func()
	cleanup := func() {
		for _, f := range cleanups {
			f()
		}
	}
	for _, name := range e.cfg.systems {
		switch name {
		case "debezium", "debezium-stock":
			d := &debezium{e: e, variant: name, poll: e.cfg.dbzPoll}
			if name == "debezium-stock" {
				d.poll = 500 * time.Millisecond // Debezium's default
			}
			if err := d.setupPublication(ctx); err != nil {
				return nil, cleanup, err
			}
			cleanups = append(cleanups, func() { _ = d.dropPublication(context.WithoutCancel(ctx)) })
			systems = append(systems, d)
		case "ecst-table":
			systems = append(systems, &ecstTable{ecstRelay: ecstRelay{e: e, transport: outbox.TransportTable}})
		case "ecst-wal":
			systems = append(systems, &ecstWAL{ecstRelay{e: e, transport: outbox.TransportWAL}})
		}
	}
	return systems, cleanup, nil
}

// loadavg is the 1, 5 and 15 minute load averages: the machine is shared,
// and the figures mean little when it is busy.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

func isDebezium(s system) bool { _, ok := s.(*debezium); return ok }

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func reportDrain(ctx context.Context, e *env, systems []system) error {
	res := map[string]drainResult{}
	for _, s := range systems {
		r, err := runDrain(ctx, e, s)
		if err != nil {
			return fmt.Errorf("%s drain: %w", s.name(), err)
		}
		r.load = loadavg()
		res[s.name()] = r
	}
	fmt.Printf("drain: a backlog of %d rows (%d keys) written first, then the system started\n", e.cfg.rows, e.cfg.keys)
	fmt.Printf("%-14s %10s %8s %8s %12s | %-37s |\n", "", "", "", "", "", "CPU s in the drain")
	fmt.Printf("%-14s %10s %8s %8s %12s | %s | %s\n", "system", "start-up s", "drain s", "rows/s", "first→last s", cpuHead, "load avg after")
	for _, s := range systems {
		r := res[s.name()]
		startup := fmt.Sprintf("%.2f", r.startup.Seconds())
		fmt.Printf("%-14s %10s %8.2f %8.0f %12.2f | %s | %s\n", s.name(), startup, r.drain.Seconds(), r.rate, r.span.Seconds(), cpuCols(r.cpu, e.cfg.rows), r.load)
	}
	for _, d := range systems {
		if !isDebezium(d) {
			continue
		}
		for _, s := range systems {
			if !isDebezium(s) {
				fmt.Printf("ratio %s/%s: drain rate %.2fx (target >= 3x)\n  CPU per row %s\n", s.name(), d.name(),
					res[s.name()].rate/res[d.name()].rate, cpuRatio(res[s.name()].cpu, e.cfg.rows, res[d.name()].cpu, e.cfg.rows))
			}
		}
	}
	fmt.Println()
	return nil
}

// cpuHead is the header of cpuCols.
var cpuHead = fmt.Sprintf("%6s %6s %7s %6s %7s", "pg", "broker", "harness", "system", "ms/1k")

// cpuCols prints CPU seconds per group and the total per 1,000 events.
func cpuCols(u cpuUse, events int) string {
	per := ms(u.total()) / float64(max(events, 1)) * 1000
	if !u.known {
		return fmt.Sprintf("%6s %6s %7.1f %6.1f %7s", "?", "?", u.harness.Seconds(), u.system.Seconds(), "?")
	}
	return fmt.Sprintf("%6.1f %6.1f %7.1f %6.1f %7.1f", u.pg.Seconds(), u.broker.Seconds(), u.harness.Seconds(), u.system.Seconds(), per)
}

// cpuRatio compares a's CPU time per event with b's: all four groups, the
// system's process alone, and the system with the broker.
func cpuRatio(a cpuUse, an int, b cpuUse, bn int) string {
	if !a.known || !b.known || b.total() == 0 || an == 0 || bn == 0 {
		return "unknown"
	}
	r := func(x, y time.Duration) float64 { return (x.Seconds() / float64(an)) / (y.Seconds() / float64(bn)) }
	return fmt.Sprintf("%.2fx (system process %.2fx, system+broker %.2fx)", r(a.total(), b.total()),
		r(a.system, b.system), r(a.system+a.broker, b.system+b.broker))
}

func reportSteady(ctx context.Context, e *env, systems []system) error {
	res := map[string]steadyResult{}
	for _, s := range systems {
		r, err := runSteady(ctx, e, s)
		if err != nil {
			return fmt.Errorf("%s steady: %w", s.name(), err)
		}
		r.load = loadavg()
		res[s.name()] = r
	}
	fmt.Printf("steady: %d events/s offered for %s by %d writers, one event per transaction\n", e.cfg.rate, e.cfg.duration, e.cfg.writers)
	fmt.Printf("%-14s %10s %9s %7s | %-23s | %-23s | %-37s |\n", "", "", "", "", "commit → consumed ms", "commit → LogAppend ms", "CPU s (harness: writers, reader)")
	fmt.Printf("%-14s %10s %9s %7s | %7s %7s %7s | %7s %7s %7s | %s | %s\n", "system", "start-up s", "written/s", "events",
		"p50", "p99", "max", "p50", "p99", "max", cpuHead, "load avg after")
	for _, s := range systems {
		r := res[s.name()]
		fmt.Printf("%-14s %10.2f %9.0f %7d | %7.1f %7.1f %7.1f | %7.1f %7.1f %7.1f | %s | %s\n", s.name(), r.startup.Seconds(), r.written, r.events,
			ms(r.consumed.p50), ms(r.consumed.p99), ms(r.consumed.max), ms(r.appended.p50), ms(r.appended.p99), ms(r.appended.max),
			cpuCols(r.cpu, r.events), r.load)
	}
	for _, ds := range systems {
		if !isDebezium(ds) {
			continue
		}
		d := res[ds.name()]
		for _, s := range systems {
			if !isDebezium(s) {
				r := res[s.name()]
				fmt.Printf("ratio %s/%s commit → consumed: p50 %.2f, p99 %.2f (target p99 <= 0.2)\n  CPU per event %s\n", s.name(), ds.name(),
					r.consumed.p50.Seconds()/d.consumed.p50.Seconds(), r.consumed.p99.Seconds()/d.consumed.p99.Seconds(), cpuRatio(r.cpu, r.events, d.cpu, d.events))
			}
		}
	}
	fmt.Println()
	return nil
}
