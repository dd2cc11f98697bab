package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/internal/bench"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/relay"
)

// env is what every system shares: one database, one broker, one outbox.
type env struct {
	pool    *pgxpool.Pool
	dbURL   string // the database the outbox lives in
	kopts   []kgo.Opt
	brokers []string
	adm     *kadm.Client
	table   string // the outbox table, schema-qualified (-outbox-table)
	dir     string // scratch space for Connect's files
	runID   string
	cfg     config
	cpu     *cpuMeter
}

// A system moves committed outbox events to Kafka. Each run gets an empty
// outbox and a fresh topic; the workloads in workload.go do the rest.
type system interface {
	name() string
	// queue adds one event's write to b, as this system's writers do;
	// the writer sends b as one transaction in one round trip.
	queue(b *pgx.Batch, r outbox.Row) error
	// emitBulk writes a backlog in one transaction (not timed).
	emitBulk(ctx context.Context, tx pgx.Tx, rows []outbox.Row) error
	// prepare runs on an empty outbox, before any event of the run is
	// written (Debezium: a fresh replication slot, so the backlog is in
	// the WAL it will read).
	prepare(ctx context.Context) error
	// start begins moving events to topic; it returns once the system is
	// running, with how long that took, and a stop function.
	start(ctx context.Context, topic string) (stop func() error, startup time.Duration, err error)
	// drain moves a backlog of rows events to topic: startup is the
	// system's own start-up, drain the time from then until every event
	// is on the topic, and cpu the CPU time spent in the drain.
	drain(ctx context.Context, topic string, rows int) (startup, drain time.Duration, cpu cpuUse, err error)
	// cleanup undoes prepare.
	cleanup(ctx context.Context) error
}

// tableEmit is the outbox-table write path, shared by Debezium and ecst's
// table transport: the same rows, written by ecst's own code.
type tableEmit struct{}

func (tableEmit) queue(b *pgx.Batch, r outbox.Row) error {
	outbox.Queue(b, r)
	return nil
}

func (tableEmit) emitBulk(ctx context.Context, tx pgx.Tx, rows []outbox.Row) error {
	return outbox.CopyRows(ctx, tx, rows)
}

// ---------------------------------------------------------------------------
// ecst, table transport

// ecstRelay is ecst's relay, with the defaults `ecst relay` runs with, on
// one transport. It runs in a process of its own (this binary again, in
// -relay-child mode, which calls relay.New and Run as `ecst relay` does),
// so that its CPU time is its own and not the harness's.
type ecstRelay struct {
	e         *env
	transport outbox.Transport
}

// service is the relay's service; on the WAL transport it names the slot.
func (s *ecstRelay) service() string { return "bench-dbz-" + s.e.runID }

// ecstTable is ecst's relay over the outbox table.
type ecstTable struct {
	tableEmit
	ecstRelay
}

func (s *ecstTable) name() string                  { return "ecst-table" }
func (s *ecstTable) prepare(context.Context) error { return nil }
func (s *ecstTable) cleanup(context.Context) error { return nil }

// relayProc is a running relay child.
type relayProc struct {
	cmd     *exec.Cmd
	ready   chan struct{} // closed when the relay reports ready
	readyAt time.Time     // set before ready is closed
	done    chan error    // the child's exit
}

func (s *ecstRelay) spawn(topic string, drain bool) (*relayProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"-relay-child", "-relay-topic", topic, "-relay-service", s.service(), "-relay-transport", string(s.transport)}
	if drain {
		args = append(args, "-relay-drain")
	}
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), "ECST_BENCH_DATABASE_URL="+s.e.dbURL, "ECST_BENCH_BROKERS="+strings.Join(s.e.brokers, ","))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the relay process: %w", err)
	}
	p := &relayProc{cmd: cmd, ready: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == relayReady {
				p.readyAt = time.Now()
				close(p.ready)
			}
		}
		p.done <- cmd.Wait()
	}()
	return p, nil
}

// cpu is the CPU time of a child that has exited (its rusage).
func (p *relayProc) cpu() time.Duration {
	if p.cmd.ProcessState == nil {
		return 0
	}
	return p.cmd.ProcessState.UserTime() + p.cmd.ProcessState.SystemTime()
}

func (s *ecstRelay) drain(ctx context.Context, topic string, _ int) (time.Duration, time.Duration, cpuUse, error) {
	// Start-up is the process's start to the relay's readiness (its
	// checks passed), as Debezium's is to its task RUNNING; the leader
	// lock and InitProducerID come after, inside the drain.
	c0, t0 := s.e.cpu.sample(), time.Now()
	p, err := s.spawn(topic, true)
	if err != nil {
		return 0, 0, cpuUse{}, err
	}
	select {
	case err = <-p.done:
	case <-ctx.Done():
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		<-p.done
		return 0, 0, cpuUse{}, ctx.Err()
	}
	end := time.Now()
	if err != nil {
		return 0, 0, cpuUse{}, fmt.Errorf("ecst relay --drain: %w", err)
	}
	u := s.e.cpu.since(c0, s.e.cpu.sample())
	u.system += p.cpu() // it has exited: /proc no longer shows it
	select {
	case <-p.ready:
		return p.readyAt.Sub(t0), end.Sub(p.readyAt), u, nil
	default: // drained before it said it was ready
		return 0, end.Sub(t0), u, nil
	}
}

func (s *ecstRelay) start(ctx context.Context, topic string) (func() error, time.Duration, error) {
	t0 := time.Now()
	p, err := s.spawn(topic, false)
	if err != nil {
		return nil, 0, err
	}
	select {
	case <-p.ready:
	case err := <-p.done:
		return nil, 0, fmt.Errorf("the ecst relay exited during start-up: %v", err)
	case <-ctx.Done():
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		<-p.done
		return nil, 0, ctx.Err()
	}
	startup := time.Since(t0)
	stop := func() error {
		_ = p.cmd.Process.Signal(syscall.SIGTERM) // finishes the batch in flight, exits 0
		select {
		case err := <-p.done:
			return err
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
			return errors.New("the ecst relay did not stop within 30 s of SIGTERM and was killed")
		}
	}
	return stop, startup, nil
}

const relayReady = "relay ready"

// runRelayChild is -relay-child mode: ecst's relay on one topic, as `ecst
// relay` (or `ecst relay --drain`) runs it, until SIGTERM (or drained).
func runRelayChild(ctx context.Context, topic, service string, transport outbox.Transport, drain bool) error {
	pool, err := pgxpool.New(ctx, os.Getenv("ECST_BENCH_DATABASE_URL"))
	if err != nil {
		return err
	}
	defer pool.Close()
	r, err := relay.New(relay.Config{
		Pool: pool, KafkaOpts: []kgo.Opt{kgo.SeedBrokers(splitList(os.Getenv("ECST_BENCH_BROKERS"))...)},
		Service: service, Transport: transport, Topics: []string{topic}, Drain: drain,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	for {
		select {
		case err := <-done:
			return err
		case <-time.After(time.Millisecond):
		}
		if r.Ready() {
			fmt.Println(relayReady)
			return <-done
		}
	}
}

// ---------------------------------------------------------------------------
// ecst, WAL transport

// ecstWAL is ecst's relay on the WAL transport (outbox.transport: wal): the
// writers emit each event with pg_logical_emit_message, by ecst's own
// producer code, and the relay streams them from its slot. prepare moves
// the database to the WAL transport as `ecst outbox switch wal` does (the
// slot, the constraint that fails table writers, the WAL opened), so that
// the backlog is in the slot; cleanup moves it back, so that the next
// system's table writers are let in and the slot is dropped.
type ecstWAL struct{ ecstRelay }

func (s *ecstWAL) name() string { return "ecst-wal" }

func (s *ecstWAL) queue(b *pgx.Batch, r outbox.Row) error {
	outbox.QueueEmit(b, r)
	return nil
}

// emitBulk emits the backlog with one statement per chunk, as republish
// does on the WAL transport. Like the table's COPY it takes no key locks:
// one transaction writes the whole chunk, nothing else writes.
func (s *ecstWAL) emitBulk(ctx context.Context, tx pgx.Tx, rows []outbox.Row) error {
	return outbox.EmitRows(ctx, tx, rows)
}

func (s *ecstWAL) prepare(ctx context.Context) error {
	if _, err := relay.Switch(ctx, s.e.pool, outbox.TransportWAL, relay.SwitchOptions{Service: s.service()}); err != nil {
		return fmt.Errorf("switch the database to the WAL transport: %w", err)
	}
	return nil
}

// cleanup switches back to the table transport. Everything was published
// by then; the drain (a WAL relay in drain mode, in this process, as `ecst
// outbox switch table --drain` runs it) only confirms the switch's WAL
// position, after which the switch drops the slot.
func (s *ecstWAL) cleanup(ctx context.Context) error {
	drain := func(ctx context.Context, old outbox.Transport) error {
		r, err := relay.New(relay.Config{Pool: s.e.pool, KafkaOpts: s.e.kopts, Service: s.service(), Transport: old, Drain: true,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
		if err != nil {
			return err
		}
		return r.Run(ctx)
	}
	if _, err := relay.Switch(ctx, s.e.pool, outbox.TransportTable, relay.SwitchOptions{Service: s.service(), Drain: drain, Wait: time.Minute}); err != nil {
		return fmt.Errorf("switch the database back to the table transport: %w", err)
	}
	return nil
}

// ---------------------------------------------------------------------------
// Debezium

// debezium is Kafka Connect standalone with Debezium's PostgreSQL connector
// and its Outbox Event Router, reading ecst's outbox rows.
type debezium struct {
	tableEmit
	e       *env
	variant string        // debezium or debezium-stock
	poll    time.Duration // poll.interval.ms
	runs    int
}

func (s *debezium) name() string { return s.variant }

func (s *debezium) id() string          { return strings.ReplaceAll(s.variant, "-", "_") + "_" + s.e.runID }
func (s *debezium) slot() string        { return "ecst_bench_" + s.id() }
func (s *debezium) publication() string { return "ecst_bench_" + s.id() }

// setupPublication creates the publication once: on the outbox table only,
// and through the partitioned root if the table is partitioned, so that
// Debezium sees one table whatever partition a row lands in.
func (s *debezium) setupPublication(ctx context.Context) error {
	var relkind string
	if err := s.e.pool.QueryRow(ctx, "SELECT relkind::text FROM pg_class WHERE oid = $1::regclass", s.e.table).Scan(&relkind); err != nil {
		return fmt.Errorf("look up -outbox-table %s: %w", s.e.table, err)
	}
	stmt := "CREATE PUBLICATION " + s.publication() + " FOR TABLE " + s.e.table
	if relkind == "p" {
		stmt += " WITH (publish_via_partition_root = true)"
	}
	if _, err := s.e.pool.Exec(ctx, stmt); err != nil {
		return fmt.Errorf("create the publication for Debezium: %w", err)
	}
	return nil
}

func (s *debezium) dropPublication(ctx context.Context) error {
	_, err := s.e.pool.Exec(ctx, "DROP PUBLICATION IF EXISTS "+s.publication())
	return err
}

// prepare creates the slot before the backlog is written: Debezium then
// reads the backlog from the WAL, as after an outage of the connector. (A
// slot created after the rows would start after them; snapshot.mode
// initial would read them with a SELECT instead, which is not the
// streaming path being measured.)
func (s *debezium) prepare(ctx context.Context) error {
	if err := s.cleanup(ctx); err != nil {
		return err
	}
	if _, err := s.e.pool.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", s.slot()); err != nil {
		return fmt.Errorf("create the replication slot for Debezium: %w", err)
	}
	return nil
}

// cleanup drops the slot, waiting for the walsender of a stopped connector
// to let go of it.
func (s *debezium) cleanup(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := s.e.pool.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", s.slot())
		var pe *pgconn.PgError
		if err == nil || !errors.As(err, &pe) || pe.Code != "55006" || time.Now().After(deadline) { // object_in_use
			if err != nil {
				return fmt.Errorf("drop replication slot %s: %w", s.slot(), err)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// launch starts a worker with fresh offsets (so the connector starts at the
// slot's position) and waits for its task to be RUNNING.
func (s *debezium) launch(ctx context.Context) (*connect, time.Duration, error) {
	s.runs++
	dir := filepath.Join(s.e.dir, s.variant+"-"+strconv.Itoa(s.runs))
	c := s.e.cfg
	u, err := pgconn.ParseConfig(s.e.dbURL)
	if err != nil {
		return nil, 0, err
	}
	worker := map[string]string{
		"bootstrap.servers":                 strings.Join(s.e.brokers, ","),
		"listeners":                         "http://127.0.0.1:" + strconv.Itoa(c.connectPort),
		"offset.storage.file.filename":      filepath.Join(dir, "offsets"),
		"offset.flush.interval.ms":          "10000",
		"key.converter":                     "org.apache.kafka.connect.storage.StringConverter",
		"value.converter":                   "org.apache.kafka.connect.converters.ByteArrayConverter",
		"task.shutdown.graceful.timeout.ms": "10000",
	}
	password := u.Password
	if password == "" {
		password = "unused" // trust authentication; Debezium wants a value
	}
	connector := map[string]string{
		"name":                                    "ecst-outbox",
		"connector.class":                         "io.debezium.connector.postgresql.PostgresConnector",
		"tasks.max":                               "1",
		"database.hostname":                       u.Host,
		"database.port":                           strconv.Itoa(int(u.Port)),
		"database.user":                           u.User,
		"database.password":                       password,
		"database.dbname":                         u.Database,
		"topic.prefix":                            "ecstbench",
		"plugin.name":                             "pgoutput",
		"slot.name":                               s.slot(),
		"publication.name":                        s.publication(),
		"publication.autocreate.mode":             "disabled",
		"table.include.list":                      s.e.table,
		"snapshot.mode":                           "no_data",
		"binary.handling.mode":                    "bytes",
		"tombstones.on.delete":                    "false",
		"poll.interval.ms":                        strconv.FormatInt(s.poll.Milliseconds(), 10),
		"max.batch.size":                          strconv.Itoa(c.dbzBatch),
		"max.queue.size":                          strconv.Itoa(c.dbzBatch * 4),
		"key.converter":                           "org.apache.kafka.connect.storage.StringConverter",
		"value.converter":                         "org.apache.kafka.connect.converters.ByteArrayConverter",
		"transforms":                              "outbox",
		"transforms.outbox.type":                  "io.debezium.transforms.outbox.EventRouter",
		"transforms.outbox.table.field.event.id":  "id",
		"transforms.outbox.table.field.event.key": "key",
		"transforms.outbox.table.field.event.payload":         "value",
		"transforms.outbox.route.by.field":                    "topic",
		"transforms.outbox.route.topic.replacement":           "${routedByValue}",
		"transforms.outbox.table.fields.additional.placement": "headers:header:ecst-headers",
		// The router drops deletes (the relay's) and tombstones itself;
		// an update never happens to ecst's outbox, so one is an error.
		"transforms.outbox.table.op.invalid.behavior": "fatal",
		"topic.creation.default.replication.factor":   "-1",
		"topic.creation.default.partitions":           strconv.Itoa(c.partitions),
	}
	cn, err := startConnect(c.connectLibs, dir, c.connectPort, c.connectHeap, worker, connector)
	if err != nil {
		return nil, 0, err
	}
	t0 := time.Now()
	if err := cn.waitRunning(ctx, 3*time.Minute); err != nil {
		_ = cn.stop()
		return nil, 0, err
	}
	return cn, time.Since(t0), nil
}

func (s *debezium) start(ctx context.Context, _ string) (func() error, time.Duration, error) {
	cn, startup, err := s.launch(ctx)
	if err != nil {
		return nil, 0, err
	}
	return cn.stop, startup, nil
}

// drain times the connector's start-up (launch to task RUNNING) and then
// the drain (RUNNING to the topic's end offsets adding up to rows: Connect
// produces without transactions, so every offset is a record).
func (s *debezium) drain(ctx context.Context, topic string, rows int) (time.Duration, time.Duration, cpuUse, error) {
	cn, startup, err := s.launch(ctx)
	if err != nil {
		return 0, 0, cpuUse{}, err
	}
	fail := func(err error) (time.Duration, time.Duration, cpuUse, error) {
		_ = cn.stop()
		return 0, 0, cpuUse{}, err
	}
	c0, t0 := s.e.cpu.sample(), time.Now()
	lastCheck := t0
	for {
		n, err := bench.EndOffsets(ctx, s.e.adm, topic)
		if err != nil {
			return fail(err)
		}
		if n >= int64(rows) {
			d := time.Since(t0)
			cpu := s.e.cpu.since(c0, s.e.cpu.sample())
			return startup, d, cpu, cn.stop()
		}
		if time.Since(lastCheck) > time.Second {
			lastCheck = time.Now()
			if err := cn.failed(); err != nil {
				return fail(fmt.Errorf("after %d of %d records: %w", n, rows, err))
			}
		}
		select {
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
