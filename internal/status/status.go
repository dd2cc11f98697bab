// Package status gathers one snapshot of an ecst system for its operators:
// the entities' topics, the outbox shards and their relay leaders, the read
// models and their lag, the last verification of each entity, the republish
// runs, and what needs attention, each finding with the command that fixes
// it. `ecst status` prints a snapshot, `ecst console` renders it, and tests
// assert on it: one model, three views.
//
// It is internal: the snapshot's shape follows what the CLI and console
// show, and its public contract is `ecst status --json`, not a Go API.
//
// Every query stays cheap however large the system: Kafka metadata comes in
// one ListTopics, one DescribeTopicConfigs and one ListEndOffsets for all
// topics; the outbox is never counted past a cap (index walks of at most
// that many entries per shard); the rest are index lookups, each kind of
// thing in one round trip.
package status

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/ecst-io/ecst/capture"
	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/verify"
)

// Querier is what the snapshot reads Postgres with: a pool or a connection.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Defaults of Options.
const (
	DefaultMaxBacklogAge = time.Minute
	DefaultPendingCap    = 10_000
)

// Options says what to gather from and what counts as a problem.
type Options struct {
	// DB is the service's database: the outbox, ecst.* tables (required).
	DB Querier
	// Admin reads the topics (required).
	Admin *kadm.Client
	// Config names the entities and the outbox shards (required, finished).
	Config *config.Config
	// MaxBacklogAge: an outbox row waiting longer needs attention
	// (default DefaultMaxBacklogAge).
	MaxBacklogAge time.Duration
	// PendingCap bounds the count of pending rows per shard: past it the
	// snapshot says "at least" (default DefaultPendingCap).
	PendingCap int
	// MaxSlotLag: a WAL transport slot more bytes behind needs attention
	// (default DefaultMaxSlotLag).
	MaxSlotLag int64
}

// Snapshot is the state of the system at one moment.
type Snapshot struct {
	// At is when it was gathered.
	At time.Time `json:"at"`
	// Service is the producing service (ecst.yaml's service).
	Service string `json:"service"`
	// Entities are the entities of ecst.yaml, by name.
	Entities []Entity `json:"entities"`
	// Transport is how the outbox reaches Kafka, as the database runs it:
	// "outbox" (the table the relay reads) or "wal" (logical decoding
	// messages the relay streams from a replication slot).
	Transport string `json:"transport"`
	// Shards are the outbox shards, in order (the table transport's; none
	// on the WAL transport).
	Shards []Shard `json:"shards"`
	// Slots are the WAL transport's replication slots that ecst created and
	// has not dropped: the one the relay streams, or one left behind (or
	// lost) on the table transport.
	Slots []Slot `json:"slots,omitempty"`
	// ReadModels are the consumers that commit offsets to
	// ecst.consumer_offsets (the mirrors among them), by name and topic.
	ReadModels []ReadModel `json:"read_models"`
	// Republish holds each entity's latest republish run.
	Republish []Run `json:"republish"`
	// Capture is the capture (`ecst capture`) of each entity that has it
	// installed or markers waiting.
	Capture []capture.Status `json:"capture,omitempty"`
	// Attention lists what needs an operator, the most severe first.
	Attention []Finding `json:"attention"`
}

// Entity is an entity and its topic.
type Entity struct {
	Name  string `json:"name"`
	Topic string `json:"topic"`
	// Exists: the topic is on the cluster.
	Exists bool `json:"exists"`
	// Partitions of the topic (0 when it does not exist).
	Partitions int `json:"partitions"`
	// EndOffsets is the sum of the partitions' end offsets: the records
	// ever written, transaction markers included, compacted away or not.
	EndOffsets int64 `json:"end_offsets"`
	// Compaction holds the topic's compaction settings: cleanup.policy,
	// min.compaction.lag.ms, delete.retention.ms, segment.ms.
	Compaction map[string]string `json:"compaction"`
	// Drift lists the topic's differences from what ecst.yaml wants.
	Drift []TopicDrift `json:"drift,omitempty"`
	// LastVerify is the entity's last recorded verification (nil: none).
	LastVerify *verify.Record `json:"last_verify,omitempty"`
}

// CompactionKeys are the topic settings a snapshot shows.
var CompactionKeys = []string{"cleanup.policy", "min.compaction.lag.ms", "delete.retention.ms", "segment.ms"}

// TopicDrift is a topic setting that differs from ecst.yaml.
type TopicDrift struct {
	Setting string `json:"setting"`
	Want    string `json:"want"`
	Have    string `json:"have"`
}

// Shard is an outbox shard.
type Shard struct {
	Shard int `json:"shard"`
	// Leader: a relay process leads the shard (holds its leader lock).
	Leader bool `json:"leader"`
	// Pending rows wait for the relay; when Capped, at least that many.
	Pending int64 `json:"pending"`
	Capped  bool  `json:"pending_capped,omitempty"`
	// OldestAge is how long the oldest pending row has waited (0: none).
	OldestAge Seconds `json:"oldest_age_seconds"`
}

// ReadModel is a consumer keeping its offsets in ecst.consumer_offsets.
type ReadModel struct {
	Consumer string `json:"consumer"`
	Topic    string `json:"topic"`
	// Entity is the entity whose topic it reads ("" if none of ecst.yaml).
	Entity string `json:"entity,omitempty"`
	// Mirror is the table, for an `ecst mirror` consumer ("" otherwise).
	Mirror string `json:"mirror,omitempty"`
	// Lag is the offsets it has yet to read: the sum over the topic's
	// partitions of end offset minus its next offset (records, and the
	// relay's transaction markers between them).
	Lag int64 `json:"lag"`
	// Ready: caught up (lag 0).
	Ready bool `json:"ready"`
	// UpdatedAt is when it last committed offsets.
	UpdatedAt time.Time `json:"updated_at"`
	// TombstoneRisk: behind, and last committed longer ago than the topic's
	// delete.retention.ms: compaction may drop a tombstone it has not read,
	// and its copy would keep a deleted key.
	TombstoneRisk bool `json:"tombstone_risk,omitempty"`
}

// Run is a republish run.
type Run struct {
	ID     int64  `json:"id"`
	Entity string `json:"entity"`
	// State is running, completed, failed, cancelled, or abandoned (left
	// running by a process that died: no session holds its lock).
	State string `json:"state"`
	// Selected is the keys it selected (nil until counted).
	Selected *int64 `json:"rows_selected,omitempty"`
	// Written is the outbox rows it wrote, tombstones included.
	Written    int64      `json:"rows_written"`
	StartedAt  time.Time  `json:"started_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	Error      string     `json:"error,omitempty"`
	// Progress is Written/Selected, from 0 to 1 (0 until counted).
	Progress float64 `json:"progress"`
	// ETA is the time left at the run's rate so far (running runs, once
	// counted and under way).
	ETA Seconds `json:"eta_seconds,omitempty"`
}

// Severity ranks findings.
type Severity string

// The severities, most severe first.
const (
	Critical Severity = "critical" // data is not flowing, or is wrong
	Warning  Severity = "warning"  // it will be, or may be, unless acted on
)

// Finding is something that needs an operator.
type Finding struct {
	Severity Severity `json:"severity"`
	// Subject is what it is about: an entity, a shard, a consumer, a run.
	Subject string `json:"subject"`
	Message string `json:"message"`
	// Fix is the command that fixes it ("" when none does: Message says
	// what to do).
	Fix string `json:"fix,omitempty"`
}

// Seconds is a duration that JSON writes as seconds.
type Seconds float64

// Duration is s as a time.Duration.
func (s Seconds) Duration() time.Duration { return time.Duration(float64(s) * float64(time.Second)) }

// Gather reads the snapshot.
func Gather(ctx context.Context, o Options) (*Snapshot, error) {
	if o.MaxBacklogAge <= 0 {
		o.MaxBacklogAge = DefaultMaxBacklogAge
	}
	if o.PendingCap <= 0 {
		o.PendingCap = DefaultPendingCap
	}
	if o.MaxSlotLag <= 0 {
		o.MaxSlotLag = DefaultMaxSlotLag
	}
	s := &Snapshot{At: time.Now(), Service: o.Config.Service}
	names := o.Config.EntityNames()
	byTopic := map[string]*config.Entity{}
	for _, n := range names {
		e := o.Config.Entities[n]
		byTopic[e.Topic] = e
		s.Entities = append(s.Entities, Entity{Name: n, Topic: e.Topic})
	}
	// The outbox first, then the topics: a row the snapshot counts as
	// published is then in the end offsets it reads (the other order could
	// show a row neither pending nor on the topic, and a consumer caught up
	// with a topic that has moved on).
	var err error
	if s.Transport, s.Shards, s.Slots, err = gatherTransport(ctx, o); err != nil {
		return nil, err
	}
	models, err := readModels(ctx, o.DB)
	if err != nil {
		return nil, err
	}
	ends, configs, err := kafkaState(ctx, o.Admin, s.Entities, models)
	if err != nil {
		return nil, err
	}
	for i := range s.Entities {
		fillEntity(&s.Entities[i], o.Config.Entities[s.Entities[i].Name], ends, configs)
	}
	for i := range models {
		m := &models[i]
		if e := byTopic[m.Topic]; e != nil {
			m.Entity = e.Name
		}
		m.Lag = lag(ends[m.Topic], m.next)
		m.Ready = m.Lag == 0
		if ms, ok := retention(configs[m.Topic]); ok && !m.Ready && s.At.Sub(m.UpdatedAt) > ms {
			m.TombstoneRisk = true
		}
		s.ReadModels = append(s.ReadModels, m.ReadModel)
	}
	runs, err := verify.LastRuns(ctx, o.DB, names)
	if err != nil {
		return nil, err
	}
	for i := range runs {
		if j := slices.Index(names, runs[i].Entity); j >= 0 {
			s.Entities[j].LastVerify = &runs[i]
		}
	}
	if s.Republish, err = republishRuns(ctx, o.DB); err != nil {
		return nil, err
	}
	cs, err := capture.StatusOf(ctx, o.DB, o.Config)
	if err != nil {
		return nil, err
	}
	for _, c := range cs {
		if c.Enabled || c.Pending > 0 {
			s.Capture = append(s.Capture, c)
		}
	}
	s.Attention = attention(s, o)
	return s, nil
}

// gatherTransport reads the state of the outbox's way to Kafka. It is the
// one place that knows the transport: each has its own reader. The
// database's transport (its last `ecst outbox switch`) decides which; the
// slots are read in both, since one left behind keeps WAL.
func gatherTransport(ctx context.Context, o Options) (string, []Shard, []Slot, error) {
	transport, slots, err := gatherWAL(ctx, o.DB)
	if err != nil {
		return "", nil, nil, err
	}
	if transport == outbox.TransportWAL {
		return "wal", nil, slots, nil
	}
	shards, err := outboxShards(ctx, o.DB, o.Config.Outbox.Shards, o.PendingCap)
	return "outbox", shards, slots, err
}

// NeedsAttention says whether the snapshot has any finding.
func (s *Snapshot) NeedsAttention() bool { return len(s.Attention) > 0 }

// Entity returns the named entity of the snapshot (nil: none).
func (s *Snapshot) Entity(name string) *Entity {
	for i := range s.Entities {
		if s.Entities[i].Name == name {
			return &s.Entities[i]
		}
	}
	return nil
}

func fillEntity(out *Entity, e *config.Entity, ends map[string]map[int32]kadm.ListedOffset, configs map[string]map[string]string) {
	have, ok := configs[e.Topic]
	if !ok {
		return
	}
	out.Exists = true
	out.Partitions = len(ends[e.Topic])
	out.EndOffsets = lag(ends[e.Topic], nil)
	out.Compaction = map[string]string{}
	for _, k := range CompactionKeys {
		if v, ok := have[k]; ok {
			out.Compaction[k] = v
		}
	}
	if out.Partitions != e.Partitions {
		out.Drift = append(out.Drift, TopicDrift{Setting: "partitions", Want: fmt.Sprint(e.Partitions), Have: fmt.Sprint(out.Partitions)})
	}
	want := e.WantTopicConfig()
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if have[k] != want[k] {
			out.Drift = append(out.Drift, TopicDrift{Setting: k, Want: want[k], Have: have[k]})
		}
	}
}

// lag sums end offset minus next offset over the partitions (next nil:
// the end offsets themselves).
func lag(ends map[int32]kadm.ListedOffset, next map[int32]int64) int64 {
	var n int64
	for p, o := range ends {
		if o.Err == nil {
			n += max(o.Offset-next[p], 0)
		}
	}
	return n
}

// kafkaState reads every topic's end offsets and configs: one
// ListEndOffsets and one DescribeTopicConfigs for all topics (only those
// that exist, as the end offsets show).
func kafkaState(ctx context.Context, adm *kadm.Client, entities []Entity, models []readModel) (map[string]map[int32]kadm.ListedOffset, map[string]map[string]string, error) {
	var topics []string
	for _, e := range entities {
		topics = append(topics, e.Topic)
	}
	for _, m := range models {
		topics = append(topics, m.Topic)
	}
	slices.Sort(topics)
	topics = slices.Compact(topics)
	ends := map[string]map[int32]kadm.ListedOffset{}
	configs := map[string]map[string]string{}
	if len(topics) == 0 {
		return ends, configs, nil
	}
	listed, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, nil, fmt.Errorf("list the end offsets of the topics: %w", err)
	}
	var existing []string
	for t, ps := range listed {
		ok := true
		for _, o := range ps {
			ok = ok && o.Err == nil
		}
		if ok && len(ps) > 0 {
			ends[t] = ps
			existing = append(existing, t)
		}
	}
	if len(existing) == 0 {
		return ends, configs, nil
	}
	slices.Sort(existing)
	rcs, err := adm.DescribeTopicConfigs(ctx, existing...)
	if err != nil {
		return nil, nil, fmt.Errorf("describe the topics' configs: %w", err)
	}
	for _, rc := range rcs {
		if rc.Err != nil {
			return nil, nil, fmt.Errorf("describe the configs of topic %s: %w", rc.Name, rc.Err)
		}
		m := map[string]string{}
		for _, c := range rc.Configs {
			if c.Value != nil {
				m[c.Key] = *c.Value
			}
		}
		configs[rc.Name] = m
	}
	return ends, configs, nil
}

// retention is a topic's delete.retention.ms.
func retention(cfg map[string]string) (time.Duration, bool) {
	var ms int64
	if _, err := fmt.Sscan(cfg["delete.retention.ms"], &ms); err != nil {
		return 0, false
	}
	return time.Duration(ms) * time.Millisecond, true
}
