package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/ecst-io/ecst/internal/wait"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// record is an event on its way to Kafka.
type record struct {
	id        int64         // the outbox row's id (table transport)
	lsn       pglogrepl.LSN // the message's position in the WAL (WAL transport)
	topic     string
	key       string
	value     []byte
	headers   []byte
	createdAt time.Time // the row's insert, or the commit of the event's transaction (WAL)
}

// batch is a run of records published in one Kafka transaction.
type batch struct {
	records []record
	read    time.Time // when the read that produced it started
	// drained is set on an empty batch in drain mode once the source has
	// handed out everything it was asked to drain.
	drained bool
	// waited is set on an empty batch when the source has already waited
	// for records: the term reads again at once, without a poll interval.
	waited bool
	// confirm is, for the WAL source, the position it may confirm to the
	// slot once this batch has committed (0: the batch ends inside a
	// transaction, so it confirms nothing more); recorded is set once the
	// WAL source has taken the batch's commit into account.
	confirm  pglogrepl.LSN
	recorded bool
	// taken is how many of the WAL source's queued events the batch took:
	// its records, before resolved capture markers left them.
	taken int
	// after is the table source's cursor once this batch is published.
	after *cursor
}

// source is where a leader term's records come from: for the table
// transport, the term's outbox shard; for the WAL transport, the slot. The term reads a batch, produces it in
// one Kafka transaction, and reads the next batch once the first is acked
// (pipelining); the source sees which batches committed only through acked.
type source interface {
	// next returns the batch that follows inFlight, or, with inFlight nil,
	// the first batch not yet committed; before reading it records that the
	// acked batches committed to Kafka (in the same round trip where it
	// can). An empty batch means nothing is waiting. When inFlight then
	// commits, the batch returned is the next to publish; when it fails,
	// the term drops it and calls next(nil) again.
	next(ctx context.Context, acked []*batch, inFlight *batch) (*batch, error)
	// settle records that acked batches committed, when no read follows:
	// the term is ending.
	settle(ctx context.Context, acked []*batch) error
	// park sets aside records the broker rejected for good
	// (RejectPark), so that the next read passes them over.
	park(ctx context.Context, rejected []*RejectedError) error
	// close ends the source's term, after settle.
	close()
}

// lead runs one leadership term of a unit: read, produce in a Kafka
// transaction, record what committed. It returns done in drain mode once the
// unit is drained.
func (r *Relay) lead(ctx context.Context, u unit, lock *pgx.Conn, log *slog.Logger) (done bool, err error) {
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
	bg.Add(1)
	go func() { defer bg.Done(); r.heartbeat(term, ls, endTerm) }()
	if !u.wal() {
		bg.Add(2)
		go func() { defer bg.Done(); r.sampleBacklog(term, int(u)) }()
		go func() { defer bg.Done(); r.rotateLoop(term) }()
	}

	p, err := r.startProducer(term, u, ls, log)
	if err != nil || p == nil { // nil, nil: the term ended
		return false, err
	}
	if err := r.prepareTerm(term, u, log); err != nil {
		p.close()
		return false, termFailed(term, err)
	}
	var src source
	if u.wal() {
		ws, err := r.startWAL(term, endTerm, log)
		if err != nil {
			p.close()
			return false, termFailed(term, err)
		}
		bg.Add(1)
		go func() { defer bg.Done(); r.emitHeartbeats(term) }()
		src = ws
	} else {
		src = r.tableSource(int(u), ls)
	}
	defer src.close()
	t := &termLoop{r: r, src: src, p: p, unit: u, ls: ls, log: log}
	defer t.end(ctx)
	return t.run(term)
}

// termLoop is one term's batch loop.
type termLoop struct {
	r    *Relay
	src  source
	p    *producer // nil between a failed batch and its replacement
	unit unit
	ls   *lease
	log  *slog.Logger
	// acked are the batches committed to Kafka that the source has not
	// recorded yet.
	acked []*batch
}

// end closes the term's producer and, whatever ended the term, records the
// batches Kafka committed, so that the next leader does not publish them
// again.
func (t *termLoop) end(ctx context.Context) {
	if len(t.acked) > 0 {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), t.r.cfg.ShutdownGrace)
		if err := t.src.settle(dctx, t.acked); err != nil {
			t.log.Warn("could not record published rows; the next leader will publish them again", "batches", len(t.acked), "err", err)
		}
		cancel()
	}
	if t.p != nil {
		t.p.close()
	}
}

// rewinder is a source that can go back to publish again what it
// recorded committed in the last moments (tableSource.rewind).
type rewinder interface{ rewind() }

// outcome is what became of a batch handed to the producer.
type outcome struct {
	rejected []*RejectedError
	err      error
}

func (t *termLoop) run(term context.Context) (done bool, err error) {
	r := t.r
	bo := backoff{min: 100 * time.Millisecond, max: 10 * time.Second}
	poll := r.cfg.PollMin
	var next *batch // read ahead while the previous batch was in flight
	for {
		if term.Err() != nil {
			return false, termCause(term)
		}
		b := next
		next = nil
		if b == nil {
			b, err = t.src.next(term, t.acked, nil)
			if err != nil {
				if term.Err() != nil {
					return false, termCause(term)
				}
				r.m.errors.WithLabelValues("database").Inc()
				r.m.retries.Inc()
				t.log.Warn("read outbox; retrying", "err", err)
				bo.sleep(term)
				continue
			}
			t.acked = nil
			if len(b.records) == 0 {
				if b.drained {
					return true, nil
				}
				if b.waited {
					continue
				}
				wait.Sleep(term, poll)
				poll = min(poll*2, r.cfg.PollMax)
				continue
			}
		}
		poll = r.cfg.PollMin
		// Capture markers are resolved before anything moves past them;
		// a batch of markers alone then has nothing to produce.
		if ok, err := t.resolve(term, b, &bo); err != nil || !ok {
			if err != nil {
				return false, err
			}
			continue
		}
		if len(b.records) == 0 {
			t.acked = append(t.acked, b)
			continue
		}
		if r.cfg.beforeProduce != nil {
			r.cfg.beforeProduce(int(t.unit), ids(b.records))
		}
		ahead, res := t.publish(term, b)
		if res.err == nil {
			t.acked = append(t.acked, b)
			r.m.observeBatch(b.records, time.Since(b.read))
			r.addPublished(b.records)
			bo.reset()
			if ahead != nil && len(ahead.records) > 0 {
				next = ahead
			}
			continue
		}
		// The batch failed: what was read ahead is dropped, and the next
		// read starts again from the first batch not committed.
		if done, err := t.failed(term, b, res, &bo); done || err != nil {
			return done, err
		}
	}
}

// publish produces b in one Kafka transaction and, once its records are
// acked and while the transaction commits, reads the batch after it. The
// read ahead is nil if it failed.
func (t *termLoop) publish(term context.Context, b *batch) (ahead *batch, res outcome) {
	// A batch in flight is finished even when the relay is told to stop,
	// within ShutdownGrace; a lost lease abandons it at once (fencing makes
	// its commit fail anyway).
	pctx, cancel := context.WithTimeout(context.WithoutCancel(term), t.r.cfg.ShutdownGrace)
	defer cancel()
	stopOnLease := context.AfterFunc(term, func() {
		if errors.Is(context.Cause(term), errLeaseLost) {
			cancel()
		}
	})
	defer stopOnLease()
	published, acks := make(chan outcome, 1), make(chan struct{})
	go func() {
		rejected, err := t.p.publish(pctx, b.records, acks)
		published <- outcome{rejected, err}
	}()
	// While the batch commits, record the last committed ones and read the
	// next batch. The read waits for the batch's acks so that it takes in
	// the rows that committed while the batch was being produced. It is
	// used only if the batch commits; see "Pipelining" in
	// docs/architecture.md for why this keeps per-key order.
	select {
	case <-acks:
	case res := <-published:
		published <- res
	}
	aheadStart := time.Now()
	ahead, err := t.src.next(term, t.acked, b)
	if err == nil {
		t.acked = nil
		ahead.read = aheadStart
	} else {
		ahead = nil
	}
	return ahead, <-published
}

// failed deals with a batch that did not commit: it halts or parks
// rejected records, ends the term on fencing or a fatal error, and otherwise
// replaces the producer for a retry.
func (t *termLoop) failed(term context.Context, b *batch, res outcome, bo *backoff) (done bool, err error) {
	r := t.r
	if len(res.rejected) > 0 {
		if r.cfg.OnReject == RejectHalt {
			return false, res.rejected[0]
		}
		if err := t.src.park(term, res.rejected); err != nil {
			t.log.Warn("park rejected rows; retrying", "err", err)
			bo.sleep(term)
		}
		return false, nil
	}
	kind, fatal := classifyKafka(res.err)
	r.m.errors.WithLabelValues(kind).Inc()
	if fatal != nil {
		return false, fatal
	}
	if kind == "fenced" {
		// Another leader took over: this term is over.
		return false, fmt.Errorf("%w: fenced by a newer leader: %v", errLeaseLost, res.err)
	}
	r.m.retries.Inc()
	t.log.Warn("publish batch; retrying", "rows", len(b.records), "kind", kind, "err", res.err)
	// The producer may be in a state only a fresh one recovers from; a new
	// InitProducerID also fences anything of ours still pending. What
	// Kafka reported committed just before is published again (rewinder).
	if rw, ok := t.src.(rewinder); ok {
		rw.rewind()
		t.acked = nil
	}
	t.p.close()
	t.p = nil
	bo.sleep(term)
	t.p, err = r.startProducer(term, t.unit, t.ls, t.log)
	return false, err
}

// ids are the records' outbox ids, or for the WAL transport their WAL
// positions.
func ids(rows []record) []int64 {
	out := make([]int64, len(rows))
	for i, r := range rows {
		out[i] = r.id
		if r.lsn != 0 {
			out[i] = int64(r.lsn) //nolint:gosec // WAL positions stay far below 2^63
		}
	}
	return out
}

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
