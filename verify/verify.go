// Package verify finds drift between an entity's source of truth, its
// topic and a read model, by comparing a content hash of each key's state
// in the canonical Avro encoding under the entity's schema. `ecst verify` is
// a thin shell around Run; a service can expose Run on its admin endpoint.
//
// What counts as drift, per key:
//   - missing: the source has the key; the topic's latest record for it is a
//     tombstone, or there is none;
//   - extra: the topic's latest record is a full state; the source lacks it;
//   - stale: both have it, with different content.
//
// Nothing in flight is drift. The source and the outbox are read in one
// snapshot, then the topic up to its end offsets listed after that
// snapshot: a change committed before the snapshot is then either still
// pending in the outbox (in flight: outbox.PendingKeys) or on the topic
// below those ends. Two things can
// still make a key look drifted for a moment: a change committed after the
// snapshot that reaches the topic before the ends are listed, and a Kafka
// transaction the relay saw committed whose markers are not yet written (its
// records are not yet below the last stable offset). So every key found
// drifted is checked again, in a new snapshot with the topic read on to its
// new ends, up to three times; only a key drifted every time is reported.
package verify

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/internal/pgavro"
	"github.com/ecst-io/ecst/internal/pgident"
	"github.com/ecst-io/ecst/internal/source"
	"github.com/ecst-io/ecst/internal/topicscan"
	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/relay"
	"github.com/ecst-io/ecst/republish"
	"github.com/ecst-io/ecst/schemas"
)

// Config is what a verification needs.
type Config struct {
	// Pool is the database of the source table, the outbox and the mirror
	// (required).
	Pool *pgxpool.Pool
	// Registry resolves the schemas of the topic's records (required).
	Registry *schemas.Registry
	// Entity is the entity to verify; it needs a source.
	Entity *config.Entity
	// Kafka is the client configuration: seed brokers, TLS, SASL
	// (kafkaopts.Client).
	Kafka []kgo.Opt
	// Logger receives the verification's logs (nil: none).
	Logger *slog.Logger
	// Publisher is needed by Repair only.
	Publisher *producer.Publisher
	// Metrics, if set, count the runs and keep what the last one found.
	Metrics *Metrics
}

// Options choose what to compare and whether to repair. Errors name these
// fields (verify.Options.Mirror); `ecst verify` translates them to its flags.
type Options struct {
	// Mirror is an `ecst mirror` table to compare with the topic too, its
	// name read as SQL reads it (schema-qualified or not, quoted or not);
	// "" (the default) compares the source with the topic only.
	Mirror string
	// Samples is how many keys to list per kind of drift; 0 means 10.
	Samples int
	// Diffs is how many stale keys get a field-level diff; 0 means 3.
	Diffs int
	// Repair republishes the drifted keys (tombstoning the extra ones),
	// waits for the relay (and the mirror) to catch up, and verifies again.
	// Off by default. It needs Config.Publisher, and a relay running.
	Repair bool
	// Wait bounds a repair's wait for the relay and the mirror; 0 means 2
	// minutes.
	Wait time.Duration
	// Progress, if set, reports work under way: what a long verification
	// has read, and what a repair has written and waits for. It is called
	// from more than one goroutine (the source and the topic are read at
	// the same time), and must not block. Nil by default.
	Progress func(Progress)
	// afterSnapshot, a test hook, runs between a snapshot and the topic
	// read that follows it.
	afterSnapshot func()
	// leaderGrace is how long a repair waits for a relay to lead a shard
	// holding its rows before it gives up (default 10s: a standby takes
	// over within relay.lease_timeout).
	leaderGrace time.Duration
}

// Progress is a report of work under way: Done of Total (0: unknown).
type Progress struct {
	Phase       Phase // the step under way
	Done, Total int64 // what the Phase's comment counts
}

// Phase is a step of a verification or a repair; its comment says what
// Done counts.
type Phase string

// The phases, in the order they start (the source, mirror and topic reads
// overlap).
const (
	PhaseSource    Phase = "source"    // source keys read
	PhaseMirror    Phase = "mirror"    // mirror rows read
	PhaseTopic     Phase = "topic"     // topic records read
	PhaseRepublish Phase = "republish" // drifted keys written to the outbox, of Total
	PhaseRelay     Phase = "relay"     // outbox rows the relay has published, of the Total the repair waits for
	PhaseCatchUp   Phase = "catch-up"  // topic offsets the mirror has consumed, of the Total it was behind
)

// ErrNoRelay: a repair has outbox rows that no relay is there to publish.
var ErrNoRelay = errors.New("no relay is running")

// Report is a verification's outcome.
type Report struct {
	Entity       string `json:"entity"`          // the entity's name
	Topic        string `json:"topic"`           // its topic
	SourceKeys   int64  `json:"source_keys"`     // keys in the source
	TopicKeys    int64  `json:"topic_keys"`      // keys whose latest record is a full state
	TopicRecords int64  `json:"topic_records"`   // records read from the topic (every key's history left by compaction)
	InFlight     int64  `json:"in_flight"`       // keys with outbox rows not yet published
	Missing      int64  `json:"missing"`         // keys in the source, not alive on the topic
	Extra        int64  `json:"extra"`           // keys alive on the topic, not in the source
	Stale        int64  `json:"stale"`           // keys whose state differs between source and topic
	Samples      Sample `json:"samples"`         // some keys of each kind (Options.Samples)
	Diffs        []Diff `json:"diffs,omitempty"` // field-level diffs of some stale keys (Options.Diffs)
	// Mirror compares the topic with a read model table.
	Mirror *MirrorReport `json:"mirror,omitempty"`
	// Repair is set when Options.Repair ran; its After is the verification
	// that followed it.
	Repair  *RepairReport `json:"repair,omitempty"`
	Elapsed string        `json:"elapsed"` // how long it took, as time.Duration prints it
	// VerifyRun is the row of ecst.verify_runs that records this run (0:
	// not recorded).
	VerifyRun int64 `json:"verify_run,omitempty"`

	missing, extra, stale []string
}

// Sample lists some keys of each kind of drift.
type Sample struct {
	Missing []string `json:"missing"` // some of the missing keys
	Extra   []string `json:"extra"`   // some of the extra keys
	Stale   []string `json:"stale"`   // some of the stale keys
}

// MirrorReport compares a mirror table with the topic.
type MirrorReport struct {
	Table   string `json:"table"`           // the mirror's table (Options.Mirror)
	Rows    int64  `json:"rows"`            // its rows
	Lagging int64  `json:"lagging"`         // keys whose latest record the mirror has not consumed yet
	Missing int64  `json:"missing"`         // keys alive on the topic, not in the mirror
	Extra   int64  `json:"extra"`           // keys in the mirror, not alive on the topic
	Stale   int64  `json:"stale"`           // keys whose state differs between topic and mirror
	Samples Sample `json:"samples"`         // some keys of each kind
	Diffs   []Diff `json:"diffs,omitempty"` // field-level diffs of some stale keys

	missing, extra, stale []string
}

// Diff is a field-level difference of one stale key.
type Diff struct {
	Key    string      `json:"key"`    // the stale key
	Fields []FieldDiff `json:"fields"` // its fields that differ, in the schema's order
}

// FieldDiff is one field that differs. Want is the source's value (the
// topic's for a mirror), Got the topic's (the mirror's).
type FieldDiff struct {
	Field string `json:"field"` // the field's name
	Want  any    `json:"want"`  // see the type's comment
	Got   any    `json:"got"`   // see the type's comment
}

// RepairReport says what a repair did.
type RepairReport struct {
	RunID       int64   `json:"run_id"`      // the republish run that wrote the repair
	Republished int64   `json:"republished"` // missing and stale keys' states written
	Tombstoned  int64   `json:"tombstoned"`  // extra keys' tombstones written
	After       *Report `json:"after"`       // the verification after the repair
}

// InSync reports whether nothing drifted (after a repair: whether the
// verification after it found nothing).
func (r *Report) InSync() bool {
	if r.Repair != nil && r.Repair.After != nil {
		return r.Repair.After.InSync()
	}
	ok := r.Missing == 0 && r.Extra == 0 && r.Stale == 0
	if r.Mirror != nil {
		ok = ok && r.Mirror.Missing == 0 && r.Mirror.Extra == 0 && r.Mirror.Stale == 0
	}
	return ok
}

type hash [16]byte

// topicEntry is the latest record of a key.
type topicEntry struct {
	h         hash
	partition int32
	offset    int64
	alive     bool
}

// verifier holds one verification's state.
type verifier struct {
	cfg    Config
	opts   Options
	src    *source.Source
	schema avro.Schema
	canon  *canon

	topic   map[string]topicEntry
	ends    map[int32]int64
	records int64 // read from the topic, by every scan
	wal     bool  // the database runs the WAL transport
}

// walInFlight finds, with the WAL transport, the keys whose events the
// snapshot sees and the relay has not published: the snapshot's first
// statement reads the WAL position, which every commit it sees is before;
// once the slot has confirmed it, they are all on the topic (read after
// this). If no relay streams the slot, its pending events are read from it.
func (v *verifier) walInFlight(ctx context.Context, tx pgx.Tx, s *snap) error {
	var at string
	if err := tx.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&at); err != nil {
		return fmt.Errorf("read the WAL position: %w", err)
	}
	upto, err := pglogrepl.ParseLSN(at)
	if err != nil {
		return err
	}
	keys, err := relay.WALPending(ctx, v.cfg.Pool, upto, v.cfg.Entity.Topic, v.opts.Wait)
	if err != nil {
		return err
	}
	s.inFlight = keys
	return nil
}

// Run verifies the entity, and repairs it when asked. Every run that ends
// (in sync, drifted or failed) is recorded in ecst.verify_runs, and counted
// in cfg.Metrics; one interrupted by ctx is neither, having concluded
// nothing. A run that cannot be recorded is logged as a warning: the
// verification itself stands.
func Run(ctx context.Context, cfg Config, opts Options) (*Report, error) {
	started := time.Now()
	if opts.Samples <= 0 {
		opts.Samples = 10
	}
	if opts.Diffs <= 0 {
		opts.Diffs = 3
	}
	if opts.Wait <= 0 {
		opts.Wait = 2 * time.Minute
	}
	if opts.leaderGrace <= 0 {
		opts.leaderGrace = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	rep, err := verifyAndRepair(ctx, cfg, opts)
	if err != nil && ctx.Err() != nil {
		return rep, err
	}
	finished := time.Now()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	id, rerr := record(rctx, cfg.Pool, cfg.Entity, opts.Mirror, started, finished, rep, err)
	switch {
	case rerr != nil:
		cfg.Logger.Warn("the verification is not recorded", "entity", cfg.Entity.Name, "err", rerr)
	case rep != nil:
		rep.VerifyRun = id
	}
	cfg.Metrics.observe(cfg.Entity.Name, rep, err, finished)
	return rep, err
}

func verifyAndRepair(ctx context.Context, cfg Config, opts Options) (*Report, error) {
	rep, err := run(ctx, cfg, opts)
	if err != nil || !opts.Repair || rep.InSync() {
		return rep, err
	}
	rr, err := repair(ctx, cfg, opts, rep)
	rep.Repair = rr
	return rep, err
}

func run(ctx context.Context, cfg Config, opts Options) (*Report, error) {
	start := time.Now()
	e := cfg.Entity
	schema, err := schemas.Parse(e.SchemaText)
	if err != nil {
		return nil, err
	}
	v := &verifier{cfg: cfg, opts: opts, schema: schema, canon: newCanon(cfg.Registry, schema), topic: map[string]topicEntry{}}
	conn, err := cfg.Pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to the database: %w", err)
	}
	defer conn.Release()
	if v.src, err = source.Plan(ctx, conn.Conn(), e); err != nil {
		return nil, err
	}
	tr, err := outbox.DatabaseTransport(ctx, conn)
	if err != nil {
		return nil, err
	}
	v.wal = tr == outbox.TransportWAL
	var mirror *mirrorPlan
	if opts.Mirror != "" {
		if mirror, err = planMirror(ctx, conn.Conn(), schema, opts.Mirror); err != nil {
			return nil, err
		}
	}
	snap, err := v.firstPass(ctx, conn.Conn(), mirror)
	if err != nil {
		return nil, err
	}
	rep := &Report{Entity: e.Name, Topic: e.Topic, SourceKeys: int64(len(snap.source)), TopicRecords: v.records, InFlight: int64(len(snap.inFlight))}
	for _, t := range v.topic {
		if t.alive {
			rep.TopicKeys++
		}
	}
	d := v.classify(snap, mirror)
	moving, err := v.recheck(ctx, conn.Conn(), mirror, snap, &d)
	if err != nil {
		return nil, err
	}
	rep.InFlight += moving
	if err := v.fill(ctx, conn.Conn(), rep, d); err != nil {
		return nil, err
	}
	if mirror != nil {
		if rep.Mirror, err = v.mirrorReport(ctx, conn.Conn(), mirror, snap, d); err != nil {
			return nil, err
		}
	}
	rep.Elapsed = time.Since(start).Round(time.Millisecond).String()
	return rep, nil
}

// firstPass reads the source, the outbox and the mirror in one snapshot,
// and the topic to the ends listed once that snapshot exists: at the same
// time, on two connections.
func (v *verifier) firstPass(ctx context.Context, conn *pgx.Conn, mirror *mirrorPlan) (*snap, error) {
	scanCtx, cancelScan := context.WithCancel(ctx)
	defer cancelScan()
	scanned := make(chan error, 1)
	snap, err := v.snapshot(ctx, conn, nil, mirror, func() {
		go func() {
			if v.opts.afterSnapshot != nil {
				v.opts.afterSnapshot()
			}
			scanned <- v.scan(scanCtx)
		}()
	})
	if err != nil {
		return nil, err
	}
	if err := <-scanned; err != nil {
		return nil, err
	}
	return snap, nil
}

// drift is the keys found drifted, each list sorted: against the source,
// and in the mirror.
type drift struct {
	missing, extra, stale                   []string
	mirrorMissing, mirrorExtra, mirrorStale []string
	lagging                                 int64 // mirror keys not consumed yet
}

// classify compares a snapshot's keys with the topic as read so far.
func (v *verifier) classify(s *snap, mirror *mirrorPlan) drift {
	var d drift
	d.missing, d.extra, d.stale = v.compareSource(s)
	if mirror != nil {
		d.mirrorMissing, d.mirrorExtra, d.mirrorStale, d.lagging = v.compareMirror(s)
	}
	return d
}

// keys lists every drifted key once, sorted.
func (d *drift) keys() []string {
	keys := slices.Concat(d.missing, d.extra, d.stale, d.mirrorMissing, d.mirrorExtra, d.mirrorStale)
	slices.Sort(keys)
	return slices.Compact(keys)
}

// recheck looks again at every key found drifted, up to three times: a key
// changed while it was being compared looks drifted once, rarely twice. A
// key whose source state or latest record changed between two looks is
// being written right now: its own event carries its full state, so it
// counts as in flight, not as drift. d keeps the keys drifted every time;
// moving counts the keys found in flight.
func (v *verifier) recheck(ctx context.Context, conn *pgx.Conn, mirror *mirrorPlan, prev *snap, d *drift) (moving int64, err error) {
	for pass := 0; pass < 3; pass++ {
		keys := d.keys()
		if len(keys) == 0 {
			break
		}
		before := make(map[string]topicEntry, len(keys))
		for _, k := range keys {
			before[k] = v.topic[k]
		}
		next, err := v.snapshot(ctx, conn, keys, mirror, nil)
		if err != nil {
			return 0, err
		}
		if err := v.scanOn(ctx); err != nil {
			return 0, err
		}
		inFlight := map[string]bool{}
		for _, k := range keys {
			h1, ok1 := prev.source[k]
			h2, ok2 := next.source[k]
			if ok1 != ok2 || h1 != h2 || v.topic[k] != before[k] || next.inFlight[k] {
				inFlight[k] = true
			}
		}
		still := func(a, b []string) []string {
			return slices.DeleteFunc(intersect(a, b), func(k string) bool { return inFlight[k] })
		}
		again := v.classify(next, mirror)
		d.missing, d.extra, d.stale = still(d.missing, again.missing), still(d.extra, again.extra), still(d.stale, again.stale)
		if mirror != nil {
			d.mirrorMissing, d.mirrorExtra, d.mirrorStale = still(d.mirrorMissing, again.mirrorMissing), still(d.mirrorExtra, again.mirrorExtra), still(d.mirrorStale, again.mirrorStale)
		}
		moving += int64(len(inFlight))
		prev = next
	}
	return moving, nil
}

// fill writes the source ⇄ topic drift into rep: counts, samples, and a
// field-level diff of the first stale keys.
func (v *verifier) fill(ctx context.Context, conn *pgx.Conn, rep *Report, d drift) error {
	rep.missing, rep.extra, rep.stale = d.missing, d.extra, d.stale
	rep.Missing, rep.Extra, rep.Stale = int64(len(d.missing)), int64(len(d.extra)), int64(len(d.stale))
	rep.Samples = Sample{Missing: head(d.missing, v.opts.Samples), Extra: head(d.extra, v.opts.Samples), Stale: head(d.stale, v.opts.Samples)}
	for _, k := range head(d.stale, v.opts.Diffs) {
		diff, err := v.diffSource(ctx, conn, k)
		if err != nil {
			return err
		}
		rep.Diffs = append(rep.Diffs, diff)
	}
	return nil
}

// mirrorReport reports the topic ⇄ mirror drift, the mirror's rows counted
// in the first snapshot.
func (v *verifier) mirrorReport(ctx context.Context, conn *pgx.Conn, mirror *mirrorPlan, first *snap, d drift) (*MirrorReport, error) {
	mm, me, ms := d.mirrorMissing, d.mirrorExtra, d.mirrorStale
	mr := &MirrorReport{Table: mirror.table.String(), Rows: int64(len(first.mirror)), Lagging: d.lagging,
		Missing: int64(len(mm)), Extra: int64(len(me)), Stale: int64(len(ms)), missing: mm, extra: me, stale: ms,
		Samples: Sample{Missing: head(mm, v.opts.Samples), Extra: head(me, v.opts.Samples), Stale: head(ms, v.opts.Samples)}}
	for _, k := range head(ms, v.opts.Diffs) {
		diff, err := v.diffMirror(ctx, conn, mirror, k)
		if err != nil {
			return nil, err
		}
		mr.Diffs = append(mr.Diffs, diff)
	}
	return mr, nil
}

func head(s []string, n int) []string {
	if s == nil {
		return []string{}
	}
	return slices.Clone(s[:min(n, len(s))])
}

func intersect(a, b []string) []string {
	in := make(map[string]bool, len(b))
	for _, k := range b {
		in[k] = true
	}
	out := make([]string, 0, len(a))
	for _, k := range a {
		if in[k] {
			out = append(out, k)
		}
	}
	return out
}

func (v *verifier) progress(phase Phase, n int64) {
	report(v.opts, phase, n, 0)
}

func report(o Options, phase Phase, done, total int64) {
	if o.Progress != nil {
		o.Progress(Progress{Phase: phase, Done: done, Total: total})
	}
}

// snap is one consistent view of the database.
type snap struct {
	source   map[string]hash
	inFlight map[string]bool
	mirror   map[string]hash
	offsets  map[int32]int64 // the mirror's next offsets
	keys     map[string]bool // nil: the whole source was read
}

// snapshot reads the source (only keys, when given), the outbox's keys and
// the mirror in one REPEATABLE READ transaction.
//
// taken, if set, is called once the snapshot exists (after its first read).
func (v *verifier) snapshot(ctx context.Context, conn *pgx.Conn, keys []string, mirror *mirrorPlan, taken func()) (*snap, error) {
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck
	s := &snap{source: map[string]hash{}, inFlight: map[string]bool{}}
	if keys != nil {
		s.keys = make(map[string]bool, len(keys))
		for _, k := range keys {
			s.keys[k] = true
		}
	}
	if v.wal {
		if err := v.walInFlight(ctx, tx, s); err != nil {
			return nil, err
		}
	} else {
		// The lock comes before the snapshot (LOCK takes none): a relay's
		// rotation then cannot truncate, between the snapshot and the read
		// below, rows that were pending in the snapshot.
		if _, err := tx.Exec(ctx, `LOCK TABLE ecst.outbox IN ACCESS SHARE MODE`); err != nil {
			return nil, fmt.Errorf("read the outbox: %w", err)
		}
		pending, err := outbox.PendingKeys(ctx, tx, v.cfg.Entity.Topic)
		if err != nil {
			return nil, err
		}
		for _, k := range pending {
			s.inFlight[k] = true
		}
	}
	if taken != nil {
		taken()
	}
	q, args := v.src.AllSQL(), []any(nil)
	if keys != nil {
		q, args = v.src.RowsSQL(), []any{keys}
	}
	if err := v.hashRows(ctx, tx, q, args, v.src.Mapper, s.source, PhaseSource); err != nil {
		return nil, fmt.Errorf("read the source: %w", err)
	}
	if mirror != nil {
		s.mirror = map[string]hash{}
		q, args := mirror.all(), []any(nil)
		if keys != nil {
			q, args = mirror.rows(), []any{keys}
		}
		if err := v.hashRows(ctx, tx, q, args, mirror.mapper, s.mirror, PhaseMirror); err != nil {
			return nil, fmt.Errorf("read mirror %s: %w", mirror.table, err)
		}
		if s.offsets, err = mirror.offsets(ctx, tx, v.cfg.Entity.Topic); err != nil {
			return nil, err
		}
	}
	return s, tx.Commit(ctx)
}

// hashRows hashes the rows of q into out, reporting progress as phase.
func (v *verifier) hashRows(ctx context.Context, tx pgx.Tx, q string, args []any, m *pgavro.Mapper, out map[string]hash, phase Phase) error {
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	var n int64
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return err
		}
		key, _, state, err := m.Map(vals)
		if err != nil {
			return err
		}
		h, err := v.canon.hashState(state)
		if err != nil {
			return fmt.Errorf("key %q: %w", key, err)
		}
		out[key] = h
		if n++; n%10_000 == 0 {
			v.progress(phase, n)
		}
	}
	return rows.Err()
}

func (v *verifier) scan(ctx context.Context) error {
	ends, err := topicscan.Scan(ctx, v.cfg.Kafka, v.cfg.Entity.Topic, nil, v.record(ctx))
	v.ends = ends
	return err
}

// scanOn reads the topic on from the previous ends to its current ends.
func (v *verifier) scanOn(ctx context.Context) error {
	ends, err := topicscan.Scan(ctx, v.cfg.Kafka, v.cfg.Entity.Topic, v.ends, v.record(ctx))
	if err == nil {
		v.ends = ends
	}
	return err
}

func (v *verifier) record(ctx context.Context) func(*kgo.Record) error {
	var n int64
	return func(r *kgo.Record) error {
		e := topicEntry{partition: r.Partition, offset: r.Offset, alive: r.Value != nil}
		if e.alive {
			e.h = v.canon.hashWire(ctx, r.Value)
		}
		v.topic[string(r.Key)] = e
		v.records++
		if n++; n%10_000 == 0 {
			v.progress(PhaseTopic, n)
		}
		return nil
	}
}

// compareSource classifies the keys of s (all keys, or s.keys).
func (v *verifier) compareSource(s *snap) (missing, extra, stale []string) {
	consider := func(k string) bool { return s.keys == nil || s.keys[k] }
	for k, h := range s.source {
		if s.inFlight[k] {
			continue
		}
		t, ok := v.topic[k]
		switch {
		case !ok || !t.alive:
			missing = append(missing, k)
		case t.h != h:
			stale = append(stale, k)
		}
	}
	for k, t := range v.topic {
		if !t.alive || !consider(k) || s.inFlight[k] {
			continue
		}
		if _, ok := s.source[k]; !ok {
			extra = append(extra, k)
		}
	}
	slices.Sort(missing)
	slices.Sort(extra)
	slices.Sort(stale)
	return missing, extra, stale
}

// compareMirror classifies the mirror's keys against the topic. A key whose
// latest record lies at or past the mirror's offset in its partition is
// lagging, not drifted.
func (v *verifier) compareMirror(s *snap) (missing, extra, stale []string, lagging int64) {
	consider := func(k string) bool { return s.keys == nil || s.keys[k] }
	behind := func(t topicEntry) bool { return t.offset >= s.offsets[t.partition] }
	for k, t := range v.topic {
		if !consider(k) {
			continue
		}
		if behind(t) {
			lagging++
			continue
		}
		h, ok := s.mirror[k]
		switch {
		case t.alive && !ok:
			missing = append(missing, k)
		case !t.alive && ok:
			extra = append(extra, k)
		case t.alive && ok && h != t.h:
			stale = append(stale, k)
		}
	}
	for k := range s.mirror {
		if _, ok := v.topic[k]; !ok {
			extra = append(extra, k)
		}
	}
	slices.Sort(missing)
	slices.Sort(extra)
	slices.Sort(stale)
	return missing, extra, stale, lagging
}

// diffSource compares a stale key's source row with its topic record.
func (v *verifier) diffSource(ctx context.Context, conn *pgx.Conn, key string) (Diff, error) {
	want, err := readOne(ctx, conn, v.src.RowsSQL(), key, v.src.Mapper)
	if err != nil {
		return Diff{}, err
	}
	got, err := v.topicState(ctx, key)
	if err != nil {
		return Diff{}, err
	}
	return v.diff(key, want, got), nil
}

func (v *verifier) diffMirror(ctx context.Context, conn *pgx.Conn, m *mirrorPlan, key string) (Diff, error) {
	got, err := readOne(ctx, conn, m.rows(), key, m.mapper)
	if err != nil {
		return Diff{}, err
	}
	want, err := v.topicState(ctx, key)
	if err != nil {
		return Diff{}, err
	}
	return v.diff(key, want, got), nil
}

func readOne(ctx context.Context, conn *pgx.Conn, q, key string, m *pgavro.Mapper) (map[string]any, error) {
	rows, err := conn.Query(ctx, q, []string{key})
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	if !rows.Next() {
		return nil, rows.Err()
	}
	vals, err := rows.Values()
	if err != nil {
		return nil, err
	}
	_, _, state, err := m.Map(vals)
	return state, err
}

func (v *verifier) topicState(ctx context.Context, key string) (any, error) {
	t := v.topic[key]
	rec, err := topicscan.Fetch(ctx, v.cfg.Kafka, v.cfg.Entity.Topic, t.partition, t.offset)
	if err != nil {
		return nil, err
	}
	s, err := v.canon.decode(ctx, rec.Value)
	if err != nil {
		return fmt.Sprintf("undecodable: %v", err), nil
	}
	return s, nil
}

// diff lists the fields whose canonical JSON differs.
func (v *verifier) diff(key string, want, got any) Diff {
	d := Diff{Key: key}
	w := v.canon.normalize(want)
	g, ok := v.canon.normalize(got).(map[string]any)
	if !ok {
		d.Fields = append(d.Fields, FieldDiff{Field: "(value)", Want: w, Got: got})
		return d
	}
	wm, _ := w.(map[string]any)
	for _, f := range v.schema.(*avro.RecordSchema).Fields() {
		if !reflect.DeepEqual(wm[f.Name()], g[f.Name()]) {
			d.Fields = append(d.Fields, FieldDiff{Field: f.Name(), Want: wm[f.Name()], Got: g[f.Name()]})
		}
	}
	return d
}

// canon computes content hashes in the canonical form: the Avro binary
// encoding of the state under the entity's (reader) schema.
type canon struct {
	reg    *schemas.Registry
	reader avro.Schema

	mu       sync.Mutex
	resolved map[int]avro.Schema // writer id → schema resolving it to the reader; nil: undecodable
	same     map[int]bool        // writer id whose schema is the reader's: its bytes are canonical
}

func newCanon(reg *schemas.Registry, reader avro.Schema) *canon {
	return &canon{reg: reg, reader: reader, resolved: map[int]avro.Schema{}, same: map[int]bool{}}
}

func (c *canon) hashState(state map[string]any) (hash, error) {
	b, err := avro.Marshal(c.reader, state)
	if err != nil {
		return hash{}, err
	}
	return sum(b), nil
}

func sum(b []byte) hash {
	s := sha256.Sum256(b)
	return hash(s[:16])
}

// undecodable is the hash of a value that does not decode: it matches no
// state, so the key counts as stale.
var undecodable = hash{0xff}

// hashWire hashes a Confluent wire-format value. A value written with the
// reader's own schema is hashed as it is; others are decoded, resolved to
// the reader's schema and encoded again.
func (c *canon) hashWire(ctx context.Context, value []byte) hash {
	id, payload, err := schemas.DecodeWire(value)
	if err != nil {
		return undecodable
	}
	s, same := c.schemaFor(ctx, id)
	if s == nil {
		return undecodable
	}
	if same && !hasMap(c.reader) {
		return sum(payload)
	}
	v, err := schemas.DecodeAny(s, payload)
	if err != nil {
		return undecodable
	}
	b, err := avro.Marshal(c.reader, v)
	if err != nil {
		return undecodable
	}
	return sum(b)
}

func (c *canon) decode(ctx context.Context, value []byte) (any, error) {
	id, payload, err := schemas.DecodeWire(value)
	if err != nil {
		return nil, err
	}
	s, _ := c.schemaFor(ctx, id)
	if s == nil {
		return nil, fmt.Errorf("schema id %d does not resolve to the entity's schema", id)
	}
	return schemas.DecodeAny(s, payload)
}

func (c *canon) schemaFor(ctx context.Context, id int) (avro.Schema, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.resolved[id]; ok {
		return s, c.same[id]
	}
	w, err := c.reg.SchemaByID(ctx, id)
	var s avro.Schema
	if err == nil {
		if w.Fingerprint() == c.reader.Fingerprint() {
			s, c.same[id] = c.reader, true
		} else if r, err := avro.NewSchemaCompatibility().Resolve(c.reader, w); err == nil {
			s = r
		}
	}
	c.resolved[id] = s
	return s, c.same[id]
}

// normalize renders a state as JSON values, so that a source row and a
// decoded record compare equal when they encode equal.
func (c *canon) normalize(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	b, err := avro.Marshal(c.reader, m)
	if err != nil {
		return v
	}
	var d any
	if err := avro.Unmarshal(c.reader, b, &d); err != nil {
		return v
	}
	j, err := json.Marshal(d)
	if err != nil {
		return v
	}
	var out any
	_ = json.Unmarshal(j, &out)
	return out
}

func hasMap(s avro.Schema) bool {
	found := false
	var walk func(avro.Schema, map[string]bool)
	walk = func(s avro.Schema, seen map[string]bool) {
		switch t := s.(type) {
		case *avro.MapSchema:
			found = true
		case *avro.ArraySchema:
			walk(t.Items(), seen)
		case *avro.UnionSchema:
			for _, b := range t.Types() {
				walk(b, seen)
			}
		case *avro.RecordSchema:
			if seen[t.FullName()] {
				return
			}
			seen[t.FullName()] = true
			for _, f := range t.Fields() {
				walk(f.Type(), seen)
			}
		case *avro.RefSchema:
			walk(t.Schema(), seen)
		}
	}
	walk(s, map[string]bool{})
	return found
}

// mirrorPlan reads an `ecst mirror` table.
type mirrorPlan struct {
	table  pgident.Name
	mapper *pgavro.Mapper
}

// mirrorTable reads Options.Mirror as `ecst mirror --table` does.
func mirrorTable(table string) (pgident.Name, error) {
	n, err := pgident.Parse(table)
	if err != nil {
		return pgident.Name{}, fmt.Errorf("verify.Options.Mirror: %w", err)
	}
	return n, nil
}

func planMirror(ctx context.Context, conn *pgx.Conn, schema avro.Schema, mirror string) (*mirrorPlan, error) {
	table, err := mirrorTable(mirror)
	if err != nil {
		return nil, err
	}
	desc, err := conn.Prepare(ctx, "", "SELECT * FROM "+table.Quoted())
	if err != nil {
		return nil, fmt.Errorf("verify.Options.Mirror %s: %w", table, err)
	}
	cols := make([]pgavro.Column, len(desc.Fields))
	for i, f := range desc.Fields {
		cols[i] = pgavro.Column{Name: f.Name, OID: f.DataTypeOID}
	}
	m, err := pgavro.New(schema, cols, pgavro.Options{Key: "_key", IgnoreExtra: true})
	if err != nil {
		return nil, fmt.Errorf("verify.Options.Mirror %s is not a mirror of this entity: %w", table, err)
	}
	return &mirrorPlan{table: table, mapper: m}, nil
}

func (m *mirrorPlan) all() string { return "SELECT * FROM " + m.table.Quoted() }
func (m *mirrorPlan) rows() string {
	return "SELECT * FROM " + m.table.Quoted() + ` WHERE "_key" = ANY($1::text[])`
}

func (m *mirrorPlan) offsets(ctx context.Context, q relay.Querier, topic string) (map[int32]int64, error) {
	// `ecst mirror` names its consumer after the table's canonical spelling.
	rows, err := q.Query(ctx, `SELECT partition, next_offset FROM ecst.consumer_offsets WHERE consumer = $1 AND topic = $2`, "mirror:"+m.table.String(), topic)
	if err != nil {
		return nil, fmt.Errorf("read the mirror's offsets: %w", err)
	}
	out := map[int32]int64{}
	var p int32
	var o int64
	_, err = pgx.ForEachRow(rows, []any{&p, &o}, func() error { out[p] = o; return nil })
	return out, err
}

// repair republishes the drifted keys, waits for them to reach the topic
// (and the mirror), and verifies again. It writes nothing when no relay is
// running, since its rows would wait in the outbox for nobody; once it has
// written, an error says what was written and that it will be published.
func repair(ctx context.Context, cfg Config, opts Options, rep *Report) (*RepairReport, error) {
	if cfg.Publisher == nil {
		return nil, errors.New("repair needs a publisher")
	}
	upserts := map[string]bool{}
	tombs := map[string]bool{}
	for _, k := range slices.Concat(rep.missing, rep.stale) {
		upserts[k] = true
	}
	for _, k := range rep.extra {
		tombs[k] = true
	}
	if rep.Mirror != nil {
		// A mirror's drifted key gets its current state again (or a
		// tombstone when the source lacks it): the mirror applies it.
		for _, k := range slices.Concat(rep.Mirror.missing, rep.Mirror.stale, rep.Mirror.extra) {
			upserts[k] = true
			tombs[k] = true
		}
	}
	running, err := relayRunning(ctx, cfg.Pool)
	if err != nil {
		return nil, err
	}
	if !running {
		return nil, fmt.Errorf("%w (no session took a relay leader lock within %s), so nothing would publish the repair: "+
			"start `ecst relay`, then run %s again. Nothing was written", ErrNoRelay, relayStartGrace, again(opts, true))
	}
	keys := slices.Sorted(maps.Keys(upserts))
	res, err := republish.Run(ctx, republish.Config{Pool: cfg.Pool, Publisher: cfg.Publisher, Entity: cfg.Entity, Kafka: cfg.Kafka, Logger: cfg.Logger},
		republish.Options{Keys: keys, Tombstones: slices.Sorted(maps.Keys(tombs)), MaxBacklog: -1,
			Progress: func(p republish.Progress) { report(opts, PhaseRepublish, p.Done, p.Total) }})
	if err != nil {
		return nil, fmt.Errorf("republish the drifted keys: %w", err)
	}
	rr := &RepairReport{RunID: res.RunID, Republished: res.Written, Tombstoned: res.Tombstones}
	if err := waitRelayed(ctx, cfg, opts, rr); err != nil {
		return rr, err
	}
	if opts.Mirror != "" {
		if err := waitMirror(ctx, cfg, opts); err != nil {
			return rr, err
		}
	}
	again := opts
	again.Repair = false
	rr.After, err = run(ctx, cfg, again)
	return rr, err
}

// relayStartGrace is how long a repair waits for a relay to lead a shard
// before it writes: one started just before takes its lock within it.
const relayStartGrace = 3 * time.Second

// relayRunning reports whether a relay leads a shard of the outbox (or the
// WAL transport's slot), or starts to within relayStartGrace.
func relayRunning(ctx context.Context, q relay.Querier) (bool, error) {
	deadline := time.Now().Add(relayStartGrace)
	for {
		leaders, err := relay.Leaders(ctx, q)
		if err != nil || len(leaders) > 0 {
			return len(leaders) > 0, err
		}
		if wal, err := relay.LeadsWAL(ctx, q); err != nil || wal {
			return wal, err
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		if !wait.Sleep(ctx, 100*time.Millisecond) {
			return false, ctx.Err()
		}
	}
}

// waitRelayed waits until the relay has published every outbox row of the
// topic up to the repair's last (a shard is published in id order). It
// gives up early when a shard holding such rows has had no relay leading it
// for opts.leaderGrace.
func waitRelayed(ctx context.Context, cfg Config, opts Options, rr *RepairReport) error {
	if tr, err := outbox.DatabaseTransport(ctx, cfg.Pool); err != nil {
		return err
	} else if tr == outbox.TransportWAL {
		return waitRelayedWAL(ctx, cfg, opts, rr)
	}
	topic := cfg.Entity.Topic
	_, maxID, err := outbox.PendingByShard(ctx, cfg.Pool, topic, 0)
	if err != nil {
		return err
	}
	pending := func() (map[int]int64, int64, error) {
		if maxID == 0 {
			return nil, 0, nil // nothing of the topic was pending
		}
		byShard, _, err := outbox.PendingByShard(ctx, cfg.Pool, topic, maxID)
		if err != nil {
			return nil, 0, err
		}
		var total int64
		for _, n := range byShard {
			total += n
		}
		return byShard, total, nil
	}
	_, total, err := pending()
	if err != nil {
		return err
	}
	// The relay may have published some already: the total is at least
	// what the repair wrote.
	total = max(total, rr.Republished+rr.Tombstoned)
	report(opts, PhaseRelay, 0, total)
	left := total
	var unledSince time.Time
	err = wait.Until(ctx, opts.Wait, 100*time.Millisecond, "the relay to publish the repair", func() (bool, error) {
		byShard, n, err := pending()
		if err != nil {
			return false, err
		}
		left = n
		report(opts, PhaseRelay, total-left, total)
		if left == 0 {
			return true, nil
		}
		orphans, err := unled(ctx, cfg.Pool, byShard)
		if err != nil {
			return false, err
		}
		if len(orphans) == 0 {
			unledSince = time.Time{}
			return false, nil
		}
		if unledSince.IsZero() {
			unledSince = time.Now()
		}
		if time.Since(unledSince) < opts.leaderGrace {
			return false, nil
		}
		return false, fmt.Errorf("%w: no relay has led outbox shard %s for %s", ErrNoRelay, joinInts(orphans), opts.leaderGrace)
	})
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w. %d of the %d outbox rows the repair waits for are not published yet; the repair itself is written "+
		"(republish run %d: %d full states, %d tombstones), and a relay publishes it once it runs: start `ecst relay`, then check with %s",
		err, left, total, rr.RunID, rr.Republished, rr.Tombstoned, again(opts, false))
}

// waitRelayedWAL is waitRelayed for the WAL transport: it waits until the
// slot has confirmed the WAL position after the repair. It gives up early
// when no relay has led the WAL for opts.leaderGrace.
func waitRelayedWAL(ctx context.Context, cfg Config, opts Options, rr *RepairReport) error {
	var at string
	if err := cfg.Pool.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&at); err != nil {
		return fmt.Errorf("read the WAL position: %w", err)
	}
	upto, err := pglogrepl.ParseLSN(at)
	if err != nil {
		return err
	}
	total := rr.Republished + rr.Tombstoned
	report(opts, PhaseRelay, 0, total)
	var unledSince time.Time
	err = wait.Until(ctx, opts.Wait, 100*time.Millisecond, "the relay to publish the repair", func() (bool, error) {
		_, confirmed, err := relay.LiveSlot(ctx, cfg.Pool)
		if err != nil {
			return false, err
		}
		if confirmed >= upto {
			report(opts, PhaseRelay, total, total)
			return true, nil
		}
		leads, err := relay.LeadsWAL(ctx, cfg.Pool)
		if err != nil || leads {
			unledSince = time.Time{}
			return false, err
		}
		if unledSince.IsZero() {
			unledSince = time.Now()
		}
		if time.Since(unledSince) < opts.leaderGrace {
			return false, nil
		}
		return false, fmt.Errorf("%w: no relay has led the WAL transport's slot for %s", ErrNoRelay, opts.leaderGrace)
	})
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w. The repair is written to the WAL (republish run %d: %d full states, %d tombstones), and the WAL relay publishes it once it runs: start `ecst relay`, then check with %s",
		err, rr.RunID, rr.Republished, rr.Tombstoned, again(opts, false))
}

// unled returns the shards of byShard that no relay leads, in order.
func unled(ctx context.Context, q relay.Querier, byShard map[int]int64) ([]int, error) {
	leaders, err := relay.Leaders(ctx, q)
	if err != nil {
		return nil, err
	}
	var out []int
	for shard := range byShard {
		if !slices.Contains(leaders, shard) {
			out = append(out, shard)
		}
	}
	slices.Sort(out)
	return out, nil
}

// waitMirror waits until the mirror's offsets reach the topic's ends.
func waitMirror(ctx context.Context, cfg Config, opts Options) error {
	topic := cfg.Entity.Topic
	ends, err := topicscan.Ends(ctx, cfg.Kafka, topic)
	if err != nil {
		return err
	}
	table, err := mirrorTable(opts.Mirror)
	if err != nil {
		return err
	}
	m := &mirrorPlan{table: table}
	behind := func() (int64, error) {
		offs, err := m.offsets(ctx, cfg.Pool, topic)
		if err != nil {
			return 0, err
		}
		var n int64
		for p, end := range ends {
			n += max(0, end-offs[p])
		}
		return n, nil
	}
	total, err := behind()
	if err != nil {
		return err
	}
	report(opts, PhaseCatchUp, 0, total)
	left := total
	err = wait.Until(ctx, opts.Wait, 100*time.Millisecond, "mirror "+opts.Mirror+" to catch up", func() (bool, error) {
		var err error
		left, err = behind()
		report(opts, PhaseCatchUp, total-left, total)
		return left == 0, err
	})
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: it is %d offsets behind the end of %s. The repair is on the topic, and the mirror applies it once it runs: "+
		"start `ecst mirror %s --table %s` (or run it with --once), then check with %s", err, left, topic, cfg.Entity.Name, shellArg(opts.Mirror), again(opts, false))
}

// again is the Options that verify again what opts verified (and repair,
// when repair), as an error suggests them. Errors name Options fields, never
// flags: `ecst verify` translates them.
func again(opts Options, repair bool) string {
	var fields []string
	if opts.Mirror != "" {
		fields = append(fields, "Mirror: "+strconv.Quote(opts.Mirror))
	}
	if repair {
		fields = append(fields, "Repair: true")
	}
	return "verify.Options{" + strings.Join(fields, ", ") + "}"
}

// shellArg quotes s for a POSIX shell when it needs it, so that a command
// ecst suggests can be pasted as it is.
func shellArg(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:=@%+,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func joinInts(ns []int) string {
	ss := make([]string, len(ns))
	for i, n := range ns {
		ss[i] = strconv.Itoa(n)
	}
	return strings.Join(ss, ", ")
}
