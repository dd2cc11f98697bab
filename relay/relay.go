package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
	"github.com/twmb/franz-go/plugin/kslog"

	"github.com/ecst-io/ecst/internal/wait"
)

// RejectPolicy is what the relay does with a record the broker rejects for
// good.
type RejectPolicy string

// Reject policies.
const (
	// RejectHalt stops the relay with an error naming the row: nothing is
	// published past it until an operator acts.
	RejectHalt RejectPolicy = "halt"
	// RejectPark moves the row to ecst.outbox_parked, counts it and goes on.
	// A later full state of the key supersedes it.
	RejectPark RejectPolicy = "park"
)

// RelayConfig configures a Relay.
type RelayConfig struct {
	// Pool reads and deletes outbox rows.
	Pool *pgxpool.Pool
	// KafkaOpts carry seed brokers, TLS and SASL (config.Kafka.ClientOpts).
	KafkaOpts []kgo.Opt
	// Service names the transactional ids, ecst-relay.<service>.<shard>:
	// two outboxes must never share one, or their relays fence each other.
	Service string
	// TotalShards is outbox.shards.
	TotalShards int
	// Shards are the shards this process serves; empty means all.
	Shards []int
	// Topics are checked to exist before anything is published.
	Topics []string

	BatchSize    int
	BatchBytes   int
	PollMin      time.Duration
	PollMax      time.Duration
	LeaseTimeout time.Duration
	OnReject     RejectPolicy
	// Drain publishes what is in the outbox, then returns.
	Drain bool
	// ShutdownGrace bounds how long a stopping relay spends finishing the
	// batch in flight before it abandons it (the rows stay in the outbox).
	ShutdownGrace time.Duration

	Logger  *slog.Logger
	Metrics *RelayMetrics

	// Test hooks, set through export_test.go.
	noFencing     bool
	readAheadByID bool
	beforeProduce func(shard int, ids []int64)
}

// Relay publishes outbox rows to Kafka: per shard, one leader reads
// committed rows in id order, produces them in one Kafka transaction, and
// deletes them once the transaction commits.
type Relay struct {
	cfg     RelayConfig
	log     *slog.Logger
	m       *RelayMetrics
	lockCfg *pgx.ConnConfig
	ready   atomic.Bool

	mu     sync.Mutex // guards counts
	counts Counts
}

// Counts are the records a relay has dealt with since it was created, by
// topic.
type Counts struct {
	// Published are records committed to Kafka.
	Published map[string]int64
	// Parked are records the broker rejected for good, moved to
	// ecst.outbox_parked (RejectPark).
	Parked map[string]int64
}

// Total sums a count over its topics.
func Total(byTopic map[string]int64) int64 {
	var n int64
	for _, c := range byTopic {
		n += c
	}
	return n
}

// Counts returns what the relay has published and parked so far. It may be
// called while the relay runs; `ecst relay --drain` prints it at the end.
func (r *Relay) Counts() Counts {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Counts{Published: maps.Clone(r.counts.Published), Parked: maps.Clone(r.counts.Parked)}
}

// add counts records published and parked, by topic.
func (r *Relay) add(published, parked map[string]int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for t, n := range published {
		r.counts.Published[t] += n
	}
	for t, n := range parked {
		r.counts.Parked[t] += n
	}
}

// Errors callers branch on.
var (
	// ErrTopicMissing: a topic does not exist and must be created.
	ErrTopicMissing = errors.New("topic does not exist: create it with `ecst topics apply`")
	// errLeaseLost ends a leadership term.
	errLeaseLost = errors.New("leader lease lost")
)

// RejectedError is a record the broker rejected for good under RejectHalt.
type RejectedError struct {
	ID    int64
	Topic string
	Key   string
	Err   error
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("the broker rejected outbox row %d (topic %s, key %q) for good: %v; fix the cause (for a record too large, raise the topic's max.message.bytes) or run the relay with relay.on_reject: park to set it aside", e.ID, e.Topic, e.Key, e.Err)
}

func (e *RejectedError) Unwrap() error { return e.Err }

// NewRelay validates cfg and fills defaults.
func NewRelay(cfg RelayConfig) (*Relay, error) {
	if cfg.Pool == nil {
		return nil, errors.New("relay: a database pool is required")
	}
	if cfg.Service == "" {
		return nil, errors.New("relay: service is required; it names the relay's Kafka transactional ids (service in ecst.yaml or ECST_SERVICE)")
	}
	if cfg.TotalShards <= 0 {
		cfg.TotalShards = 1
	}
	if len(cfg.Shards) == 0 {
		for s := range cfg.TotalShards {
			cfg.Shards = append(cfg.Shards, s)
		}
	}
	for _, s := range cfg.Shards {
		if s < 0 || s >= cfg.TotalShards {
			return nil, fmt.Errorf("relay: shard %d is outside 0..%d (outbox.shards is %d)", s, cfg.TotalShards-1, cfg.TotalShards)
		}
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 2000
	}
	if cfg.BatchBytes <= 0 {
		cfg.BatchBytes = 16 << 20
	}
	if cfg.PollMin <= 0 {
		cfg.PollMin = 5 * time.Millisecond
	}
	if cfg.PollMax < cfg.PollMin {
		cfg.PollMax = max(cfg.PollMin, 500*time.Millisecond)
	}
	if cfg.LeaseTimeout <= 0 {
		cfg.LeaseTimeout = 3 * time.Second
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 10 * time.Second
	}
	switch cfg.OnReject {
	case "":
		cfg.OnReject = RejectHalt
	case RejectHalt, RejectPark:
	default:
		return nil, fmt.Errorf("relay: on_reject %q is not halt or park", cfg.OnReject)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewRelayMetrics(nil)
	}
	lockCfg := cfg.Pool.Config().ConnConfig.Copy()
	// A leader's session ends when it stops heartbeating (a paused or
	// partitioned process), which frees its lock for a standby.
	lockCfg.RuntimeParams["idle_session_timeout"] = strconv.FormatInt(cfg.LeaseTimeout.Milliseconds(), 10)
	lockCfg.RuntimeParams["application_name"] = "ecst-relay-lock"
	return &Relay{cfg: cfg, log: cfg.Logger, m: cfg.Metrics, lockCfg: lockCfg,
		counts: Counts{Published: map[string]int64{}, Parked: map[string]int64{}}}, nil
}

// Ready reports whether the start-up checks passed and the relay is
// running: what /readyz serves.
func (r *Relay) Ready() bool { return r.ready.Load() }

// Run relays until ctx is done (or, with Drain, until the outbox is empty)
// and returns nil, or returns the first fatal error: a missing topic, a
// record rejected under RejectHalt, a configuration the broker refuses.
// Transient database and broker errors are retried with backoff.
func (r *Relay) Run(ctx context.Context) error {
	if err := CheckMigrated(ctx, r.cfg.Pool); err != nil {
		return err
	}
	if err := r.checkTopics(ctx); err != nil {
		return err
	}
	r.ready.Store(true)
	defer r.ready.Store(false)

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	var first atomic.Pointer[error]
	for _, shard := range r.cfg.Shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.runShard(ctx, shard); err != nil {
				if first.CompareAndSwap(nil, &err) {
					cancel(err)
				}
			}
		}()
	}
	wg.Wait()
	if p := first.Load(); p != nil {
		return *p
	}
	return nil
}

func (r *Relay) checkTopics(ctx context.Context) error {
	if len(r.cfg.Topics) == 0 {
		return nil
	}
	// A topic created a moment ago can still be unknown to the broker that
	// answers; one still unknown after the grace is missing.
	deadline := time.Now().Add(topicGrace)
	for {
		missing, err := r.missingTopics(ctx)
		if err != nil || len(missing) == 0 {
			return err
		}
		if time.Now().After(deadline) || !wait.Sleep(ctx, 250*time.Millisecond) {
			return fmt.Errorf("%w: %v", ErrTopicMissing, missing)
		}
	}
}

// topicGrace is how long a topic may be unknown at start before it counts
// as missing.
const topicGrace = 5 * time.Second

// missingTopics lists the configured topics the cluster does not know. It
// uses a client of its own each time: kgo caches metadata, and a cached
// "unknown topic" would outlive the topic's creation.
func (r *Relay) missingTopics(ctx context.Context) ([]string, error) {
	cl, err := kgo.NewClient(r.cfg.KafkaOpts...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	details, err := kadm.NewClient(cl).ListTopics(cctx, r.cfg.Topics...)
	if err != nil {
		return nil, fmt.Errorf("connect to Kafka: %w (check ECST_BROKERS, TLS and SASL settings)", explainKafka(err))
	}
	var missing []string
	for _, t := range r.cfg.Topics {
		if d, ok := details[t]; !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
			missing = append(missing, t)
		} else if d.Err != nil {
			return nil, fmt.Errorf("describe topic %s: %w", t, explainKafka(d.Err))
		}
	}
	return missing, nil
}

// runShard alternates between standing by for the shard's lock and leading
// it, until ctx ends or a fatal error.
func (r *Relay) runShard(ctx context.Context, shard int) error {
	log := r.log.With("shard", shard)
	bo := backoff{min: 100 * time.Millisecond, max: 10 * time.Second}
	for ctx.Err() == nil {
		lock, drained, err := r.acquire(ctx, shard)
		if drained {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			r.m.errors.WithLabelValues("database").Inc()
			log.Warn("standby: cannot reach the database", "err", err)
			bo.sleep(ctx)
			continue
		}
		log.Info("leading shard")
		r.m.leader.WithLabelValues(strconv.Itoa(shard)).Set(1)
		done, err := r.lead(ctx, shard, lock, log) // closes lock
		r.m.leader.WithLabelValues(strconv.Itoa(shard)).Set(0)
		switch {
		case done:
			return nil
		case errors.Is(err, errLeaseLost):
			r.m.errors.WithLabelValues("lease_lost").Inc()
			log.Warn("lost the shard's lease; standing by", "err", err)
		case err != nil && ctx.Err() == nil:
			return err
		}
	}
	return nil
}

// Two-int4 advisory lock space (never colliding with the bigint key locks):
// class "ecst", object 100 + shard.
const relayLockBase = 100

// acquire waits for the shard's leader lock on a dedicated connection. In
// drain mode it gives up, reporting drained, once another leader has
// emptied the shard.
func (r *Relay) acquire(ctx context.Context, shard int) (*pgx.Conn, bool, error) {
	conn, err := pgx.ConnectConfig(ctx, r.lockCfg)
	if err != nil {
		return nil, false, fmt.Errorf("connect for the leader lock: %w", err)
	}
	tick := min(time.Second, r.cfg.LeaseTimeout/3)
	for {
		var got bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1, $2)", migrateLockClass, relayLockBase+shard).Scan(&got); err != nil {
			conn.Close(context.Background())
			return nil, false, fmt.Errorf("take the leader lock: %w", err)
		}
		if got {
			return conn, false, nil
		}
		if r.cfg.Drain {
			var n int64
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM ecst.outbox WHERE shard = $1", shard).Scan(&n); err == nil && n == 0 {
				conn.Close(context.Background())
				return nil, true, nil
			}
		}
		select {
		case <-ctx.Done():
			conn.Close(context.Background())
			return nil, false, ctx.Err()
		case <-time.After(tick):
		}
	}
}

// lease is the leader's lock session. pgx connections are not safe for
// concurrent use, and both the heartbeat and the term use it.
type lease struct {
	mu   sync.Mutex
	conn *pgx.Conn
}

// check proves the session, and so the lock, is still held.
func (l *lease) check(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.conn.Exec(ctx, "SELECT 1"); err != nil {
		return fmt.Errorf("%w: %v", errLeaseLost, err)
	}
	return nil
}

// record is an outbox row on its way to Kafka.
type record struct {
	id        int64
	topic     string
	key       string
	value     []byte
	headers   []byte
	createdAt time.Time
}

// lead runs one leadership term: read, produce in a Kafka transaction,
// delete on commit. It returns done in drain mode once the shard is empty.
func (r *Relay) lead(ctx context.Context, shard int, lock *pgx.Conn, log *slog.Logger) (done bool, err error) {
	// The term ends when the lease goes (the heartbeat fails) or ctx ends.
	// Its goroutines are waited for before the lock connection closes:
	// a pgx connection must never be closed while another goroutine uses it.
	term, endTerm := context.WithCancelCause(ctx)
	ls := &lease{conn: lock}
	var bg sync.WaitGroup
	defer func() {
		endTerm(nil)
		bg.Wait()
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		lock.Close(cctx)
	}()
	bg.Add(2)
	go func() { defer bg.Done(); r.heartbeat(term, ls, endTerm) }()
	go func() { defer bg.Done(); r.sampleBacklog(term, shard) }()

	p, err := r.startProducer(term, shard, ls, log)
	if err != nil {
		return false, err
	}
	defer func() {
		if p != nil {
			p.close()
		}
	}()

	var acked []int64
	defer func() {
		// Whatever ends the term, rows Kafka has committed are deleted, so
		// that the next leader does not publish them again.
		if len(acked) > 0 {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.ShutdownGrace)
			defer cancel()
			if _, err := r.cfg.Pool.Exec(dctx, "DELETE FROM ecst.outbox WHERE shard = $1 AND id = ANY($2)", shard, acked); err != nil {
				log.Warn("could not delete published rows; the next leader will publish them again", "rows", len(acked), "err", err)
			}
		}
	}()

	bo := backoff{min: 100 * time.Millisecond, max: 10 * time.Second}
	poll := r.cfg.PollMin
	// next is the batch read ahead while the previous one was in flight,
	// and when that read started.
	var next []record
	var nextStart time.Time
	for {
		if term.Err() != nil {
			return false, leaseOrNil(term)
		}
		rows, start := next, nextStart
		next = nil
		if rows == nil {
			start = time.Now()
			var err error
			rows, err = r.deleteAndRead(term, int16(shard), acked, nil) //nolint:gosec // shard < MaxShards
			if err != nil {
				if term.Err() != nil {
					return false, leaseOrNil(term)
				}
				r.m.errors.WithLabelValues("database").Inc()
				r.m.retries.Inc()
				log.Warn("read outbox; retrying", "err", err)
				bo.sleep(term)
				continue
			}
			acked = nil
			if len(rows) == 0 {
				if r.cfg.Drain {
					return true, nil
				}
				wait.Sleep(term, poll)
				poll = min(poll*2, r.cfg.PollMax)
				continue
			}
		}
		poll = r.cfg.PollMin
		if r.cfg.beforeProduce != nil {
			r.cfg.beforeProduce(shard, ids(rows))
		}
		// A batch in flight is finished even when the relay is told to
		// stop, within ShutdownGrace; a lost lease abandons it at once
		// (fencing makes its commit fail anyway).
		pctx, cancel := context.WithTimeout(context.WithoutCancel(term), r.cfg.ShutdownGrace)
		stopOnLease := context.AfterFunc(term, func() {
			if errors.Is(context.Cause(term), errLeaseLost) {
				cancel()
			}
		})
		type result struct {
			rejected []*RejectedError
			err      error
		}
		published, acks := make(chan result, 1), make(chan struct{})
		go func() {
			rejected, err := p.publish(pctx, rows, acks)
			published <- result{rejected, err}
		}()
		// While the batch commits, delete the last committed one and read
		// the next: the head of the shard minus the rows in flight. The
		// read waits for the batch's acks so that it takes in the rows
		// that committed while the batch was being produced. It is used
		// only if the batch commits; see "Pipelining" in
		// docs/architecture.md for why this keeps per-key order.
		select {
		case <-acks:
		case res := <-published:
			published <- res
		}
		aheadStart := time.Now()
		ahead, aheadErr := r.deleteAndRead(term, int16(shard), acked, rows) //nolint:gosec // shard < MaxShards
		if aheadErr == nil {
			acked = nil
		}
		res := <-published
		stopOnLease()
		cancel()
		rejected, err := res.rejected, res.err
		if err == nil {
			acked = append(acked, ids(rows)...)
			r.m.observeBatch(rows, time.Since(start))
			published := map[string]int64{}
			for _, rec := range rows {
				published[rec.topic]++
			}
			r.add(published, nil)
			bo.reset()
			if aheadErr == nil && len(ahead) > 0 {
				next, nextStart = ahead, aheadStart
			}
			continue
		}
		// The batch failed: what was read ahead is dropped, and the next
		// read starts from the head again.
		if len(rejected) > 0 {
			if r.cfg.OnReject == RejectHalt {
				return false, rejected[0]
			}
			if err := r.park(term, rejected); err != nil {
				log.Warn("park rejected rows; retrying", "err", err)
				bo.sleep(term)
			}
			continue
		}
		kind, fatal := classifyKafka(err)
		r.m.errors.WithLabelValues(kind).Inc()
		if fatal != nil {
			return false, fatal
		}
		if kind == "fenced" {
			// Another leader took over: this term is over.
			return false, fmt.Errorf("%w: fenced by a newer leader: %v", errLeaseLost, err)
		}
		r.m.retries.Inc()
		log.Warn("publish batch; retrying", "rows", len(rows), "kind", kind, "err", err)
		// The producer may be in a state only a fresh one recovers from;
		// a new InitProducerID also fences anything of ours still pending.
		p.close()
		p = nil
		bo.sleep(term)
		if p, err = r.startProducer(term, shard, ls, log); err != nil {
			return false, err
		}
	}
}

// startProducer creates the term's producer, initializes its producer id
// (bumping the epoch, which fences any earlier holder of the transactional
// id), and only then checks that the lease is still held. That order is
// what makes fencing sound: if the check passes, no newer leader had the
// lock when our epoch was drawn, so any newer leader draws a higher epoch
// and fences us. Initializing lazily, at the first produce, would let a
// leader that stalled before its first batch wake up and fence its
// successor instead.
func (r *Relay) startProducer(term context.Context, shard int, ls *lease, log *slog.Logger) (*producer, error) {
	bo := backoff{min: 100 * time.Millisecond, max: 10 * time.Second}
	for {
		p, err := r.newProducer(shard, log)
		if err != nil {
			return nil, err
		}
		ictx, cancel := context.WithTimeout(term, 30*time.Second)
		_, _, err = p.cl.ProducerID(ictx)
		cancel()
		if err == nil {
			if err := ls.check(term); err != nil {
				p.close()
				return nil, err
			}
			return p, nil
		}
		p.cl.Close()
		if term.Err() != nil {
			return nil, leaseOrNil(term)
		}
		kind, fatal := classifyKafka(err)
		r.m.errors.WithLabelValues(kind).Inc()
		if fatal != nil {
			return nil, fatal
		}
		log.Warn("initialize the Kafka producer; retrying", "kind", kind, "err", err)
		bo.sleep(term)
	}
}

func leaseOrNil(term context.Context) error {
	if c := context.Cause(term); errors.Is(c, errLeaseLost) {
		return c
	}
	return nil
}

// heartbeat keeps the leader's session busy, and ends the term when the
// session is gone (the database restarted, or idle_session_timeout fired
// while this process was paused).
func (r *Relay) heartbeat(term context.Context, ls *lease, endTerm context.CancelCauseFunc) {
	every := r.cfg.LeaseTimeout / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-term.Done():
			return
		case <-t.C:
			hctx, cancel := context.WithTimeout(term, every)
			err := ls.check(hctx)
			cancel()
			if err != nil && term.Err() == nil {
				endTerm(err)
				return
			}
		}
	}
}

func (r *Relay) sampleBacklog(term context.Context, shard int) {
	label := strconv.Itoa(shard)
	for {
		var n int64
		var age float64
		err := r.cfg.Pool.QueryRow(term, `SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
			FROM ecst.outbox WHERE shard = $1`, shard).Scan(&n, &age)
		if err == nil {
			r.m.backlog.WithLabelValues(label).Set(float64(n))
			r.m.oldest.WithLabelValues(label).Set(age)
			r.refreshStats(term, n)
		}
		if !wait.Sleep(term, 5*time.Second) {
			return
		}
	}
}

// refreshStats analyzes the outbox when the planner's idea of its size
// lags far behind its backlog. Right after a burst (a big republish, a
// relay that was down) autovacuum has not analyzed it yet; the planner then
// takes a table of a million rows for a few pages and scans and sorts the
// whole shard for every batch, halving the drain. ANALYZE samples a fixed
// number of rows and blocks no writer; a role that does not own the table
// gets a warning from PostgreSQL, not an error, and autovacuum catches up
// in its own time.
func (r *Relay) refreshStats(ctx context.Context, backlog int64) {
	if backlog < 10_000 {
		return
	}
	var tuples float64
	if err := r.cfg.Pool.QueryRow(ctx, `SELECT reltuples FROM pg_class WHERE oid = 'ecst.outbox'::regclass`).Scan(&tuples); err != nil {
		return
	}
	if tuples >= float64(backlog)/4 {
		return
	}
	start := time.Now()
	if _, err := r.cfg.Pool.Exec(ctx, `ANALYZE ecst.outbox`); err != nil {
		r.log.Debug("could not analyze ecst.outbox", "error", err)
		return
	}
	r.log.Info("analyzed ecst.outbox: its statistics lagged behind the backlog", "backlog", backlog,
		"estimated_rows", int64(max(tuples, 0)), "took", time.Since(start).Round(time.Millisecond))
}

// readAheadSQL reads the head of shard $1 minus the ids in $3, $2 rows.
const readAheadSQL = `SELECT id, topic, key, value, headers, created_at FROM ecst.outbox WHERE shard = $1 AND id <> ALL($3) ORDER BY id LIMIT $2`

// deleteAndRead deletes the rows of the last committed batch and reads the
// next one in one round trip. The two statements share an implicit
// transaction, and the SELECT's snapshot sees the DELETE, so there is no
// cursor: the next batch is simply the head of the queue, including any
// row that committed late with a lower id. The rows of a batch still in
// flight (inFlight) are the only ones passed over.
func (r *Relay) deleteAndRead(ctx context.Context, shard int16, acked []int64, inFlight []record) ([]record, error) {
	b := &pgx.Batch{}
	if len(acked) > 0 {
		// The id range, redundant with the list, keeps the plan on the
		// primary key whatever the table's statistics say: right after a
		// burst (a big republish) they still describe an empty table, and
		// the list alone then gets a sequential scan per batch.
		lo, hi := slices.Min(acked), slices.Max(acked)
		b.Queue("DELETE FROM ecst.outbox WHERE shard = $1 AND id BETWEEN $3 AND $4 AND id = ANY($2)", shard, acked, lo, hi)
	}
	const cols = "SELECT id, topic, key, value, headers, created_at FROM ecst.outbox "
	switch {
	case len(inFlight) == 0:
		b.Queue(cols+"WHERE shard = $1 ORDER BY id LIMIT $2", shard, r.cfg.BatchSize)
	case r.cfg.readAheadByID:
		b.Queue(cols+"WHERE shard = $1 AND id > $3 ORDER BY id LIMIT $2", shard, r.cfg.BatchSize, inFlight[len(inFlight)-1].id)
	default:
		// The head minus the batch in flight. Its plan walks the primary
		// key as long as the statistics know the backlog (refreshStats).
		// (Reading the head one batch longer in a subquery and leaving the
		// batch out was tried: a plan that ignores statistics, but 0.6× the
		// drain rate in the normal case.)
		b.Queue(readAheadSQL, shard, r.cfg.BatchSize, ids(inFlight))
	}
	br := r.cfg.Pool.SendBatch(ctx, b)
	defer br.Close()
	if len(acked) > 0 {
		if _, err := br.Exec(); err != nil {
			return nil, fmt.Errorf("delete published rows: %w", err)
		}
	}
	rows, err := br.Query()
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	var out []record
	var rec record
	size := 0
	_, err = pgx.ForEachRow(rows, []any{&rec.id, &rec.topic, &rec.key, &rec.value, &rec.headers, &rec.createdAt}, func() error {
		size += len(rec.value) + len(rec.headers) + len(rec.key)
		// Keep at least one row; stop before the batch outgrows its cap.
		// The rest is the head of the next read.
		if len(out) > 0 && size > r.cfg.BatchBytes {
			return nil
		}
		out = append(out, rec)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	if err := br.Close(); err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	return out, nil
}

// park moves rejected rows to ecst.outbox_parked in one transaction.
func (r *Relay) park(ctx context.Context, rejected []*RejectedError) error {
	parked := map[string]int64{}
	err := pgx.BeginFunc(ctx, r.cfg.Pool, func(tx pgx.Tx) error {
		for _, rej := range rejected {
			tag, err := tx.Exec(ctx, `WITH moved AS (DELETE FROM ecst.outbox WHERE id = $1 RETURNING *)
				INSERT INTO ecst.outbox_parked (id, shard, topic, key, value, headers, created_at, error)
				SELECT id, shard, topic, key, value, headers, created_at, $2 FROM moved
				ON CONFLICT (id) DO NOTHING`, rej.ID, rej.Err.Error())
			if err != nil {
				return err
			}
			parked[rej.Topic] += tag.RowsAffected()
			r.m.parked.WithLabelValues(rej.Topic).Inc()
			r.log.Error("parked a record the broker rejected", "id", rej.ID, "topic", rej.Topic, "key", rej.Key, "err", rej.Err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	r.add(nil, parked)
	return nil
}

func ids(rows []record) []int64 {
	out := make([]int64, len(rows))
	for i, r := range rows {
		out[i] = r.id
	}
	return out
}

// producer wraps one term's Kafka client.
type producer struct {
	cl    *kgo.Client
	txn   bool
	shard int
}

func (r *Relay) newProducer(shard int, log *slog.Logger) (*producer, error) {
	opts := append(slices.Clone(r.cfg.KafkaOpts),
		// kgo narrates every transaction at info; keep its warnings.
		kgo.WithLogger(kslog.New(slog.New(minLevel{slog.LevelWarn, log.Handler()}))),
		kgo.MaxBufferedRecords(max(r.cfg.BatchSize*2, 10_000)),
		kgo.UnknownTopicRetries(2),
		kgo.RecordRetries(10),
		kgo.RecordDeliveryTimeout(30*time.Second),
	)
	txn := !r.cfg.noFencing
	if txn {
		// One transactional id per outbox shard: a new leader's
		// InitProducerID bumps the epoch and fences the old leader, whose
		// late writes then fail instead of landing behind newer states.
		opts = append(opts, kgo.TransactionalID(fmt.Sprintf("ecst-relay.%s.%d", r.cfg.Service, shard)),
			kgo.TransactionTimeout(60*time.Second))
		opts = append(opts, kgo.MaxVersions(txnV1Versions()), kgo.ConcurrentTransactionsBackoff(time.Millisecond))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	return &producer{cl: cl, txn: txn, shard: shard}, nil
}

// txnV1Versions caps Produce at v11, which keeps the client on the
// transaction protocol before KIP-890 part 2. Under part 2 a batch's
// first produce is what adds its partitions to the transaction; when it
// arrives before the broker has finished the previous transaction's
// markers (the relay commits back to back), the broker retries it
// server-side after add.partitions.to.txn.retry.backoff.ms (20 ms), a
// wait the client cannot shorten. Before part 2 the client adds the
// partitions itself and retries CONCURRENT_TRANSACTIONS after its own
// backoff (1 ms here). Fencing is the same in both: InitProducerID bumps
// the epoch.
func txnV1Versions() *kversion.Versions {
	v := kversion.Stable()
	v.SetMaxKeyVersion(int16(kmsg.Produce), 11)
	return v
}

func (p *producer) close() {
	if p.txn {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = p.cl.AbortBufferedRecords(ctx)
		_ = p.cl.EndTransaction(ctx, kgo.TryAbort)
		cancel()
	}
	p.cl.Close()
}

// publish produces rows in order and commits them as one transaction. On a
// record the broker rejects for good it aborts and returns the rejects.
// acks is closed once every record is acknowledged, before the commit.
func (p *producer) publish(ctx context.Context, rows []record, acks chan<- struct{}) ([]*RejectedError, error) {
	if p.txn {
		if err := p.cl.BeginTransaction(); err != nil {
			return nil, err
		}
	}
	errs := make([]error, len(rows))
	var wg sync.WaitGroup
	wg.Add(len(rows))
	for i, row := range rows {
		hs, err := DecodeHeaders(row.headers)
		if err != nil {
			errs[i] = err
			wg.Done()
			continue
		}
		rec := &kgo.Record{Topic: row.topic, Key: []byte(row.key), Value: row.value}
		if row.value == nil {
			rec.Value = nil // a tombstone: null, not empty
		}
		rec.Headers = make([]kgo.RecordHeader, len(hs))
		for j, h := range hs {
			rec.Headers[j] = kgo.RecordHeader{Key: h.Key, Value: h.Value}
		}
		p.cl.Produce(ctx, rec, func(_ *kgo.Record, err error) {
			errs[i] = err
			wg.Done()
		})
	}
	// The batch is whole: send it now rather than after the client's
	// linger (10 ms by default), which would only delay it.
	_ = p.cl.Flush(ctx) // an error is the records' own, seen below
	wg.Wait()
	close(acks)
	var rejected []*RejectedError
	var first error
	for i, err := range errs {
		if err == nil {
			continue
		}
		if permanent(err) {
			rejected = append(rejected, &RejectedError{ID: rows[i].id, Topic: rows[i].topic, Key: rows[i].key, Err: err})
		}
		if first == nil {
			first = err
		}
	}
	if first != nil {
		if p.txn {
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			_ = p.cl.AbortBufferedRecords(actx)
			_ = p.cl.EndTransaction(actx, kgo.TryAbort)
			cancel()
		}
		return rejected, first
	}
	if p.txn {
		if err := p.cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			_ = p.cl.EndTransaction(actx, kgo.TryAbort)
			cancel()
			return nil, fmt.Errorf("commit Kafka transaction: %w", err)
		}
	}
	return nil, nil
}

// permanent reports a record error no retry can fix.
func permanent(err error) bool {
	return errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge) ||
		errors.Is(err, kerr.InvalidRecord) || errors.Is(err, kerr.CorruptMessage) ||
		errors.Is(err, ErrBadHeaders)
}

// classifyKafka names an error's kind for metrics, and returns a fatal
// error (with the fix) for what retrying cannot cure.
func classifyKafka(err error) (kind string, fatal error) {
	switch {
	case errors.Is(err, kerr.ProducerFenced), errors.Is(err, kerr.InvalidProducerEpoch), errors.Is(err, kerr.TransactionalIDNotFound):
		return "fenced", nil
	case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.UnknownTopicID):
		return "unknown_topic", fmt.Errorf("%w (%v)", ErrTopicMissing, err)
	case errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.TransactionalIDAuthorizationFailed),
		errors.Is(err, kerr.ClusterAuthorizationFailed), errors.Is(err, kerr.SaslAuthenticationFailed):
		return "auth", fmt.Errorf("kafka refused the relay: %w (check the SASL user and its ACLs: it needs Write on the topics and on transactional ids ecst-relay.*)", err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "timeout", nil
	}
	return "kafka", nil
}

func explainKafka(err error) error {
	if errors.Is(err, kerr.SaslAuthenticationFailed) {
		return fmt.Errorf("%w: wrong SASL user name or password (ECST_KAFKA_SASL_USERNAME, ECST_KAFKA_SASL_PASSWORD)", err)
	}
	return err
}

// minLevel drops records below a level.
type minLevel struct {
	min slog.Level
	slog.Handler
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.min, h.Handler.WithAttrs(as)}
}
func (h minLevel) WithGroup(g string) slog.Handler { return minLevel{h.min, h.Handler.WithGroup(g)} }

// backoff is exponential with full jitter.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) sleep(ctx context.Context) {
	if b.cur == 0 {
		b.cur = b.min
	}
	d := time.Duration(rand.Int64N(int64(b.cur))) + b.min/2 //nolint:gosec // jitter
	b.cur = min(b.cur*2, b.max)
	wait.Sleep(ctx, d)
}

func (b *backoff) reset() { b.cur = 0 }
