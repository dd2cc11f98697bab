package relay

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/outbox"
)

// The WAL source. One goroutine owns the replication connection: it
// receives the slot's transactions, in commit order, and queues their events
// (walItem); it sends the slot the position it may confirm. The term's loop
// takes batches from the front of the queue, and tells the source which
// batches Kafka committed (next's acked, settle); a batch that failed is
// served again from the front. The position confirmed to the slot is the
// end of the last transaction all of whose events are committed in Kafka:
// the slot hands out again, after a crash or a new leader, everything after
// it. docs/architecture.md ("The WAL transport") has the argument.

// walItem is one event received from the slot.
type walItem struct {
	rec   record
	txEnd pglogrepl.LSN // the end of its transaction
	last  bool          // the last event of its transaction
}

// walTx is the transaction being received.
type walTx struct {
	final      pglogrepl.LSN
	commitTime time.Time
	items      []walItem
	heartbeat  time.Time // a heartbeat in it: when it was written
}

// beat is a heartbeat received: the end of its transaction and when it was
// written.
type beat struct {
	end pglogrepl.LSN
	at  time.Time
}

type walSource struct {
	r       *Relay
	log     *slog.Logger
	conn    *pgconn.PgConn
	endTerm context.CancelCauseFunc
	stop    context.CancelFunc // stops the receiver
	done    chan struct{}      // closed when the receiver has stopped

	mu          sync.Mutex
	wake        chan struct{} // closed and replaced when items arrive or the receiver fails
	items       []walItem     // received, not yet committed to Kafka, in order
	bytes       int           // the size of items' records
	handed      int           // items[:handed] are handed out (in flight or read ahead)
	open        *walTx        // the transaction being received, if any
	received    pglogrepl.LSN // the end of the last whole transaction received
	idleEnd     pglogrepl.LSN // a keepalive's WAL end received with no transaction open
	confirmable pglogrepl.LSN // everything before it is committed to Kafka
	beats       []beat        // heartbeats received, not yet confirmable
	lastBeat    time.Time     // when the newest confirmable heartbeat was written
	failed      error         // the receiver's end

	sent     pglogrepl.LSN // the position last confirmed to the slot
	lastSent time.Time
}

// startWAL connects the replication stream of the relay's slot and starts
// receiving. The caller holds the WAL lease: a WAL sender still streaming
// the slot belongs to a leader that lost it, and is ended.
func (r *Relay) startWAL(term context.Context, endTerm context.CancelCauseFunc, log *slog.Logger) (*walSource, error) {
	st, err := r.checkSlot(term)
	if err != nil {
		return nil, err
	}
	conn, err := r.replicationConn(term)
	if err != nil {
		return nil, err
	}
	s := &walSource{r: r, log: log, conn: conn, endTerm: endTerm, wake: make(chan struct{}), done: make(chan struct{}),
		confirmable: st.confirmed, sent: st.confirmed, received: st.confirmed, lastSent: time.Now()}
	if err := s.startReplication(term); err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	rctx, stop := context.WithCancel(context.WithoutCancel(term))
	s.stop = stop
	go s.receive(rctx)
	context.AfterFunc(term, stop)
	r.walSrc.Store(s)
	log.Info("streaming the slot", "slot", r.slot, "from", st.confirmed.String())
	return s, nil
}

// replicationConn connects for streaming: the pool's settings with
// replication=database. wal_sender_timeout is the lease timeout, so that a
// leader that stops answering (paused, cut off) loses its WAL sender about
// when it loses its lease, not after PostgreSQL's default of a minute.
func (r *Relay) replicationConn(ctx context.Context) (*pgconn.PgConn, error) {
	cfg := r.cfg.Pool.Config().ConnConfig.Config.Copy()
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = walApplicationName
	cfg.RuntimeParams["wal_sender_timeout"] = strconv.FormatInt(r.cfg.LeaseTimeout.Milliseconds(), 10)
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect for replication (the role needs the REPLICATION attribute, and pg_hba.conf must allow it): %w", err)
	}
	return conn, nil
}

// walApplicationName is the application_name of the relay's WAL sender.
const walApplicationName = "ecst-relay-wal"

// startReplication starts streaming the slot from its confirmed position.
// A WAL sender still streaming it is a stale leader's (the caller holds the
// lease): it is ended, and the start retried.
func (s *walSource) startReplication(ctx context.Context) error {
	opts := pglogrepl.StartReplicationOptions{PluginArgs: []string{"proto_version '1'", "publication_names '" + Publication + "'", "messages 'true'"}}
	deadline := time.Now().Add(s.r.cfg.LeaseTimeout + 10*time.Second)
	waited := false
	for {
		err := pglogrepl.StartReplication(ctx, s.conn, s.r.slot, s.confirmable, opts)
		if err == nil {
			return nil
		}
		var pe *pgconn.PgError
		if !errors.As(err, &pe) {
			return fmt.Errorf("start streaming slot %s: %w", s.r.slot, err)
		}
		if invalidated(pe) {
			return s.r.slotInvalidated(pe.Message)
		}
		if pe.Code != "55006" || time.Now().After(deadline) { // object_in_use
			return fmt.Errorf("start streaming slot %s: %w", s.r.slot, err)
		}
		// Only a WAL sender is a leader's; a session that reads the slot
		// (`ecst verify` peeking at what it holds) is waited for.
		var pid int
		if err := s.r.cfg.Pool.QueryRow(ctx, `SELECT coalesce((SELECT pg_terminate_backend(s.active_pid)::int * s.active_pid
			FROM pg_replication_slots s JOIN pg_stat_activity a ON a.pid = s.active_pid
			WHERE s.slot_name = $1 AND a.backend_type = 'walsender'), 0)`, s.r.slot).Scan(&pid); err != nil {
			return fmt.Errorf("end the stale WAL sender of slot %s: %w", s.r.slot, err)
		}
		if pid != 0 {
			s.log.Warn("ended the WAL sender a stale leader left streaming the slot", "slot", s.r.slot, "pid", pid)
		} else if !waited {
			waited = true
			s.log.Info("the slot is in use by a session that is not a WAL sender (`ecst verify` reading it?); waiting", "slot", s.r.slot)
		}
		if !wait.Sleep(ctx, 50*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// invalidated reports PostgreSQL's error for a slot it invalidated
// (max_slot_wal_keep_size).
func invalidated(pe *pgconn.PgError) bool {
	return pe.Code == "55000" && (containsFold(pe.Message, "can no longer get changes") || containsFold(pe.Detail, "invalidated"))
}

// statusEvery is how often the receiver tells the slot where it is, at
// least: well within wal_sender_timeout (the lease timeout).
func (s *walSource) statusEvery() time.Duration { return min(time.Second, s.r.cfg.LeaseTimeout/3) }

// queueBound is how many events the source holds before it stops reading
// the stream (and TCP holds the WAL sender back).
func (s *walSource) queueBound() (n, bytes int) {
	return 8 * s.r.cfg.BatchSize, 2 * s.r.cfg.BatchBytes
}

// receive owns the replication connection until ctx ends or it fails.
func (s *walSource) receive(ctx context.Context) {
	defer close(s.done)
	for ctx.Err() == nil {
		if err := s.sendStatus(ctx, false); err != nil {
			s.fail(ctx, err)
			return
		}
		if s.full() {
			s.waitSpace(ctx, s.statusEvery())
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		msg, err := s.conn.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if pgconn.Timeout(err) {
				continue
			}
			s.fail(ctx, fmt.Errorf("%w: receive from slot %s: %v", errStreamLost, s.r.slot, err))
			return
		}
		if err := s.handle(ctx, msg); err != nil {
			s.fail(ctx, err)
			return
		}
	}
}

func (s *walSource) handle(ctx context.Context, msg pgproto3.BackendMessage) error {
	switch msg := msg.(type) {
	case *pgproto3.CopyData:
		if len(msg.Data) == 0 {
			return nil
		}
		switch msg.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			k, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
			if err != nil {
				return fmt.Errorf("%w: parse a keepalive: %v", errStreamLost, err)
			}
			s.mu.Lock()
			if s.open == nil && k.ServerWALEnd > s.idleEnd {
				s.idleEnd = k.ServerWALEnd
			}
			s.mu.Unlock()
			if k.ReplyRequested {
				return s.sendStatus(ctx, true)
			}
		case pglogrepl.XLogDataByteID:
			x, err := pglogrepl.ParseXLogData(msg.Data[1:])
			if err != nil {
				return fmt.Errorf("%w: parse WAL data: %v", errStreamLost, err)
			}
			return s.decode(x)
		}
	case *pgproto3.ErrorResponse:
		pe := pgconn.ErrorResponseToPgError(msg)
		if invalidated(pe) {
			return s.r.slotInvalidated(pe.Message)
		}
		return fmt.Errorf("%w: slot %s: %v", errStreamLost, s.r.slot, pe)
	case *pgproto3.CopyDone:
		return fmt.Errorf("%w: the server ended the stream of slot %s", errStreamLost, s.r.slot)
	}
	return nil
}

// decode takes one pgoutput message: transactions arrive whole, between
// BEGIN and COMMIT, in commit order.
func (s *walSource) decode(x pglogrepl.XLogData) error {
	m, err := pglogrepl.Parse(x.WALData)
	if err != nil {
		return fmt.Errorf("%w: decode pgoutput at %s: %v", errStreamLost, x.WALStart, err)
	}
	switch m := m.(type) {
	case *pglogrepl.BeginMessage:
		s.mu.Lock()
		s.open = &walTx{final: m.FinalLSN, commitTime: m.CommitTime}
		s.mu.Unlock()
	case *pglogrepl.LogicalDecodingMessage:
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.open == nil || !m.Transactional {
			return nil // ecst writes transactional messages only
		}
		switch m.Prefix {
		case outbox.MessagePrefix:
			// The message aliases the connection's read buffer, which the
			// next receive overwrites: the event keeps a copy.
			msg, err := outbox.DecodeMessage(bytes.Clone(m.Content))
			if err != nil {
				return fatalf("the event at WAL position %s: %w (a message with prefix %q that ecst did not write?)", m.LSN, err, outbox.MessagePrefix)
			}
			s.open.items = append(s.open.items, walItem{rec: record{lsn: m.LSN, topic: msg.Topic, key: msg.Key, value: msg.Value,
				headers: msg.Headers, createdAt: s.open.commitTime}})
		case MarkerPrefix:
			// A capture marker: the term loop resolves it before the slot
			// confirms past it, and never produces it.
			s.open.items = append(s.open.items, walItem{rec: record{lsn: m.LSN, topic: MarkerTopic, value: bytes.Clone(m.Content),
				headers: outbox.EncodeHeaders(nil), createdAt: s.open.commitTime}})
		case outbox.HeartbeatPrefix:
			if n, err := strconv.ParseInt(string(m.Content), 10, 64); err == nil {
				s.open.heartbeat = time.Unix(0, n)
			}
		}
	case *pglogrepl.CommitMessage:
		s.mu.Lock()
		defer s.mu.Unlock()
		tx := s.open
		s.open = nil
		if tx == nil {
			return nil
		}
		end := m.TransactionEndLSN
		for i := range tx.items {
			tx.items[i].txEnd = end
			s.bytes += recordSize(tx.items[i].rec)
		}
		if n := len(tx.items); n > 0 {
			tx.items[n-1].last = true
		}
		s.items = append(s.items, tx.items...)
		if !tx.heartbeat.IsZero() {
			s.beats = append(s.beats, beat{end: end, at: tx.heartbeat})
		}
		s.received = max(s.received, end)
		s.settleIdle()
		s.notify()
	}
	return nil
}

func recordSize(r record) int { return len(r.key) + len(r.value) + len(r.headers) }

// notify wakes a waiting next. Call with mu held.
func (s *walSource) notify() {
	close(s.wake)
	s.wake = make(chan struct{})
}

func (s *walSource) full() bool {
	n, b := s.queueBound()
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.items) >= n || s.bytes >= b
}

// waitSpace waits until the queue has room (or d passes).
func (s *walSource) waitSpace(ctx context.Context, d time.Duration) {
	deadline := time.Now().Add(d)
	for s.full() && time.Now().Before(deadline) {
		s.mu.Lock()
		w := s.wake
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-w:
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// fail records the receiver's end and ends the term with it.
func (s *walSource) fail(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	s.mu.Lock()
	s.failed = err
	s.notify()
	s.mu.Unlock()
	s.endTerm(err)
}

// sendStatus tells the slot the confirmable position when it advanced,
// when forced (a keepalive asked for a reply) and at least every
// statusEvery.
func (s *walSource) sendStatus(ctx context.Context, force bool) error {
	s.mu.Lock()
	c := s.confirmable
	s.mu.Unlock()
	if !force && c <= s.sent && time.Since(s.lastSent) < s.statusEvery() {
		return nil
	}
	err := pglogrepl.SendStandbyStatusUpdate(ctx, s.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: c, WALFlushPosition: c, WALApplyPosition: c, ClientTime: time.Now()})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("%w: confirm %s to slot %s: %v", errStreamLost, c, s.r.slot, err)
	}
	s.sent, s.lastSent = c, time.Now()
	return nil
}

// commit records that acked batches committed to Kafka: their events leave
// the queue, and the position after them becomes confirmable. Call with mu
// held.
func (s *walSource) commit(acked []*batch) {
	for _, b := range acked {
		if b.recorded {
			continue // a next that failed recorded it; the term's settle passes it again
		}
		b.recorded = true
		n := b.taken
		for _, it := range s.items[:n] {
			s.bytes -= recordSize(it.rec)
		}
		s.items = s.items[n:]
		s.handed = max(s.handed-n, 0)
		s.confirmable = max(s.confirmable, b.confirm)
	}
	s.settleIdle()
}

// settleIdle: with nothing queued and no transaction open, everything
// received is committed to Kafka, and so is everything before the WAL
// end of a keepalive received while no transaction was open (the WAL
// sender had sent every transaction that committed before it). Call with
// mu held.
func (s *walSource) settleIdle() {
	if len(s.items) == 0 && s.open == nil {
		s.confirmable = max(s.confirmable, s.received, s.idleEnd)
	}
	for len(s.beats) > 0 && s.beats[0].end <= s.confirmable {
		s.lastBeat = s.beats[0].at
		s.beats = s.beats[1:]
	}
}

func (s *walSource) next(ctx context.Context, acked []*batch, inFlight *batch) (*batch, error) {
	s.mu.Lock()
	s.commit(acked)
	if inFlight == nil {
		s.handed = 0
	}
	// With nothing in flight, wait a while for events, so that they go out
	// as soon as they arrive; a read ahead takes what is there.
	if inFlight == nil && s.handed == len(s.items) && s.failed == nil && !s.drained() {
		w := s.wake
		s.mu.Unlock()
		t := time.NewTimer(s.r.cfg.PollMax)
		select {
		case <-ctx.Done():
		case <-w:
		case <-t.C:
		}
		t.Stop()
		s.mu.Lock()
	}
	defer s.mu.Unlock()
	if s.failed != nil {
		return nil, s.failed
	}
	b := &batch{read: time.Now(), waited: true}
	size := 0
	for _, it := range s.items[s.handed:] {
		size += recordSize(it.rec)
		if len(b.records) > 0 && (len(b.records) >= s.r.cfg.BatchSize || size > s.r.cfg.BatchBytes) {
			break
		}
		b.records = append(b.records, it.rec)
		if it.last {
			b.confirm = it.txEnd
		}
	}
	s.handed += len(b.records)
	b.taken = len(b.records)
	if s.r.cfg.sortByLSN {
		slices.SortStableFunc(b.records, func(x, y record) int { return cmp.Compare(x.lsn, y.lsn) })
	}
	b.drained = inFlight == nil && len(b.records) == 0 && s.drained()
	return b, nil
}

// drained reports, in drain mode, that everything up to the drain's
// target is committed to Kafka. Call with mu held.
func (s *walSource) drained() bool {
	return s.r.cfg.Drain && s.open == nil && len(s.items) == 0 && s.confirmable >= s.r.drainTarget
}

func (s *walSource) settle(_ context.Context, acked []*batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.commit(acked)
	return nil
}

// park sets rejected events aside in ecst.outbox_parked, with the negated
// WAL position as their id (the table transport's ids are positive), and
// drops them from the queue.
func (s *walSource) park(ctx context.Context, rejected []*RejectedError) error {
	s.mu.Lock()
	var rows []walItem
	var whys []error
	for _, rej := range rejected {
		for _, it := range s.items {
			if it.rec.lsn == rej.LSN {
				rows = append(rows, it)
				whys = append(whys, rej.Err)
			}
		}
	}
	s.mu.Unlock()
	parked := map[string]int64{}
	for i, it := range rows {
		_, err := s.r.cfg.Pool.Exec(ctx, `INSERT INTO ecst.outbox_parked (id, shard, topic, key, value, headers, created_at, error)
			VALUES ($1, 0, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING`,
			-int64(it.rec.lsn), it.rec.topic, it.rec.key, it.rec.value, it.rec.headers, it.rec.createdAt, whys[i].Error()) //nolint:gosec // WAL positions stay far below 2^63
		if err != nil {
			return fmt.Errorf("park the event at %s: %w", it.rec.lsn, err)
		}
		parked[it.rec.topic]++
		s.r.m.parked.WithLabelValues(it.rec.topic).Inc()
		s.log.Error("parked a record the broker rejected", "lsn", it.rec.lsn.String(), "topic", it.rec.topic, "key", it.rec.key, "err", whys[i])
	}
	s.mu.Lock()
	for _, it := range rows {
		i := slices.IndexFunc(s.items, func(x walItem) bool { return x.rec.lsn == it.rec.lsn })
		if i < 0 {
			continue
		}
		// The transaction's end moves to the event before, if it has one
		// queued; if not, its end is confirmed once the queue empties.
		if it.last && i > 0 && s.items[i-1].txEnd == it.txEnd {
			s.items[i-1].last = true
		}
		s.bytes -= recordSize(it.rec)
		s.items = slices.Delete(s.items, i, i+1)
	}
	s.handed = 0
	s.mu.Unlock()
	s.r.add(nil, parked)
	return nil
}

// close stops the receiver and, with the connection its own again, tells
// the slot the last confirmable position before it disconnects, so that
// the next leader (or drain) starts after what this term published.
func (s *walSource) close() {
	s.r.walSrc.CompareAndSwap(s, nil)
	s.stop()
	<-s.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if !s.conn.IsClosed() {
		if err := s.sendStatus(ctx, true); err == nil {
			// CopyDone makes the server process the status before it
			// answers: the slot then shows the position.
			_, _ = pglogrepl.SendStandbyCopyDone(ctx, s.conn)
		}
	}
	s.conn.Close(ctx)
}

// lag is the age of the oldest event not yet committed to Kafka, or with
// none, of the newest heartbeat confirmable (zero before the first).
func (s *walSource) lag() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.items) > 0 {
		return time.Since(s.items[0].rec.createdAt)
	}
	if s.lastBeat.IsZero() {
		return 0
	}
	return time.Since(s.lastBeat)
}

// emitHeartbeats writes a heartbeat message every relay.wal_heartbeat while
// the term lasts: on a database with no ecst traffic it is what moves the
// slot (and frees WAL), and it measures the lag.
func (r *Relay) emitHeartbeats(term context.Context) {
	t := time.NewTicker(r.cfg.WALHeartbeat)
	defer t.Stop()
	for {
		if err := r.heartbeatOnce(term); err != nil && term.Err() == nil {
			r.log.Debug("write a WAL heartbeat", "err", err)
		}
		select {
		case <-term.Done():
			return
		case <-t.C:
		}
	}
}

func (r *Relay) heartbeatOnce(ctx context.Context) error {
	_, err := r.cfg.Pool.Exec(ctx, "SELECT pg_logical_emit_message(true, $1, $2)", outbox.HeartbeatPrefix, strconv.FormatInt(time.Now().UnixNano(), 10))
	return err
}
