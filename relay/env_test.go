package relay_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hamba/avro/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/internal/kafkatest"
	"github.com/ecst-io/ecst/internal/pgtest"
	"github.com/ecst-io/ecst/internal/testkit"
	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/relay"
	"github.com/ecst-io/ecst/schemas"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// env is one relay test's world (an ecsttest.World: a database with the
// customers table, a broker with the test's own topic, a registry, and a
// publisher), and what the relay's tests add to it: a load generator, a
// read of the whole topic, a check of the relay's guarantees, and the relay
// as a subprocess.
type env struct {
	t       *testing.T
	w       *ecsttest.World
	dbURL   string
	pool    *pgxpool.Pool
	broker  *kafkatest.Broker
	topic   string
	service string // unique per test: transactional ids must not collide
	pub     *producer.Publisher
	wal     bool // the WAL transport
}

// envOpts are what a relay test asks of its world.
type envOpts struct {
	dbURL       string // a database of the test's own choosing
	restartable bool
	shards      int
	sasl        bool // a broker that requires SASL (SCRAM-SHA-512)
	wal         bool // the WAL transport: the database switched, writers and relays on it
}

func (o envOpts) world() ecsttest.Options {
	return ecsttest.Options{DBURL: o.dbURL, Restartable: o.restartable, Shards: o.shards, SASL: o.sasl, WAL: o.wal}
}

// transports are the env options of the two outbox transports, for the
// tests that run in both.
func transports() []envOpts { return []envOpts{{}, {wal: true}} }

func (o envOpts) name() string {
	if o.wal {
		return "wal"
	}
	return "table"
}

// leading matches a relay process's log line when it has started to lead:
// it reads its shard, or streams the slot.
func (o envOpts) leading() string {
	if o.wal {
		return `"msg":"streaming the slot"`
	}
	return `"msg":"leading shard"`
}

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	w := ecsttest.New(t, o.world())
	w.Exec("CREATE SEQUENCE IF NOT EXISTS ver") // the load generator's versions
	return &env{t: t, w: w, dbURL: w.DBURL, pool: w.Pool, broker: w.Broker, topic: w.Topic, service: w.Service, pub: w.Pub, wal: o.wal}
}

// publisher is a Publisher of the env's entity, writing by transport t.
func (e *env) publisher(t outbox.Transport) *producer.Publisher {
	e.t.Helper()
	cfg := *e.w.Config
	cfg.Outbox.Transport = string(t)
	pub, err := producer.FromConfig(&cfg, e.w.Registry)
	if err != nil {
		e.t.Fatal(err)
	}
	return pub
}

func (e *env) transport() outbox.Transport {
	if e.wal {
		return outbox.TransportWAL
	}
	return outbox.TransportTable
}

// client is a Kafka client of the env's broker; the caller closes it.
func (e *env) client(opts ...kgo.Opt) *kgo.Client {
	e.t.Helper()
	return e.w.Client(opts...)
}

// relayConfig is the world's relay configuration, with the batch size and
// lease timeout the relay's tests are written for.
func (e *env) relayConfig() relay.Config {
	e.t.Helper()
	cfg := e.w.RelayConfig()
	cfg.BatchSize = 250
	cfg.LeaseTimeout = 2 * time.Second
	return cfg
}

// runRelay runs a relay in process until the test ends or stop is called.
func (e *env) runRelay(cfg relay.Config) (stop func() error) {
	e.t.Helper()
	return e.w.RunRelay(cfg)
}

// drain runs a relay in drain mode to completion.
func (e *env) drain() {
	e.t.Helper()
	e.w.DrainWith(e.relayConfig())
}

// caughtUp returns a check that the relay has published everything
// committed before caughtUp was called: no outbox row is pending, or (the
// database runs the WAL transport) the slot has confirmed the WAL position
// of that moment.
func (e *env) caughtUp() func() bool {
	e.t.Helper()
	if tr, err := outbox.DatabaseTransport(context.Background(), e.pool); err != nil {
		e.t.Fatal(err)
	} else if tr == outbox.TransportTable {
		return func() bool { return e.outboxCount() == 0 }
	}
	var target string
	if err := e.pool.QueryRow(context.Background(), "SELECT pg_current_wal_insert_lsn()::text").Scan(&target); err != nil {
		e.t.Fatal(err)
	}
	return func() bool {
		var done bool
		err := e.pool.QueryRow(context.Background(), "SELECT confirmed_flush_lsn >= $2::text::pg_lsn FROM pg_replication_slots WHERE slot_name = $1",
			relay.SlotName(e.service), target).Scan(&done)
		return err == nil && done
	}
}

// backlog is what waits to be published: pending outbox rows, or (the
// database runs the WAL transport) the bytes of WAL the slot has not
// confirmed.
func (e *env) backlog() int64 {
	e.t.Helper()
	if tr, err := outbox.DatabaseTransport(context.Background(), e.pool); err != nil {
		e.t.Fatal(err)
	} else if tr == outbox.TransportTable {
		return int64(e.outboxCount())
	}
	var n int64
	if err := e.pool.QueryRow(context.Background(), "SELECT (pg_current_wal_insert_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1",
		relay.SlotName(e.service)).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// published is a measure of what the relay has recorded published so far,
// growing as it goes: fewer pending outbox rows, or the slot's confirmed
// position.
func (e *env) published() int64 {
	e.t.Helper()
	ctx := context.Background()
	if !e.wal {
		n, err := outbox.PendingCount(ctx, e.pool, 0)
		if err != nil {
			e.t.Fatal(err)
		}
		return -n
	}
	var n int64
	err := e.pool.QueryRow(ctx, `SELECT coalesce((SELECT (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots WHERE slot_name = $1), 0)`,
		relay.SlotName(e.service)).Scan(&n)
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

// outboxCount counts the outbox rows not yet published.
func (e *env) outboxCount() int {
	e.t.Helper()
	return e.w.OutboxLen()
}

// --- the load generator ---

// event is one committed state change.
type event struct {
	key     string
	version int64
	deleted bool
}

// loadLog records what the load generator committed.
type loadLog struct {
	mu        sync.Mutex
	committed []event
	keys      map[string]bool
	ambiguous int // commits whose outcome is unknown (the connection broke)
}

func (l *loadLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.committed)
}

// runLoad writes concurrently to keys (a few hot) until ctx ends or target
// events have committed: upserts,
// and now and then a deletion, each in its own transaction that changes the
// customers row under its row lock and publishes the full state.
func (e *env) runLoad(ctx context.Context, writers, keys, target int) (*loadLog, func()) {
	log := &loadLog{keys: map[string]bool{}}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(w)))
			for ctx.Err() == nil && log.count() < target {
				var key string
				if rng.IntN(3) == 0 {
					key = fmt.Sprintf("hot-%d", rng.IntN(3))
				} else {
					key = fmt.Sprintf("k-%d", rng.IntN(keys))
				}
				ev, err := e.write(ctx, key, rng.IntN(10) == 0)
				switch {
				case err == nil && ev.key != "":
					log.mu.Lock()
					log.committed = append(log.committed, ev)
					log.keys[key] = true
					log.mu.Unlock()
				case err != nil && isAmbiguous(err):
					log.mu.Lock()
					log.ambiguous++
					log.keys[key] = true
					log.mu.Unlock()
				case err != nil && ctx.Err() == nil:
					time.Sleep(20 * time.Millisecond) // the database is restarting: try again
				}
			}
		}()
	}
	return log, wg.Wait
}

// startLoad runs the load generator until stop is called (or target events
// have committed); stop ends it and waits for the writers.
func (e *env) startLoad(writers, keys, target int) (log *loadLog, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	log, wait := e.runLoad(ctx, writers, keys, target)
	stop = func() {
		cancel()
		wait()
	}
	e.t.Cleanup(stop)
	return log, stop
}

// isAmbiguous: a commit that failed in a way that does not say whether it
// happened.
func isAmbiguous(err error) bool {
	var ce *commitError
	return errors.As(err, &ce)
}

type commitError struct{ err error }

func (c *commitError) Error() string { return "commit: " + c.err.Error() }

func (e *env) write(ctx context.Context, key string, del bool) (event, error) {
	return e.writeWith(ctx, e.pub, key, del)
}

// writeWith is write with a Publisher of the test's choosing.
func (e *env) writeWith(ctx context.Context, pub *producer.Publisher, key string, del bool) (event, error) {
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		return event{}, err
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck
	// Writers of one key take turns, so that its versions follow commit
	// order, which the order checks compare the topic with. The row lock
	// alone does not give that: an INSERT draws its version (VALUES'
	// nextval) before it waits on a concurrent DELETE of the key, and then
	// commits after it with the lower version. (A lock space of its own:
	// one bigint, where the outbox key lock takes two ints.)
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended('writer:' || $1, 0))", key); err != nil {
		return event{}, err
	}
	var ev event
	if del {
		var v int64
		err := tx.QueryRow(ctx, "DELETE FROM customers WHERE id = $1 RETURNING nextval('ver')", key).Scan(&v)
		if errors.Is(err, pgx.ErrNoRows) {
			return event{}, nil
		}
		if err != nil {
			return event{}, err
		}
		if err := pub.Delete(ctx, tx, "customer", key, v); err != nil {
			return event{}, err
		}
		ev = event{key: key, version: v, deleted: true}
	} else {
		var v int64
		var at time.Time
		err := tx.QueryRow(ctx, `INSERT INTO customers (id, version, name, email) VALUES ($1, nextval('ver'), 'n', 'e')
			ON CONFLICT (id) DO UPDATE SET version = nextval('ver'), updated_at = now()
			RETURNING version, updated_at`, key).Scan(&v, &at)
		if err != nil {
			return event{}, err
		}
		state := map[string]any{"id": key, "version": v, "name": "n" + strconv.FormatInt(v, 10), "email": "e", "tier": nil, "updated_at": at}
		if err := pub.Publish(ctx, tx, "customer", key, v, state); err != nil {
			return event{}, err
		}
		ev = event{key: key, version: v}
	}
	if err := tx.Commit(ctx); err != nil {
		if ctx.Err() != nil {
			return event{}, err
		}
		return event{}, &commitError{err}
	}
	return ev, nil
}

// --- reading the topic back ---

type topicRecord struct {
	partition int32
	offset    int64
	key       string
	value     []byte
	headers   map[string]string
}

// readTopic reads every committed record of the topic. To know where the
// end is without guessing from offsets (transaction markers take offsets
// too), it first appends a sentinel record to every partition, then reads
// with read_committed until it has seen all of them.
func (e *env) readTopic() []topicRecord {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sentinel := "__end__" + uuid.NewString()
	prod := e.client(kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for p := range int32(e.w.Partitions) {
		if err := prod.ProduceSync(ctx, &kgo.Record{Topic: e.topic, Partition: p, Key: []byte(sentinel)}).FirstErr(); err != nil {
			e.t.Fatalf("sentinel: %v", err)
		}
	}
	prod.Close()
	cons := e.client(kgo.ConsumeTopics(e.topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	defer cons.Close()
	var out []topicRecord
	seen := 0
	for seen < e.w.Partitions {
		fs := cons.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			e.t.Fatalf("read topic: %v", err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if string(r.Key) == sentinel {
				seen++
				return
			}
			if strings.HasPrefix(string(r.Key), "__end__") {
				return // an earlier read's sentinel
			}
			h := map[string]string{}
			for _, x := range r.Headers {
				h[x.Key] = string(x.Value)
			}
			out = append(out, topicRecord{partition: r.Partition, offset: r.Offset, key: string(r.Key), value: r.Value, headers: h})
		})
	}
	return out
}

// report is what a check of the topic against the source found.
type report struct {
	records, duplicates, keys int
}

// check asserts the relay's guarantees: every committed event reached the
// topic at least once; for every key the last record is the newest
// committed state (a tombstone for a deleted key); every record carries the
// wire contract. It returns counts for the log.
func (e *env) check(log *loadLog) report {
	e.t.Helper()
	ctx := context.Background()
	recs := e.readTopic()
	last := map[string]topicRecord{}
	seen := map[string]int{}
	for _, r := range recs {
		e.checkContract(r)
		last[r.key] = r // partitions are read in offset order, and a key has one partition
		seen[r.key+"@"+r.headers[producer.HeaderEntityVersion]]++
	}
	rep := report{records: len(recs), keys: len(last)}
	for _, n := range seen {
		rep.duplicates += n - 1
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	var missing []event
	for _, ev := range log.committed {
		if seen[ev.key+"@"+strconv.FormatInt(ev.version, 10)] == 0 {
			e.t.Errorf("committed event %s v%d (deleted=%v) never reached the topic", ev.key, ev.version, ev.deleted)
			missing = append(missing, ev)
		}
	}
	if len(missing) > 0 {
		e.explainMissing(missing)
	}
	rows, err := e.pool.Query(ctx, "SELECT id, version FROM customers")
	if err != nil {
		e.t.Fatal(err)
	}
	truth := map[string]int64{}
	var k string
	var v int64
	if _, err := pgx.ForEachRow(rows, []any{&k, &v}, func() error { truth[k] = v; return nil }); err != nil {
		e.t.Fatal(err)
	}
	for key := range log.keys {
		l, ok := last[key]
		want, exists := truth[key]
		switch {
		case !ok && exists:
			e.t.Errorf("key %s (v%d in the source) has no record in the topic", key, want)
		case !ok:
			// Never committed (an ambiguous commit that did not happen).
		case exists && (l.value == nil || l.headers[producer.HeaderEntityVersion] != strconv.FormatInt(want, 10)):
			e.t.Errorf("key %s: last record is v%s (tombstone=%v), the source has v%d", key, l.headers[producer.HeaderEntityVersion], l.value == nil, want)
		case !exists && l.value != nil:
			e.t.Errorf("key %s is deleted in the source, but its last record is v%s, not a tombstone", key, l.headers[producer.HeaderEntityVersion])
		}
	}
	return rep
}

// explainMissing says where the events a read_committed read did not see
// are: in the log (with the producer id and epoch of their batch, so that
// a transaction aborted or a read gone wrong can be told apart) or not
// written at all.
func (e *env) explainMissing(missing []event) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	adm := kadm.NewClient(e.client())
	defer adm.Close()
	ends, err := adm.ListEndOffsets(ctx, e.topic)
	if err != nil {
		e.t.Logf("explain: list end offsets: %v", err)
		return
	}
	want := map[string]bool{}
	for _, ev := range missing {
		want[ev.key+"@"+strconv.FormatInt(ev.version, 10)] = true
	}
	cons := e.client(kgo.ConsumeTopics(e.topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadUncommitted()))
	defer cons.Close()
	found := 0
	// Read until a poll brings nothing for 3 s: control records, which end
	// a partition, never reach a consumer, so offsets cannot say when.
	for ctx.Err() == nil {
		pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
		fs := cons.PollFetches(pctx)
		pcancel()
		if fs.NumRecords() == 0 {
			break
		}
		fs.EachRecord(func(r *kgo.Record) {
			var v string
			for _, h := range r.Headers {
				if h.Key == producer.HeaderEntityVersion {
					v = string(h.Value)
				}
			}
			if want[string(r.Key)+"@"+v] {
				found++
				e.t.Logf("explain: %s v%s is in the log at %d/%d, producer %d epoch %d, written %s",
					r.Key, v, r.Partition, r.Offset, r.ProducerID, r.ProducerEpoch, r.Timestamp.Format(time.RFC3339Nano))
			}
		})
	}
	e.t.Logf("explain: %d of the %d missing events are in the log (read uncommitted); end offsets %v", found, len(missing), ends)
}

func (e *env) checkContract(r topicRecord) {
	e.t.Helper()
	h := r.headers
	if _, err := uuid.Parse(h[producer.HeaderEventID]); err != nil {
		e.t.Errorf("record %d/%d: bad event id %q", r.partition, r.offset, h[producer.HeaderEventID])
	}
	if _, err := time.Parse(time.RFC3339Nano, h[producer.HeaderOccurredAt]); err != nil {
		e.t.Errorf("record %d/%d: bad occurred-at %q", r.partition, r.offset, h[producer.HeaderOccurredAt])
	}
	if h[producer.HeaderSource] != e.service {
		e.t.Errorf("record %d/%d: source %q", r.partition, r.offset, h[producer.HeaderSource])
	}
	wantType := "customer.upserted"
	if r.value == nil {
		wantType = "customer.deleted"
	}
	if h[producer.HeaderEventType] != wantType {
		e.t.Errorf("record %d/%d: event type %q, want %q", r.partition, r.offset, h[producer.HeaderEventType], wantType)
	}
	if r.value == nil {
		return
	}
	id, payload, err := schemas.DecodeWire(r.value)
	if err != nil || id != e.w.SchemaID {
		e.t.Errorf("record %d/%d: wire format id %d, err %v", r.partition, r.offset, id, err)
		return
	}
	var c map[string]any
	if err := avro.Unmarshal(e.w.Schema, payload, &c); err != nil {
		e.t.Errorf("record %d/%d: value does not decode: %v", r.partition, r.offset, err)
		return
	}
	if fmt.Sprint(c["version"]) != h[producer.HeaderEntityVersion] || c["id"] != r.key {
		e.t.Errorf("record %d/%d: value %v disagrees with key %s / version header %s", r.partition, r.offset, c, r.key, h[producer.HeaderEntityVersion])
	}
}

// --- the relay as a subprocess ---

var buildOnce struct {
	sync.Once
	path string
	err  error
}

// ecstBinary builds cmd/ecst once per test binary.
func ecstBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ecst-bin-")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.path = filepath.Join(dir, "ecst")
		out, err := exec.Command("go", "build", "-o", buildOnce.path, "../cmd/ecst").CombinedOutput()
		if err != nil {
			buildOnce.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildOnce.err != nil {
		t.Fatal(buildOnce.err)
	}
	return buildOnce.path
}

// relayProc is `ecst relay` running as a child process.
type relayProc struct {
	cmd    *exec.Cmd
	out    *testkit.Buffer
	exited chan struct{}
}

// startRelayProc starts `ecst relay` on this env with an ecst.yaml of its own.
func (e *env) startRelayProc(extraArgs ...string) *relayProc {
	e.t.Helper()
	cfgPath := e.w.WriteConfig(e.t.TempDir(), "relay: {batch_size: 250, poll_min: 1ms, poll_max: 20ms, lease_timeout: 2s, wal_heartbeat: 200ms}\n")
	args := append([]string{"--config", cfgPath, "--log-format", "json", "relay"}, extraArgs...)
	cmd := exec.Command(ecstBinary(e.t), args...)
	cmd.Env = os.Environ()
	for k, v := range e.w.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &relayProc{cmd: cmd, out: &testkit.Buffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	e.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if e.t.Failed() {
			e.t.Logf("relay pid %d output:\n%s", cmd.Process.Pid, p.out.String())
		}
	})
	return p
}

// waitLog waits until the process has logged a line matching re.
func (p *relayProc) waitLog(t *testing.T, re string, timeout time.Duration) time.Time {
	t.Helper()
	rx := regexp.MustCompile(re)
	wait.Eventually(t, timeout, fmt.Sprintf("the relay to log %q", re), func() bool {
		select {
		case <-p.exited:
			t.Fatalf("relay exited before logging %q:\n%s", re, p.out.String())
		default:
		}
		return rx.MatchString(p.out.String())
	})
	return time.Now()
}
