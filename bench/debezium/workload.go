package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/internal/bench"
	"github.com/ecst-io/ecst/outbox"
)

// Every value starts with the event's sequence number (8 bytes, big endian)
// and is padded with random bytes to -value-size: the checks read it back
// to find each event once, in order, with its key. The headers are the
// five of ecst's wire contract, as internal/bench's Outbox.Fill writes them.
var benchHeaders = []outbox.Header{
	{Key: "ecst-event-id", Value: []byte("0193a1c2-7f00-7000-8000-000000000000")},
	{Key: "ecst-entity-version", Value: []byte("12")},
	{Key: "ecst-event-type", Value: []byte("customer.upserted")},
	{Key: "ecst-occurred-at", Value: []byte("2026-11-24T10:00:00.123456Z")},
	{Key: "ecst-source", Value: []byte("bench")},
}

func value(seq uint64, pad []byte) []byte {
	v := make([]byte, 8+len(pad))
	binary.BigEndian.PutUint64(v, seq)
	copy(v[8:], pad)
	return v
}

func randomPad(valueSize int) []byte {
	pad := make([]byte, valueSize-8)
	_, _ = rand.Read(pad)
	return pad
}

// drainKey is the key of backlog event seq: -keys distinct keys, as in
// internal/bench's Outbox.Fill.
func drainKey(keys int) func(uint64) string {
	return func(seq uint64) string { return "customer-" + strconv.FormatUint(seq%uint64(keys), 10) }
}

// Steady-state events: writer w's i-th event has seq w<<32 | i and key
// w<w>-<i mod 500>, so every key has one writer and its events are in seq
// order.
func steadySeq(w, i int) uint64 { return uint64(w)<<32 | uint64(i) } //nolint:gosec // small

func steadyKey(seq uint64) string {
	return "w" + strconv.FormatUint(seq>>32, 10) + "-" + strconv.FormatUint(seq&0xffffffff%500, 10)
}

// fill writes rows backlog events through s's bulk path, in transactions of
// 50,000 (not timed).
func fill(ctx context.Context, e *env, s system, topic string, rows int) error {
	pad := randomPad(e.cfg.valueSize)
	key := drainKey(e.cfg.keys)
	const chunk = 50_000
	for done := 0; done < rows; done += chunk {
		batch := make([]outbox.Row, min(chunk, rows-done))
		for i := range batch {
			seq := uint64(done + i) //nolint:gosec // small
			k := key(seq)
			batch[i] = outbox.Row{Shard: outbox.Shard(topic, k, 1), Topic: topic, Key: k, Value: value(seq, pad), Headers: benchHeaders}
		}
		if err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error { return s.emitBulk(ctx, tx, batch) }); err != nil {
			return fmt.Errorf("fill the backlog: %w", err)
		}
	}
	_, err := e.pool.Exec(ctx, "VACUUM ANALYZE "+e.table)
	return err
}

// writers commit one event per transaction each, at a shared rate, as
// services do; each remembers when each of its commits returned.
type writers struct {
	e         *env
	s         system
	topic     string
	pad       []byte
	committed [][]time.Time // [writer][i]: when event steadySeq(w, i) committed
}

func newWriters(e *env, s system, topic string, n int) *writers {
	return &writers{e: e, s: s, topic: topic, pad: randomPad(e.cfg.valueSize), committed: make([][]time.Time, n)}
}

// run writes at rate events/s for d and returns how many it wrote.
func (ws *writers) run(ctx context.Context, rate int, d time.Duration) (int, error) {
	written, err := bench.Pace(ctx, len(ws.committed), rate, time.Now().Add(d), func(w, _ int) error {
		// Pace counts each call from 0; the events go on from the
		// warm-up's, so that every event of the topic has its own seq.
		seq := steadySeq(w, len(ws.committed[w]))
		k := steadyKey(seq)
		r := outbox.Row{Shard: outbox.Shard(ws.topic, k, 1), Topic: ws.topic, Key: k, Value: value(seq, ws.pad), Headers: benchHeaders}
		// One statement, sent alone: one transaction, one round trip.
		// Its result coming back is the commit's acknowledgement.
		var b pgx.Batch
		if err := ws.s.queue(&b, r); err != nil {
			return err
		}
		if err := ws.e.pool.SendBatch(ctx, &b).Close(); err != nil {
			return err
		}
		ws.committed[w] = append(ws.committed[w], time.Now())
		return nil
	})
	if err != nil && ctx.Err() == nil {
		return int(written), fmt.Errorf("write an event: %w", err)
	}
	return int(written), err
}

func (ws *writers) total() int {
	n := 0
	for _, c := range ws.committed {
		n += len(c)
	}
	return n
}

// ---------------------------------------------------------------------------
// reading the topic back

type record struct {
	seq      uint64
	key      string
	part     int32
	off      int64
	appended time.Time // the broker's LogAppendTime
	received time.Time // when the read_committed consumer got it
	txn      bool
}

// collector reads a topic from the start with read_committed isolation, as
// a consumer of ecst's topics does, and keeps every record.
type collector struct {
	cl    *kgo.Client
	mu    sync.Mutex
	recs  []record
	last  map[int32]record
	count atomic.Int64
	err   atomic.Pointer[error]
	done  chan struct{}
	stop  context.CancelFunc
}

func startCollector(ctx context.Context, e *env, topic string) (*collector, error) {
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, e.kopts...),
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(100*time.Millisecond))...)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithCancel(ctx)
	c := &collector{cl: cl, last: map[int32]record{}, done: make(chan struct{}), stop: cancel}
	go c.run(cctx)
	return c, nil
}

func (c *collector) run(ctx context.Context) {
	defer close(c.done)
	for {
		fs := c.cl.PollFetches(ctx)
		now := time.Now()
		if ctx.Err() != nil {
			return
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) { ferr = fmt.Errorf("fetch %s/%d: %w", t, p, err) })
		if ferr != nil {
			c.err.CompareAndSwap(nil, &ferr)
			return
		}
		c.mu.Lock()
		for _, r := range fs.Records() {
			if r.Attrs.TimestampType() != 1 {
				err := fmt.Errorf("record %d/%d has no LogAppendTime: the topic was not created with message.timestamp.type=LogAppendTime", r.Partition, r.Offset)
				c.err.CompareAndSwap(nil, &err)
			}
			var seq uint64
			if len(r.Value) >= 8 {
				seq = binary.BigEndian.Uint64(r.Value)
			}
			rec := record{seq: seq, key: string(r.Key), part: r.Partition, off: r.Offset, appended: r.Timestamp, received: now, txn: r.Attrs.IsTransactional()}
			if len(r.Value) != 0 && len(r.Value) < 8 {
				rec.seq = ^uint64(0) // the check reports it
			}
			c.recs = append(c.recs, rec)
			c.last[r.Partition] = rec
		}
		c.mu.Unlock()
		c.count.Add(int64(len(fs.Records())))
	}
}

func (c *collector) failure() error {
	if p := c.err.Load(); p != nil {
		return *p
	}
	return nil
}

// waitCount waits until n records have been read.
func (c *collector) waitCount(ctx context.Context, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for c.count.Load() < int64(n) {
		if err := c.failure(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d records on the topic after %s", c.count.Load(), n, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// finish reads to the end of the topic, once nothing writes to it any
// more, and stops. A partition is read to its end when its last record is
// at end-1, or at end-2 if it was written in a transaction (the commit
// marker is last).
func (c *collector) finish(ctx context.Context, adm *kadm.Client, topic string) ([]record, error) {
	defer func() { c.stop(); <-c.done; c.cl.Close() }()
	offs, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	ends := map[int32]int64{}
	offs.Each(func(o kadm.ListedOffset) { ends[o.Partition] = o.Offset })
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if err := c.failure(); err != nil {
			return nil, err
		}
		c.mu.Lock()
		at := true
		for p, end := range ends {
			if end == 0 {
				continue
			}
			last, ok := c.last[p]
			if !ok || last.off < end-2 || (last.off == end-2 && !last.txn) {
				at = false
			}
		}
		c.mu.Unlock()
		if at {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the topic was not read to its end offsets %v within 2 minutes (%d records read)", ends, c.count.Load())
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.recs, nil
}

// check verifies that the topic holds exactly the events in want (seq →
// key), each once, each key in one partition (the one Kafka's default
// partitioner picks for it, as ecst's producer does) and in seq order.
func check(recs []record, want map[uint64]string, partitions int) error {
	sorted := append([]record(nil), recs...)
	sort.Slice(sorted, func(i, j int) bool {
		if sorted[i].part != sorted[j].part {
			return sorted[i].part < sorted[j].part
		}
		return sorted[i].off < sorted[j].off
	})
	part := kgo.StickyKeyPartitioner(nil).ForTopic("")
	seen := make(map[uint64]bool, len(want))
	lastSeq := map[string]uint64{}
	var errs []error
	report := func(err error) {
		if len(errs) < 10 {
			errs = append(errs, err)
		}
	}
	dups := 0
	for _, r := range sorted {
		k, ok := want[r.seq]
		switch {
		case !ok:
			report(fmt.Errorf("record %d/%d: unknown event %d", r.part, r.off, r.seq))
			continue
		case k != r.key:
			report(fmt.Errorf("record %d/%d: event %d has key %q, want %q", r.part, r.off, r.seq, r.key, k))
		case seen[r.seq]:
			dups++
			report(fmt.Errorf("record %d/%d: event %d (key %s) a second time", r.part, r.off, r.seq, k))
		}
		seen[r.seq] = true
		if p := part.Partition(&kgo.Record{Key: []byte(r.key)}, partitions); int32(p) != r.part { //nolint:gosec // small
			report(fmt.Errorf("record %d/%d: key %s in partition %d, the default partitioner picks %d", r.part, r.off, r.key, r.part, p))
		}
		if last, ok := lastSeq[r.key]; ok && r.seq <= last {
			report(fmt.Errorf("record %d/%d: key %s out of order: event %d after %d", r.part, r.off, r.key, r.seq, last))
		}
		lastSeq[r.key] = r.seq
	}
	missing := len(want) - len(seen)
	if missing > 0 {
		report(fmt.Errorf("%d of %d events missing", missing, len(want)))
	}
	if len(errs) > 0 {
		return fmt.Errorf("the topic is wrong (%d records, %d duplicates, %d missing): %w", len(recs), dups, missing, errors.Join(errs...))
	}
	return nil
}

// ---------------------------------------------------------------------------
// results

type drainResult struct {
	startup, drain time.Duration
	span           time.Duration // first to last record's LogAppendTime
	rate           float64       // rows / drain
	load           string        // load average after the run
	cpu            cpuUse        // spent during the drain
}

type steadyResult struct {
	startup  time.Duration
	offered  int
	written  float64 // events/s achieved by the writers
	events   int
	consumed latencies // commit → read by a read_committed consumer
	appended latencies // commit → the broker's LogAppendTime (ms resolution)
	load     string    // load average after the run
	cpu      cpuUse    // spent while the measured events were written and read
}

type latencies struct{ p50, p99, max time.Duration }

func quantiles(lat []time.Duration) latencies {
	if len(lat) == 0 {
		return latencies{}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) time.Duration { return lat[min(int(p*float64(len(lat))), len(lat)-1)] }
	return latencies{p50: q(0.5), p99: q(0.99), max: lat[len(lat)-1]}
}

// ---------------------------------------------------------------------------
// the two workloads

func createTopic(ctx context.Context, e *env, topic string) error {
	lat := "LogAppendTime"
	resp, err := e.adm.CreateTopic(ctx, int32(e.cfg.partitions), -1, map[string]*string{"message.timestamp.type": &lat}, topic) //nolint:gosec // small
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	return nil
}

// reset empties the outbox between runs: Debezium never deletes what it
// read, and every run starts from the same empty table.
func reset(ctx context.Context, e *env) error {
	_, err := e.pool.Exec(ctx, "TRUNCATE "+e.table)
	return err
}

func runDrain(ctx context.Context, e *env, s system) (drainResult, error) {
	topic := "bench-dbz-" + s.name() + "-drain-" + e.runID
	if err := reset(ctx, e); err != nil {
		return drainResult{}, err
	}
	if err := createTopic(ctx, e, topic); err != nil {
		return drainResult{}, err
	}
	defer e.adm.DeleteTopic(context.WithoutCancel(ctx), topic) //nolint:errcheck // best effort
	if err := s.prepare(ctx); err != nil {
		return drainResult{}, err
	}
	defer s.cleanup(context.WithoutCancel(ctx)) //nolint:errcheck // best effort
	rows := e.cfg.rows
	logf("%s: writing a backlog of %d rows (not timed)", s.name(), rows)
	if err := fill(ctx, e, s, topic, rows); err != nil {
		return drainResult{}, err
	}
	logf("%s: draining", s.name())
	startup, d, cpu, err := s.drain(ctx, topic, rows)
	if err != nil {
		return drainResult{}, err
	}
	logf("%s: drained in %s; reading the topic back", s.name(), d.Round(time.Millisecond))
	col, err := startCollector(ctx, e, topic)
	if err != nil {
		return drainResult{}, err
	}
	recs, err := col.finish(ctx, e.adm, topic)
	if err != nil {
		return drainResult{}, err
	}
	want := make(map[uint64]string, rows)
	key := drainKey(e.cfg.keys)
	for i := range rows {
		want[uint64(i)] = key(uint64(i))
	}
	if err := check(recs, want, e.cfg.partitions); err != nil {
		return drainResult{}, fmt.Errorf("%s drain: %w", s.name(), err)
	}
	first, last := recs[0].appended, recs[0].appended
	for _, r := range recs {
		if r.appended.Before(first) {
			first = r.appended
		}
		if r.appended.After(last) {
			last = r.appended
		}
	}
	return drainResult{startup: startup, drain: d, span: last.Sub(first), rate: float64(rows) / d.Seconds(), cpu: cpu}, nil
}

func runSteady(ctx context.Context, e *env, s system) (steadyResult, error) {
	topic := "bench-dbz-" + s.name() + "-steady-" + e.runID
	if err := reset(ctx, e); err != nil {
		return steadyResult{}, err
	}
	if err := createTopic(ctx, e, topic); err != nil {
		return steadyResult{}, err
	}
	defer e.adm.DeleteTopic(context.WithoutCancel(ctx), topic) //nolint:errcheck // best effort
	if err := s.prepare(ctx); err != nil {
		return steadyResult{}, err
	}
	defer s.cleanup(context.WithoutCancel(ctx)) //nolint:errcheck // best effort
	stop, startup, err := s.start(ctx, topic)
	if err != nil {
		return steadyResult{}, err
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = stop()
		}
	}()
	col, err := startCollector(ctx, e, topic)
	if err != nil {
		return steadyResult{}, err
	}
	ws := newWriters(e, s, topic, e.cfg.writers)
	if e.cfg.warmup > 0 {
		// A fresh topic's first records (producer ids, transactions,
		// metadata) take hundreds of ms, and a fresh JVM runs slowly
		// until its JIT has compiled the hot paths (Debezium fell a
		// second behind for the first 5 s at 5000/s after 2 s at
		// 1000/s): not what is measured.
		if _, err := ws.run(ctx, e.cfg.rate, e.cfg.warmup); err != nil {
			return steadyResult{}, err
		}
		if err := col.waitCount(ctx, ws.total(), time.Minute); err != nil {
			return steadyResult{}, fmt.Errorf("warm-up: %w", err)
		}
	}
	measured, c0 := time.Now(), e.cpu.sample()
	logf("%s: %d events/s for %s", s.name(), e.cfg.rate, e.cfg.duration)
	n, err := ws.run(ctx, e.cfg.rate, e.cfg.duration)
	if err != nil {
		return steadyResult{}, err
	}
	if err := col.waitCount(ctx, ws.total(), 2*time.Minute); err != nil {
		return steadyResult{}, err
	}
	cpu := e.cpu.since(c0, e.cpu.sample())
	stopped = true
	if err := stop(); err != nil {
		return steadyResult{}, fmt.Errorf("stop %s: %w", s.name(), err)
	}
	recs, err := col.finish(ctx, e.adm, topic)
	if err != nil {
		return steadyResult{}, err
	}
	consumed, appended, err := steadyLatencies(e, s, recs, ws, measured)
	if err != nil {
		return steadyResult{}, err
	}
	return steadyResult{
		startup: startup, offered: e.cfg.rate, written: float64(n) / e.cfg.duration.Seconds(), events: len(consumed),
		consumed: quantiles(consumed), appended: quantiles(appended), cpu: cpu,
	}, nil
}

// steadyLatencies checks the topic against what the writers committed and
// returns, for every event committed from measured on, commit → consumed
// and commit → LogAppendTime; -csv writes them out.
func steadyLatencies(e *env, s system, recs []record, ws *writers, measured time.Time) (consumed, appended []time.Duration, err error) {
	want := make(map[uint64]string, ws.total())
	commit := make(map[uint64]time.Time, ws.total())
	for w, times := range ws.committed {
		for i, at := range times {
			seq := steadySeq(w, i)
			want[seq] = steadyKey(seq)
			if !at.Before(measured) {
				commit[seq] = at
			}
		}
	}
	if err := check(recs, want, e.cfg.partitions); err != nil {
		return nil, nil, fmt.Errorf("%s steady: %w", s.name(), err)
	}
	var csv strings.Builder
	csv.WriteString("seq,partition,offset,commit_unix_us,appended_unix_ms,received_unix_us\n")
	for _, r := range recs {
		at, ok := commit[r.seq]
		if !ok {
			continue
		}
		consumed = append(consumed, max(r.received.Sub(at), 0))
		appended = append(appended, max(r.appended.Sub(at), 0))
		fmt.Fprintf(&csv, "%d,%d,%d,%d,%d,%d\n", r.seq, r.part, r.off, at.UnixMicro(), r.appended.UnixMilli(), r.received.UnixMicro())
	}
	if e.cfg.csvDir != "" {
		path := filepath.Join(e.cfg.csvDir, s.name()+"-steady.csv")
		if err := os.WriteFile(path, []byte(csv.String()), 0o644); err != nil {
			return nil, nil, fmt.Errorf("-csv: %w", err)
		}
	}
	return consumed, appended, nil
}
