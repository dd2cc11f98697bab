package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/internal/pglock"
	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/migrate"
	"github.com/ecst-io/ecst/outbox"
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

// Config configures a Relay.
type Config struct {
	// Pool reads the outbox, records the cursor and truncates published
	// partitions (required).
	Pool *pgxpool.Pool
	// KafkaOpts carry seed brokers, TLS and SASL (kafkaopts.Client).
	KafkaOpts []kgo.Opt
	// Service names the transactional ids, ecst-relay.<service>.<shard>
	// (ecst-relay.<service>.wal for the WAL transport): two outboxes must
	// never share one, or their relays fence each other. It names the WAL
	// transport's replication slot too (SlotName).
	Service string
	// Transport is outbox.transport: table (zero) or wal. It must be the
	// database's (`ecst outbox switch` moves it).
	Transport outbox.Transport
	// TotalShards is outbox.shards (default 1; the table transport only).
	TotalShards int
	// Shards are the shards this process serves; empty means all (the
	// table transport only: the WAL transport has one leader).
	Shards []int
	// Topics are checked to exist before anything is published.
	Topics []string

	// BatchSize is the most rows one Kafka transaction carries
	// (config.DefaultBatchSize, 2000).
	BatchSize int
	// BatchBytes caps a batch's total value size (config.DefaultBatchBytes,
	// 16 MiB).
	BatchBytes int
	// PollMin is the wait before the next read right after a batch
	// (config.DefaultPollMin, 5ms); it doubles on each empty read up to
	// PollMax (config.DefaultPollMax, 500ms, and at least PollMin).
	PollMin time.Duration
	PollMax time.Duration // see PollMin
	// LeaseTimeout is how long a leader may go without a heartbeat before
	// PostgreSQL ends its session and a standby takes the shard
	// (config.DefaultLeaseTimeout, 3s).
	LeaseTimeout time.Duration
	// OnReject is what to do with a record the broker rejects for good
	// (default RejectHalt).
	OnReject RejectPolicy
	// Drain publishes what is in the outbox, then returns.
	Drain bool
	// ShutdownGrace bounds how long a stopping relay spends finishing the
	// batch in flight before it abandons it (the rows stay in the outbox);
	// default 10s.
	ShutdownGrace time.Duration
	// WALHeartbeat is how often a WAL leader writes a heartbeat message
	// (relay.wal_heartbeat).
	WALHeartbeat time.Duration

	// Resolver resolves capture markers (nil: a marker is refused as
	// OnReject says). `ecst relay` sets capture.Resolver.
	Resolver Resolver

	// Logger receives the relay's logs (nil: none).
	Logger *slog.Logger
	// Metrics are the relay's Prometheus metrics (nil: NewMetrics(nil),
	// registered nowhere).
	Metrics *Metrics

	// Test hooks, set through export_test.go.
	noFencing     bool
	watch         watchMode
	beforeProduce func(shard int, ids []int64)
	// sortByLSN makes the WAL source sort each batch by the position
	// where its messages were written instead of the commit order the
	// slot delivers (a test shows the reordering that would cause).
	sortByLSN bool
}

// Relay publishes outbox events to Kafka. With the table transport, per
// shard, one leader reads committed rows in id order past its cursor,
// produces them in one Kafka transaction, and moves the cursor once the
// transaction commits. With the WAL transport, one leader streams the
// replication slot in commit order, produces in Kafka transactions, and
// confirms a position to the slot once everything before it has committed
// to Kafka.
type Relay struct {
	cfg     Config
	log     *slog.Logger
	m       *Metrics
	lockCfg *pgx.ConnConfig
	ready   atomic.Bool
	slot    string // the WAL transport's replication slot
	// drainTarget is, in drain mode with the WAL transport, the WAL
	// position read at start: every event committed before it.
	drainTarget pglogrepl.LSN
	health      atomic.Pointer[SlotStatus]
	walSrc      atomic.Pointer[walSource] // the leader's, while it leads

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

// addPublished counts a committed batch's records by topic.
func (r *Relay) addPublished(records []record) {
	published := map[string]int64{}
	for _, rec := range records {
		published[rec.topic]++
	}
	r.add(published, nil)
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
	// errStreamLost ends a WAL leader's term: the replication connection
	// broke. The next term starts again from the slot.
	errStreamLost = errors.New("replication stream lost")
	// errTermFailed: a term could not start; a new one is tried.
	errTermFailed = errors.New("could not start leading")
)

// RejectedError is a record the broker rejected for good under RejectHalt.
type RejectedError struct {
	// ID, Topic and Key name the outbox row the broker refused (ID: with
	// the table transport).
	ID int64
	// LSN is where the event's message is in the WAL (the WAL transport).
	LSN   pglogrepl.LSN
	Topic string // see ID
	Key   string // see ID
	// Err is the broker's error.
	Err error
}

func (e *RejectedError) Error() string {
	what := fmt.Sprintf("outbox row %d", e.ID)
	if e.LSN != 0 {
		what = "the event at WAL position " + e.LSN.String()
	}
	return fmt.Sprintf("the broker rejected %s (topic %s, key %q) for good: %v; fix the cause (for a record too large, raise the topic's max.message.bytes) or run the relay with relay.on_reject: park to set it aside", what, e.Topic, e.Key, e.Err)
}

func (e *RejectedError) Unwrap() error { return e.Err }

// New validates cfg and fills defaults.
func New(cfg Config) (*Relay, error) {
	if cfg.Pool == nil {
		return nil, errors.New("relay: a database pool is required")
	}
	if cfg.Service == "" {
		return nil, errors.New("relay: service is required; it names the relay's Kafka transactional ids (service in ecst.yaml or ECST_SERVICE)")
	}
	switch cfg.Transport {
	case "":
		cfg.Transport = outbox.TransportTable
	case outbox.TransportTable, outbox.TransportWAL:
	default:
		return nil, fmt.Errorf("relay: transport %q is not table or wal", cfg.Transport)
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
		cfg.BatchSize = config.DefaultBatchSize
	}
	if cfg.BatchBytes <= 0 {
		cfg.BatchBytes = config.DefaultBatchBytes
	}
	if cfg.PollMin <= 0 {
		cfg.PollMin = config.DefaultPollMin
	}
	if cfg.PollMax < cfg.PollMin {
		cfg.PollMax = max(cfg.PollMin, config.DefaultPollMax)
	}
	if cfg.LeaseTimeout <= 0 {
		cfg.LeaseTimeout = config.DefaultLeaseTimeout
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 10 * time.Second
	}
	if cfg.WALHeartbeat <= 0 {
		cfg.WALHeartbeat = config.DefaultWALHeartbeat
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
		cfg.Metrics = NewMetrics(nil)
	}
	lockCfg := cfg.Pool.Config().ConnConfig.Copy()
	// A leader's session ends when it stops heartbeating (a paused or
	// partitioned process), which frees its lock for a standby.
	lockCfg.RuntimeParams["idle_session_timeout"] = strconv.FormatInt(cfg.LeaseTimeout.Milliseconds(), 10)
	lockCfg.RuntimeParams["application_name"] = "ecst-relay-lock"
	return &Relay{cfg: cfg, log: cfg.Logger, m: cfg.Metrics, lockCfg: lockCfg, slot: SlotName(cfg.Service),
		counts: Counts{Published: map[string]int64{}, Parked: map[string]int64{}}}, nil
}

// Ready reports whether the start-up checks passed and the relay is
// running: what /readyz serves.
func (r *Relay) Ready() bool { return r.ready.Load() }

// Run relays until ctx is done (or, with Drain, until everything committed
// before it started is published) and returns nil, or returns the first
// fatal error: a missing topic, a record rejected under RejectHalt, a
// configuration the broker refuses, a transport the database does not run,
// a lost or invalidated replication slot. Transient database and broker
// errors are retried with backoff.
func (r *Relay) Run(ctx context.Context) error {
	if err := migrate.Check(ctx, r.cfg.Pool); err != nil {
		return err
	}
	if err := r.checkMode(ctx); err != nil {
		return err
	}
	if err := r.checkTopics(ctx); err != nil {
		return err
	}
	units := make([]unit, 0, len(r.cfg.Shards))
	if r.cfg.Transport == outbox.TransportWAL {
		units = append(units, walUnit)
		if r.cfg.Drain {
			if err := r.setDrainTarget(ctx); err != nil {
				return err
			}
		}
	} else {
		for _, s := range r.cfg.Shards {
			units = append(units, unit(s))
		}
	}
	r.ready.Store(true)
	defer r.ready.Store(false)

	parent := ctx // the units' context below is cancelled once they end
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	var first atomic.Pointer[error]
	if !r.cfg.Drain {
		wg.Add(1)
		go func() { defer wg.Done(); r.watchSlot(ctx) }()
	}
	var leaders sync.WaitGroup
	for _, u := range units {
		leaders.Add(1)
		go func() {
			defer leaders.Done()
			if err := r.runUnit(ctx, u); err != nil {
				if first.CompareAndSwap(nil, &err) {
					cancel(err)
				}
			}
		}()
	}
	leaders.Wait()
	cancel(nil)
	wg.Wait()
	if p := first.Load(); p != nil {
		return *p
	}
	if r.cfg.Drain && parent.Err() == nil {
		r.awaitReadable(parent)
	}
	return nil
}

// readableWait bounds how long a drain waits for its records to become
// readable.
const readableWait = 10 * time.Second

// awaitReadable returns once read_committed consumers can read everything
// the drain published: the last stable offset of every partition of its
// topics has reached the end offset. A Kafka transaction's commit returns
// before its markers are written, so without this, `ecst relay --drain &&
// ecst mirror --once` could catch up to a point before the last batch. A
// transaction of another producer left open keeps the offset back; after
// readableWait the drain says so and returns.
func (r *Relay) awaitReadable(ctx context.Context) {
	topics := slices.Collect(maps.Keys(r.Counts().Published))
	if len(topics) == 0 {
		return
	}
	cl, err := kgo.NewClient(r.cfg.KafkaOpts...)
	if err != nil {
		r.log.Warn("drain: cannot check that its records are readable", "err", err)
		return
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(ctx, readableWait)
	defer cancel()
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err == nil {
		err = ends.Error()
	}
	for err == nil {
		var stable kadm.ListedOffsets
		if stable, err = adm.ListCommittedOffsets(ctx, topics...); err == nil {
			if err = stable.Error(); err == nil && readable(ends, stable) {
				return
			}
		}
		if !wait.Sleep(ctx, 20*time.Millisecond) {
			err = ctx.Err()
		}
	}
	r.log.Warn("drain: the last records published may not be readable yet", "topics", topics, "err", err)
}

// readable reports whether every partition's last stable offset has
// reached its end offset.
func readable(ends, stable kadm.ListedOffsets) bool {
	ok := true
	ends.Each(func(e kadm.ListedOffset) {
		if s, found := stable.Lookup(e.Topic, e.Partition); !found || s.Offset < e.Offset {
			ok = false
		}
	})
	return ok
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

// unit is what one leader leads: an outbox shard (the table transport), or
// the WAL (walUnit).
type unit int

// walUnit is the WAL transport's one unit: one leader streams the slot.
const walUnit unit = -1

func (u unit) wal() bool { return u == walUnit }

// String is the unit's label: the shard number, or "wal".
func (u unit) String() string {
	if u.wal() {
		return "wal"
	}
	return strconv.Itoa(int(u))
}

// lockObj is the unit's leader lock object in class pglock.ECST.
func (u unit) lockObj() int32 {
	if u.wal() {
		return pglock.ObjRelayWAL
	}
	return pglock.ObjRelayShard + int32(u)
}

// runUnit alternates between standing by for the unit's lock and leading
// it, until ctx ends or a fatal error.
func (r *Relay) runUnit(ctx context.Context, u unit) error {
	log := r.log.With("shard", u.String())
	bo := backoff{min: 100 * time.Millisecond, max: 10 * time.Second}
	for ctx.Err() == nil {
		lock, drained, err := r.acquire(ctx, u)
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
		if u.wal() {
			log.Info("leading the WAL", "slot", r.slot)
		} else {
			log.Info("leading shard")
		}
		r.m.leader.WithLabelValues(u.String()).Set(1)
		done, err := r.lead(ctx, u, lock, log) // closes lock
		r.m.leader.WithLabelValues(u.String()).Set(0)
		switch {
		case done:
			return nil
		case errors.Is(err, errLeaseLost) && u.wal():
			r.m.errors.WithLabelValues("lease_lost").Inc()
			log.Warn("lost the WAL lease; standing by", "err", err)
		case errors.Is(err, errLeaseLost):
			r.m.errors.WithLabelValues("lease_lost").Inc()
			log.Warn("lost the shard's lease; standing by", "err", err)
		case errors.Is(err, errStreamLost), errors.Is(err, errTermFailed):
			r.m.errors.WithLabelValues("database").Inc()
			log.Warn("the term ended; standing by", "err", err)
			bo.sleep(ctx)
		case err != nil && ctx.Err() == nil:
			return err
		}
	}
	return nil
}
