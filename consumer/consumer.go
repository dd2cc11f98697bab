// Package consumer keeps read models of state topics: it replays a
// compacted topic from offset 0 (or from stored offsets), applies each full
// state as an upsert and each tombstone as a deletion, reports readiness
// once it has caught up, and handles poison records by policy.
//
//	c, err := consumer.New(consumer.Config[customers.Customer]{
//		Name: "billing", Topic: "customers.state", KafkaOpts: opts, Registry: reg,
//		ReaderSchema: customers.Schema, Store: store,
//	})
//	go c.Run(ctx)
//	err = c.WaitReady(ctx) // the model has caught up with the topic as it was at start
//
// Stores: Memory (a concurrent map, rebuilt from the topic on every start)
// and Postgres (rows and offsets committed in one transaction: the
// exactly-once effect; resumes from its offsets).
package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/schemas"
)

// PoisonPolicy is what a consumer does with a record it cannot apply.
type PoisonPolicy string

// Poison policies.
const (
	// Halt stops the consumer with an error naming topic, partition,
	// offset and cause. The default: nothing is silently dropped.
	Halt PoisonPolicy = "halt"
	// Skip records the record in ecst.consumer_skipped (with its bytes)
	// and goes on.
	Skip PoisonPolicy = "skip"
	// DeadLetter produces the record to <topic>.dlq with its key, value and
	// headers plus error headers, and goes on.
	DeadLetter PoisonPolicy = "dead-letter"
)

// Change is one record to apply.
type Change[T any] struct {
	// Key is the entity id, the record's key.
	Key   string
	State T // the zero value for a deletion
	// Deleted marks a tombstone: the entity is gone.
	Deleted bool
	// Partition and Offset locate the record on the topic.
	Partition int32
	Offset    int64 // see Partition
	// Headers are the record's headers (the wire contract's ecst-*).
	Headers []kgo.RecordHeader
	// Schema is the writer's schema (nil for a deletion).
	Schema avro.Schema
}

// Skipped is a poison record passed over under the Skip policy.
type Skipped struct {
	// Partition and Offset locate the record on the topic.
	Partition int32
	Offset    int64 // see Partition
	// Key, Value and Headers are the record's, whole, as read.
	Key     []byte
	Value   []byte             // see Key
	Headers []kgo.RecordHeader // see Key
	// Err is why the record is poison.
	Err error
}

// Batch is what one poll applies, all or nothing.
type Batch[T any] struct {
	// Topic is the topic the batch was read from.
	Topic string
	// Changes are the records to apply, in offset order per partition.
	Changes []Change[T]
	// Skipped are the poison records passed over under the Skip policy,
	// which a store keeps with the batch.
	Skipped []Skipped
	// From and Next are each partition's next offset before and after the
	// batch.
	From, Next map[int32]int64

	deadLettered int64 // poison records sent to the DLQ while reading it
}

// Store is where a read model lives.
type Store[T any] interface {
	// Offsets returns the next offset to read per partition; an empty map
	// replays the topic from the start.
	Offsets(ctx context.Context, consumer, topic string) (map[int32]int64, error)
	// Apply applies a batch together with its offsets, all or nothing. It
	// returns ErrOffsetsMoved if the stored offsets are no longer the
	// batch's From (a rebuild swapped the model underneath). The batch
	// and its Changes slice belong to the consumer, which reuses them for
	// the next batch: Apply must not keep them once it returns (copying a
	// Change or its State is fine).
	Apply(ctx context.Context, consumer string, b *Batch[T]) error
}

// ErrOffsetsMoved: the store's offsets changed under the consumer; it
// reloads them and goes on from there.
var ErrOffsetsMoved = errors.New("stored offsets moved")

// ErrNotReady is returned by reads of a model that has not caught up.
var ErrNotReady = errors.New("read model not ready: still catching up with the topic")

// Config configures a Consumer.
type Config[T any] struct {
	// Name identifies the consumer: its offsets, its skipped records.
	Name string
	// Topic is the state topic to follow (required).
	Topic string
	// KafkaOpts carry seed brokers, TLS and SASL.
	KafkaOpts []kgo.Opt
	// Registry resolves the writer schemas of the records (required).
	Registry *schemas.Registry
	// ReaderSchema is the schema to decode into (the one T was generated
	// from); each writer schema is resolved to it. Empty decodes with the
	// writer's schema, for a map[string]any model.
	ReaderSchema string
	// Store holds the read model (required): a Memory, a Postgres, or one
	// of your own.
	Store Store[T]
	// Poison is what to do with a record that cannot be applied (default
	// Halt).
	Poison PoisonPolicy
	// MaxBatch bounds the records one Apply carries (default 5000).
	MaxBatch int
	// Logger receives the consumer's logs (nil: none).
	Logger *slog.Logger
	// Registerer receives the consumer's metrics (nil: none).
	Registerer prometheus.Registerer
	// Group, if set, makes the consumer a member of this consumer group:
	// the topic's partitions are spread over the group's instances
	// (partitioned mode), and each holds only its partitions' keys. Empty:
	// replicated mode, every instance reads every partition.
	Group string
	// Progress, if set, is called after each applied batch with the
	// records applied since Run or CatchUp began and how far the consumer
	// is towards the end offsets seen at start.
	Progress func(Progress)
}

// Progress is what a consumer has applied since Run or CatchUp began, and
// how far along the topic it is.
type Progress struct {
	// Upserts and Deletes count the records applied: full states and
	// tombstones. Skipped counts the poison records passed over (Skip,
	// DeadLetter).
	Upserts, Deletes, Skipped int64
	// Read and End are the offsets read and the end offsets seen at start,
	// summed over the partitions. Offsets measure the way along the topic,
	// not records: transaction markers take offsets too, and a resumed
	// consumer counts what it read before.
	Read, End int64
}

// Records is how many records were applied.
func (p Progress) Records() int64 { return p.Upserts + p.Deletes }

// countApplied adds what an applied batch carried to p.
func countApplied[T any](p *Progress, b *Batch[T]) {
	for i := range b.Changes {
		if b.Changes[i].Deleted {
			p.Deletes++
		} else {
			p.Upserts++
		}
	}
	p.Skipped += int64(len(b.Skipped)) + b.deadLettered
}

// Consumer follows one state topic into a Store.
type Consumer[T any] struct {
	cfg   Config[T]
	dec   *decoder[T]
	log   *slog.Logger
	ready chan struct{}
	once  sync.Once
	isRdy atomic.Bool

	lag       *prometheus.GaugeVec
	applied   prometheus.Counter
	poisoned  *prometheus.CounterVec
	staleRisk prometheus.Gauge
	freshness prometheus.Histogram
}

// occurredAtHeader is producer.HeaderOccurredAt: when the producing
// transaction published the state, RFC 3339 in UTC.
const occurredAtHeader = "ecst-occurred-at"

// New validates cfg.
func New[T any](cfg Config[T]) (*Consumer[T], error) {
	if cfg.Name == "" || cfg.Topic == "" {
		return nil, errors.New("consumer: Name and Topic are required")
	}
	if cfg.Store == nil || cfg.Registry == nil {
		return nil, errors.New("consumer: a Store and a Registry are required")
	}
	switch cfg.Poison {
	case "":
		cfg.Poison = Halt
	case Halt, Skip, DeadLetter:
	default:
		return nil, fmt.Errorf("consumer: poison policy %q is not halt, skip or dead-letter", cfg.Poison)
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 5000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	dec, err := newDecoder[T](cfg.Registry, cfg.ReaderSchema)
	if err != nil {
		return nil, err
	}
	c := &Consumer[T]{
		cfg: cfg, dec: dec, log: cfg.Logger.With("consumer", cfg.Name, "topic", cfg.Topic), ready: make(chan struct{}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ecst_consumer_lag_records", Help: "Records between the consumer's position and the partition's end.",
			ConstLabels: prometheus.Labels{"consumer": cfg.Name, "topic": cfg.Topic},
		}, []string{"partition"}),
		applied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ecst_consumer_applied_total", Help: "Records applied to the read model.",
			ConstLabels: prometheus.Labels{"consumer": cfg.Name, "topic": cfg.Topic},
		}),
		poisoned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ecst_consumer_poison_total", Help: "Poison records, by what was done with them.",
			ConstLabels: prometheus.Labels{"consumer": cfg.Name, "topic": cfg.Topic},
		}, []string{"action"}),
		staleRisk: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ecst_consumer_tombstone_risk", Help: "1 when the model was last updated longer ago than the topic's delete.retention.ms: deletions may be missing.",
			ConstLabels: prometheus.Labels{"consumer": cfg.Name, "topic": cfg.Topic},
		}),
		freshness: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ecst_consumer_commit_to_apply_seconds",
			Help: "Time from a record's ecst-occurred-at (when its producing transaction published it) to the moment the batch holding it was applied " +
				"(committed with its offsets, in Postgres): how stale the read model is. A model replayed from offset 0 counts only once it has caught up.",
			ConstLabels: prometheus.Labels{"consumer": cfg.Name, "topic": cfg.Topic},
			Buckets:     prometheus.ExponentialBuckets(0.001, 2, 24), // 1ms to 2.3h
		}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(c.lag, c.applied, c.poisoned, c.staleRisk, c.freshness)
	}
	return c, nil
}

// Ready reports whether the model has caught up with the topic as it was
// when the consumer started: every partition read up to the end offset
// (last stable offset) seen at start.
func (c *Consumer[T]) Ready() bool { return c.isRdy.Load() }

// WaitReady blocks until the model is ready or ctx ends.
func (c *Consumer[T]) WaitReady(ctx context.Context) error {
	select {
	case <-c.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Consumer[T]) markReady() {
	c.once.Do(func() {
		c.isRdy.Store(true)
		close(c.ready)
		c.log.Info("read model caught up")
	})
}

// Run follows the topic until ctx ends (nil) or a fatal error: a poison
// record under Halt, a missing topic, a database error that retrying
// cannot fix (a missing table or column, a privilege or a constraint
// refused: see permanent). Other broker and database errors are retried.
func (c *Consumer[T]) Run(ctx context.Context) error {
	return c.run(ctx, false)
}

// CatchUp applies everything up to the end offsets seen at start, then
// returns nil: `ecst mirror --once`. If ctx ends first, it returns an
// error wrapping ctx.Err() that says how far it got; it fails as Run does.
func (c *Consumer[T]) CatchUp(ctx context.Context) error {
	return c.run(ctx, true)
}

func (c *Consumer[T]) run(ctx context.Context, once bool) error {
	var missingSince time.Time
	var p Progress
	for {
		err := c.session(ctx, once, &p)
		switch {
		case errors.Is(err, errCaughtUp):
			return nil
		case err == nil || ctx.Err() != nil:
			if once {
				return fmt.Errorf("stopped before catching up with %s: %d records applied, %d of %d offsets read: %w",
					c.cfg.Topic, p.Records(), p.Read, p.End, ctx.Err())
			}
			return nil
		case errors.Is(err, ErrOffsetsMoved):
			c.log.Info("stored offsets moved (a rebuild swapped the model in); resuming from them")
			continue
		case errors.Is(err, kerr.UnknownTopicOrPartition):
			// A topic just created can be unknown to a broker for a moment;
			// one that stays unknown is a configuration error.
			if missingSince.IsZero() {
				missingSince = time.Now()
			} else if time.Since(missingSince) > 30*time.Second {
				return err
			}
		case errors.Is(err, ErrPoison), errors.Is(err, errFatal):
			return err
		case permanent(err):
			return fmt.Errorf("%w (retrying cannot fix this: the consumer stops)", err)
		}
		c.log.Warn("consumer session failed; retrying", "err", err)
		if !wait.Sleep(ctx, time.Second) {
			return nil
		}
	}
}

var (
	errCaughtUp = errors.New("caught up")
	errFatal    = errors.New("fatal")
)

// permanent reports whether err is a PostgreSQL error that retrying the
// same work cannot fix: PostgreSQL refused the statement itself, not the
// connection or the moment. Those are the SQLSTATE classes 0A (feature
// not supported), 22 (data exception), 23 (integrity constraint: a
// NOT NULL or CHECK added to a model by hand), 28 (wrong user or
// password), 3D and 3F (no such database or schema), 42 (no such table
// or column, no privilege, syntax), 44 (check option) and 54 (program
// limit, such as too many columns). Everything else is retried:
// connection failures (08), serialization failures and deadlocks (40),
// a read-only transaction after a failover (25), resources (53),
// operator intervention and shutdowns (57), system errors (58), lock
// timeouts (55).
func permanent(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || len(pe.Code) < 2 {
		return false
	}
	switch pe.Code[:2] {
	case "0A", "22", "23", "28", "3D", "3F", "42", "44", "54":
		return true
	}
	return false
}

// session reads from the stored offsets until an error, counting what it
// applies into p.
func (c *Consumer[T]) session(ctx context.Context, once bool, p *Progress) error {
	stored, ends, err := c.prepare(ctx)
	if err != nil {
		return err
	}
	tr := &tracker{targets: map[int32]int64{}, pos: map[int32]int64{}}
	opts := append(slices.Clone(c.cfg.KafkaOpts),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Transaction markers take offsets: keeping them lets the position
		// reach the end offset that readiness waits for.
		kgo.KeepControlRecords(),
	)
	if c.cfg.Group == "" {
		start := map[int32]kgo.Offset{}
		for part, o := range ends {
			start[part] = tr.assign(part, o.Offset, stored)
		}
		tr.assigned = true
		opts = append(opts, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{c.cfg.Topic: start}))
	} else {
		opts = append(opts, c.groupOpts(tr)...)
	}
	p.Read, p.End = tr.progress()
	if tr.caughtUp() {
		c.markReady()
		if once {
			return errCaughtUp
		}
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("%w: kafka client: %v", errFatal, err)
	}
	defer func() {
		// With BlockRebalanceOnPoll, leaving the group waits for the
		// rebalance that the last poll blocked.
		cl.AllowRebalance()
		cl.Close()
	}()
	return c.consume(ctx, cl, tr, once, len(stored) == 0, p)
}

// prepare reads what a session starts from: the stored offsets, and the
// topic's end offsets (by partition). On the way it creates the dead-letter
// topic when there is to be one, and warns when the stored offsets fell
// behind the topic's retention.
func (c *Consumer[T]) prepare(ctx context.Context) (stored map[int32]int64, ends map[int32]kadm.ListedOffset, err error) {
	stored, err = c.cfg.Store.Offsets(ctx, c.cfg.Name, c.cfg.Topic)
	if err != nil {
		return nil, nil, fmt.Errorf("load offsets: %w", err)
	}
	admCl, err := kgo.NewClient(c.cfg.KafkaOpts...)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: kafka client: %v", errFatal, err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	listed, err := adm.ListCommittedOffsets(ctx, c.cfg.Topic)
	if err == nil {
		err = listed.Error()
	}
	if err != nil {
		if errors.Is(err, kerr.UnknownTopicOrPartition) {
			return nil, nil, fmt.Errorf("topic %s: %w (create it with `ecst topics apply`)", c.cfg.Topic, err)
		}
		return nil, nil, fmt.Errorf("list end offsets of %s: %w", c.cfg.Topic, err)
	}
	ends = listed[c.cfg.Topic]
	if c.cfg.Poison == DeadLetter {
		if err := c.ensureDLQ(ctx, adm, len(ends)); err != nil {
			return nil, nil, err
		}
	}
	if len(stored) > 0 {
		c.checkRetention(ctx, adm)
	}
	return stored, ends, nil
}

// consume polls, applies and tracks batches until an error, or until it
// has caught up when once, counting what it applies into p. replay is a
// session that started with no stored offsets: the whole topic again, whose
// history is as old as it is, and which is no measure of the model's
// freshness until it has caught up.
func (c *Consumer[T]) consume(ctx context.Context, cl *kgo.Client, tr *tracker, once, replay bool, p *Progress) error {
	// The changes slice is reused from batch to batch (Store.Apply keeps
	// no reference to it): a replay allocates it once, not per poll.
	var changes []Change[T]
	for {
		fs := cl.PollRecords(ctx, c.cfg.MaxBatch)
		if ctx.Err() != nil {
			return nil
		}
		if err := fs.Err0(); err != nil {
			var fe *kgo.ErrFirstReadEOF
			if !errors.As(err, &fe) {
				return fmt.Errorf("fetch: %w", err)
			}
		}
		if n := fs.NumRecords(); cap(changes) < n {
			changes = make([]Change[T], 0, n)
		}
		b, err := c.batch(ctx, cl, fs, tr, changes[:0])
		if err != nil {
			return err
		}
		if len(b.Next) == 0 {
			cl.AllowRebalance()
			continue
		}
		if err := c.cfg.Store.Apply(ctx, c.cfg.Name, b); err != nil {
			return fmt.Errorf("apply batch: %w", err)
		}
		if !replay || c.Ready() {
			c.observeFreshness(b, time.Now())
		}
		c.applied.Add(float64(len(b.Changes)))
		countApplied(p, b)
		changes = b.Changes
		clear(changes) // hold no states past their batch
		tr.advance(b.Next)
		// In a group, partitions move only between applied batches.
		cl.AllowRebalance()
		p.Read, p.End = tr.progress()
		if c.cfg.Progress != nil {
			c.cfg.Progress(*p)
		}
		if tr.caughtUp() {
			c.markReady()
			if once {
				return errCaughtUp
			}
		}
	}
}

// batch turns a poll's records into a batch (its changes appended to
// changes), and sets the lag of each partition polled. A poison record
// ends it with the error its policy gives.
func (c *Consumer[T]) batch(ctx context.Context, cl *kgo.Client, fs kgo.Fetches, tr *tracker, changes []Change[T]) (*Batch[T], error) {
	b := &Batch[T]{Topic: c.cfg.Topic, From: map[int32]int64{}, Next: map[int32]int64{}, Changes: changes}
	var poisonErr error
	fs.EachPartition(func(fp kgo.FetchTopicPartition) {
		if poisonErr != nil {
			return
		}
		for _, r := range fp.Records {
			if _, ok := b.From[r.Partition]; !ok {
				b.From[r.Partition] = tr.position(r.Partition)
			}
			b.Next[r.Partition] = r.Offset + 1
			if r.Attrs.IsControl() {
				continue
			}
			if err := c.add(ctx, cl, b, r); err != nil {
				poisonErr = err
				return
			}
		}
		c.lag.WithLabelValues(strconv.Itoa(int(fp.Partition))).Set(float64(max(fp.HighWatermark-b.Next[fp.Partition], 0)))
	})
	return b, poisonErr
}

// observeFreshness records, for each change of b that carries an
// ecst-occurred-at header, how long before applied it occurred.
func (c *Consumer[T]) observeFreshness(b *Batch[T], applied time.Time) {
	for i := range b.Changes {
		for _, h := range b.Changes[i].Headers {
			if h.Key != occurredAtHeader {
				continue
			}
			if at, err := time.Parse(time.RFC3339Nano, string(h.Value)); err == nil {
				c.freshness.Observe(max(applied.Sub(at).Seconds(), 0)) // clocks apart: not below 0
			}
			break
		}
	}
}

// tracker holds the partitions a session reads: each one's end offset at
// assignment (what readiness waits for) and its next offset to apply.
type tracker struct {
	mu       sync.Mutex
	targets  map[int32]int64
	pos      map[int32]int64
	assigned bool // the first assignment happened (groups start with none)
}

// assign starts reading p and returns where to start.
func (t *tracker) assign(p int32, end int64, stored map[int32]int64) kgo.Offset {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.targets[p] = end
	if next, ok := stored[p]; ok {
		t.pos[p] = next
		return kgo.NewOffset().At(next)
	}
	t.pos[p] = -1 // unknown until the first record
	return kgo.NewOffset().AtStart()
}

func (t *tracker) revoke(ps []int32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range ps {
		delete(t.targets, p)
		delete(t.pos, p)
	}
}

func (t *tracker) position(p int32) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pos[p]
}

func (t *tracker) advance(next map[int32]int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for p, n := range next {
		if _, ok := t.pos[p]; ok {
			t.pos[p] = n
		}
	}
}

func (t *tracker) caughtUp() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.assigned {
		return false
	}
	for p, end := range t.targets {
		if end > 0 && t.pos[p] < end {
			return false
		}
	}
	return true
}

func (t *tracker) progress() (done, total int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for p, end := range t.targets {
		total += end
		done += min(max(t.pos[p], 0), end)
	}
	return done, total
}

// Revoker is an optional Store interface for partitioned mode: drop what
// came from partitions this instance no longer owns (a Memory model holds
// only its own partitions' keys).
type Revoker interface {
	Revoke(partitions []int32)
}

// groupOpts consumes as a member of cfg.Group: partitions are spread over
// the group's instances (partitioned mode). Offsets come from the store,
// never from Kafka: a Postgres model's offsets commit with its rows.
func (c *Consumer[T]) groupOpts(tr *tracker) []kgo.Opt {
	topic := c.cfg.Topic
	onRevoke := func(ctx context.Context, _ *kgo.Client, revoked map[string][]int32) {
		ps := revoked[topic]
		tr.revoke(ps)
		if r, ok := c.cfg.Store.(Revoker); ok {
			r.Revoke(ps)
		}
		c.log.Info("partitions revoked", "partitions", ps)
	}
	return []kgo.Opt{
		kgo.ConsumerGroup(c.cfg.Group),
		kgo.ConsumeTopics(topic),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.AdjustFetchOffsetsFn(func(ctx context.Context, offs map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
			ps := make([]int32, 0, len(offs[topic]))
			for p := range offs[topic] {
				ps = append(ps, p)
			}
			stored, err := c.cfg.Store.Offsets(ctx, c.cfg.Name, topic)
			if err != nil {
				return nil, err
			}
			ends, err := c.ends(ctx, ps)
			if err != nil {
				return nil, err
			}
			out := map[int32]kgo.Offset{}
			for _, p := range ps {
				out[p] = tr.assign(p, ends[p], stored)
			}
			tr.mu.Lock()
			tr.assigned = true
			tr.mu.Unlock()
			if tr.caughtUp() { // nothing to catch up on: no records may ever come
				c.markReady()
			}
			c.log.Info("partitions assigned", "partitions", ps)
			return map[string]map[int32]kgo.Offset{topic: out}, nil
		}),
		kgo.OnPartitionsAssigned(func(ctx context.Context, _ *kgo.Client, assigned map[string][]int32) {
			if len(assigned[topic]) == 0 {
				tr.mu.Lock()
				tr.assigned = true // more members than partitions: nothing to catch up on
				tr.mu.Unlock()
			}
			if tr.caughtUp() {
				c.markReady()
			}
		}),
		kgo.OnPartitionsRevoked(onRevoke),
		kgo.OnPartitionsLost(onRevoke),
	}
}

// ends lists the last stable offsets of some partitions.
func (c *Consumer[T]) ends(ctx context.Context, ps []int32) (map[int32]int64, error) {
	cl, err := kgo.NewClient(c.cfg.KafkaOpts...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	offs, err := kadm.NewClient(cl).ListCommittedOffsets(ctx, c.cfg.Topic)
	if err == nil {
		err = offs.Error()
	}
	if err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	for _, p := range ps {
		out[p] = offs[c.cfg.Topic][p].Offset
	}
	return out, nil
}

// AppliedAter is an optional Store interface: when the model last applied
// a batch of the topic.
type AppliedAter interface {
	AppliedAt(ctx context.Context, consumer, topic string) (time.Time, error)
}

// checkRetention warns when the model was last updated longer ago than the
// topic keeps tombstones (delete.retention.ms): a key deleted meanwhile
// may have had its tombstone compacted away, and would stay in the model.
func (c *Consumer[T]) checkRetention(ctx context.Context, adm *kadm.Client) {
	aa, ok := c.cfg.Store.(AppliedAter)
	if !ok {
		return
	}
	at, err := aa.AppliedAt(ctx, c.cfg.Name, c.cfg.Topic)
	if err != nil || at.IsZero() {
		return
	}
	rcs, err := adm.DescribeTopicConfigs(ctx, c.cfg.Topic)
	if err != nil || len(rcs) == 0 {
		return
	}
	retention := 24 * time.Hour // Kafka's default delete.retention.ms
	for _, cfg := range rcs[0].Configs {
		if cfg.Key == "delete.retention.ms" && cfg.Value != nil {
			if ms, err := strconv.ParseInt(*cfg.Value, 10, 64); err == nil {
				retention = time.Duration(ms) * time.Millisecond
			}
		}
	}
	if age := time.Since(at); age > retention {
		c.staleRisk.Set(1)
		c.log.Warn("the read model was last updated longer ago than the topic keeps tombstones: keys deleted meanwhile may still be in it; rebuild it (ecst rebuild) or check it (ecst verify)",
			"last_applied", at, "age", age.Round(time.Second), "delete.retention.ms", retention.Milliseconds())
	}
}

// add decodes r into the batch, applying the poison policy.
func (c *Consumer[T]) add(ctx context.Context, cl *kgo.Client, b *Batch[T], r *kgo.Record) error {
	b.Changes = append(b.Changes, Change[T]{Key: string(r.Key), Partition: r.Partition, Offset: r.Offset, Headers: r.Headers})
	ch := &b.Changes[len(b.Changes)-1]
	if r.Value == nil {
		ch.Deleted = true
		return nil
	}
	// Decoded in place: one T per record is what the batch holds anyway.
	schema, err := c.dec.decode(ctx, r.Value, &ch.State)
	if err == nil {
		ch.Schema = schema
		return nil
	}
	*ch = Change[T]{}
	b.Changes = b.Changes[:len(b.Changes)-1]
	var pe *PoisonError
	if !errors.As(err, &pe) {
		return err // the registry is unreachable: retry the session
	}
	pe.Topic, pe.Partition, pe.Offset, pe.Key = r.Topic, r.Partition, r.Offset, string(r.Key)
	switch c.cfg.Poison {
	case Skip:
		c.poisoned.WithLabelValues("skipped").Inc()
		c.log.Warn("skipping a poison record", "partition", r.Partition, "offset", r.Offset, "key", string(r.Key), "err", pe.Err)
		b.Skipped = append(b.Skipped, Skipped{Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value, Headers: r.Headers, Err: pe.Err})
		return nil
	case DeadLetter:
		if err := c.deadLetter(ctx, cl, r, pe); err != nil {
			return fmt.Errorf("dead-letter: %w", err)
		}
		b.deadLettered++
		c.poisoned.WithLabelValues("dead_lettered").Inc()
		c.log.Warn("dead-lettered a poison record", "partition", r.Partition, "offset", r.Offset, "key", string(r.Key), "err", pe.Err)
		return nil
	}
	c.poisoned.WithLabelValues("halted").Inc()
	return pe
}

// DLQ header names.
const (
	HeaderDLQError     = "ecst-dlq-error"
	HeaderDLQTopic     = "ecst-dlq-topic"
	HeaderDLQPartition = "ecst-dlq-partition"
	HeaderDLQOffset    = "ecst-dlq-offset"
	HeaderDLQConsumer  = "ecst-dlq-consumer"
)

func (c *Consumer[T]) deadLetter(ctx context.Context, cl *kgo.Client, r *kgo.Record, pe *PoisonError) error {
	hs := slices.Clone(r.Headers)
	hs = append(hs,
		kgo.RecordHeader{Key: HeaderDLQError, Value: []byte(pe.Err.Error())},
		kgo.RecordHeader{Key: HeaderDLQTopic, Value: []byte(r.Topic)},
		kgo.RecordHeader{Key: HeaderDLQPartition, Value: []byte(strconv.Itoa(int(r.Partition)))},
		kgo.RecordHeader{Key: HeaderDLQOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
		kgo.RecordHeader{Key: HeaderDLQConsumer, Value: []byte(c.cfg.Name)},
	)
	dlq := &kgo.Record{Topic: c.cfg.Topic + ".dlq", Key: r.Key, Value: r.Value, Headers: hs}
	return cl.ProduceSync(ctx, dlq).FirstErr()
}

// ensureDLQ creates <topic>.dlq (delete policy, not compacted: every
// poison record is kept) if it does not exist.
func (c *Consumer[T]) ensureDLQ(ctx context.Context, adm *kadm.Client, partitions int) error {
	name := c.cfg.Topic + ".dlq"
	resp, err := adm.CreateTopic(ctx, int32(max(partitions, 1)), -1, nil, name) //nolint:gosec // small
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("%w: create dead-letter topic %s: %v", errFatal, name, err)
	}
	return nil
}
