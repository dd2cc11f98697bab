package relay

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// readSQL reads shard $1 from cursor $2: the rows past it, and the rows up
// to it of the watched transactions ($4 <= txid < $5 with id > $6), $3 in
// id order. The watched rows are looked up through (txid, id) one range at a
// time (OFFSET 0 keeps the planner from flattening the lateral subquery into
// a scan of the shard).
const readSQL = `(SELECT id, topic, key, value, headers, created_at FROM ecst.outbox WHERE shard = $1 AND id > $2 ORDER BY id LIMIT $3)
UNION ALL
(SELECT o.id, o.topic, o.key, o.value, o.headers, o.created_at
	FROM unnest($4::xid8[], $5::xid8[], $6::bigint[]) AS w(lo, hi, lw)
	CROSS JOIN LATERAL (SELECT * FROM ecst.outbox o WHERE o.txid >= w.lo AND o.txid < w.hi AND o.id > w.lw OFFSET 0) AS o
	WHERE o.shard = $1 AND o.id <= $2)
ORDER BY id LIMIT $3`

// snapshotSQL describes the snapshot of the transaction it runs in.
const snapshotSQL = `SELECT pg_snapshot_xmax(s), ARRAY(SELECT pg_snapshot_xip(s)) FROM pg_current_snapshot() AS s`

// saveEvery bounds how often a leader writes its cursor: a crash publishes
// again at most about that much. Writing per batch would leave, under a
// long-held snapshot, a HOT chain no vacuum can prune.
const saveEvery = time.Second

// tableSource reads one outbox shard with a cursor (cursor.go).
type tableSource struct {
	r     *Relay
	shard int16
	ls    *lease
	// committed is the cursor after the last batch Kafka committed; nil
	// until loaded from ecst.relay_cursors.
	committed *cursor
	unsaved   bool // committed has moved since it was last saved
	savedAt   time.Time
	// parked are rows set aside this term: a re-read passes over them.
	parked map[int64]bool
	// recent are the cursors of the batches committed in the last
	// rewindWindow, oldest first, for rewind.
	recent []stamped
}

// stamped is a committed cursor and when its batch committed.
type stamped struct {
	at time.Time
	c  *cursor
}

// rewindWindow is how far back a rewind goes: further than a Kafka
// transaction's commit can be undone by the broker failing under it.
const rewindWindow = 10 * time.Second

// rewind moves the cursor back to where it was rewindWindow ago (or to
// where the term started), so that the batches committed since are
// published again. The relay calls it when it replaces its producer after
// a Kafka error: a transaction whose commit the client reported as done
// has been seen to end aborted when the broker restarted right after it
// (TestRelayBrokerRestart on a real broker), and publishing those rows
// again costs only duplicates, which consumers of full states ignore.
func (s *tableSource) rewind() {
	if len(s.recent) == 0 {
		return
	}
	s.committed, s.unsaved = s.recent[0].c, true
	s.recent = s.recent[:1]
}

func (r *Relay) tableSource(shard int, ls *lease) *tableSource {
	return &tableSource{r: r, shard: int16(shard), ls: ls, parked: map[int64]bool{}} //nolint:gosec // shard < MaxShards
}

func (s *tableSource) next(ctx context.Context, acked []*batch, inFlight *batch) (*batch, error) {
	if s.committed == nil {
		c, err := loadCursor(ctx, s.r.cfg.Pool, s.shard)
		if err != nil {
			return nil, err
		}
		s.committed, s.savedAt = &c, time.Now()
	}
	if len(s.recent) == 0 {
		s.recent = append(s.recent, stamped{time.Now(), s.committed})
	}
	if n := len(acked); n > 0 {
		s.committed, s.unsaved = acked[n-1].after, true
		now := time.Now()
		s.recent = append(s.recent, stamped{now, s.committed})
		// Keep the newest cursor older than the window as the rewind's
		// target, and everything after it.
		i := 0
		for i+1 < len(s.recent) && now.Sub(s.recent[i+1].at) > rewindWindow {
			i++
		}
		s.recent = s.recent[i:]
	}
	if s.unsaved && time.Since(s.savedAt) >= saveEvery {
		if err := s.save(ctx); err != nil {
			return nil, err
		}
	}
	from := s.committed
	if inFlight != nil {
		from = inFlight.after
	}
	b := &batch{read: time.Now()}
	rows, snap, err := s.read(ctx, *from)
	if err != nil {
		return nil, err
	}
	taken := fit(rows, s.r.cfg.BatchBytes)
	cut := taken < len(rows) || len(rows) >= s.r.cfg.BatchSize
	after := from.advance(snap, ids(rows[:taken]), cut, s.r.cfg.watch)
	b.after = &after
	for _, rec := range rows[:taken] {
		if !s.parked[rec.id] {
			b.records = append(b.records, rec)
		}
	}
	if inFlight == nil && len(b.records) == 0 {
		// Nothing to publish up to the new cursor (or only parked rows):
		// it is as good as committed. Going idle, save what was published.
		s.committed = &after
		s.unsaved = s.unsaved || taken > 0
		if s.unsaved {
			if err := s.save(ctx); err != nil {
				return nil, err
			}
		}
		// Drained: nothing was visible when read, so everything committed
		// before the read (and so before the relay started) is published.
		b.drained = s.r.cfg.Drain && taken == 0
	}
	return b, nil
}

// fit returns how many of rows a batch takes: at least one, and no more
// than fit in capBytes. The rest is the head of the next read.
func fit(rows []record, capBytes int) int {
	size := 0
	for i, rec := range rows {
		size += len(rec.value) + len(rec.headers) + len(rec.key)
		if i > 0 && size > capBytes {
			return i
		}
	}
	return len(rows)
}

func (s *tableSource) save(ctx context.Context) error {
	if err := s.ls.saveCursor(ctx, s.shard, *s.committed); err != nil {
		return err
	}
	s.unsaved, s.savedAt = false, time.Now()
	return nil
}

func (s *tableSource) settle(ctx context.Context, acked []*batch) error {
	if n := len(acked); n > 0 {
		s.committed, s.unsaved = acked[n-1].after, true
	}
	if !s.unsaved || s.committed == nil {
		return nil
	}
	return s.save(ctx)
}

func (s *tableSource) park(ctx context.Context, rejected []*RejectedError) error {
	if err := s.r.park(ctx, s.shard, rejected); err != nil {
		return err
	}
	for _, rej := range rejected {
		s.parked[rej.ID] = true
	}
	return nil
}

// read reads the batch after cursor c in one round trip: a REPEATABLE READ
// transaction describes its snapshot and reads the rows in it.
func (s *tableSource) read(ctx context.Context, c cursor) ([]record, snapshot, error) {
	lo, hi, low := c.arrays()
	b := &pgx.Batch{}
	b.Queue("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
	b.Queue(snapshotSQL)
	b.Queue(readSQL, s.shard, c.at, s.r.cfg.BatchSize, lo, hi, low)
	b.Queue("COMMIT")
	br := s.r.cfg.Pool.SendBatch(ctx, b)
	defer br.Close()
	var snap snapshot
	if _, err := br.Exec(); err != nil {
		return nil, snap, fmt.Errorf("read outbox: %w", err)
	}
	if err := br.QueryRow().Scan(&snap.xmax, &snap.xip); err != nil {
		return nil, snap, fmt.Errorf("read outbox: snapshot: %w", err)
	}
	slices.Sort(snap.xip)
	rows, err := br.Query()
	if err != nil {
		return nil, snap, fmt.Errorf("read outbox: %w", err)
	}
	var out []record
	var rec record
	_, err = pgx.ForEachRow(rows, []any{&rec.id, &rec.topic, &rec.key, &rec.value, &rec.headers, &rec.createdAt}, func() error {
		out = append(out, rec)
		return nil
	})
	if err != nil {
		return nil, snap, fmt.Errorf("read outbox: %w", err)
	}
	if _, err := br.Exec(); err != nil {
		return nil, snap, fmt.Errorf("read outbox: %w", err)
	}
	if err := br.Close(); err != nil {
		return nil, snap, fmt.Errorf("read outbox: %w", err)
	}
	return out, snap, nil
}

// park copies rejected rows to ecst.outbox_parked in one transaction; the
// cursor passes over them.
func (r *Relay) park(ctx context.Context, shard int16, rejected []*RejectedError) error {
	parked := map[string]int64{}
	err := pgx.BeginFunc(ctx, r.cfg.Pool, func(tx pgx.Tx) error {
		for _, rej := range rejected {
			tag, err := tx.Exec(ctx, `INSERT INTO ecst.outbox_parked (id, shard, topic, key, value, headers, created_at, error)
				SELECT id, shard, topic, key, value, headers, created_at, $2 FROM ecst.outbox WHERE shard = $3 AND id = $1
				ON CONFLICT (id) DO NOTHING`, rej.ID, rej.Err.Error(), shard)
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
