package relay

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// readAheadSQL reads the head of shard $1 minus the ids in $3, $2 rows.
const readAheadSQL = `SELECT id, topic, key, value, headers, created_at FROM ecst.outbox WHERE shard = $1 AND id <> ALL($3) ORDER BY id LIMIT $2`

// tableSource reads one outbox shard: a delete-based queue.
type tableSource struct {
	r     *Relay
	shard int16
}

func (r *Relay) tableSource(shard int) *tableSource {
	return &tableSource{r: r, shard: int16(shard)} //nolint:gosec // shard < MaxShards
}

func (s *tableSource) next(ctx context.Context, acked []*batch, inFlight *batch) (*batch, error) {
	var flying []record
	if inFlight != nil {
		flying = inFlight.records
	}
	b := &batch{read: time.Now()}
	var err error
	b.records, err = s.r.deleteAndRead(ctx, s.shard, ackedIDs(acked), flying)
	if err != nil {
		return nil, err
	}
	// Drained: the shard was empty when read, everything before was
	// published (the delete went with this read).
	b.drained = s.r.cfg.Drain && len(b.records) == 0 && inFlight == nil
	return b, nil
}

func (s *tableSource) settle(ctx context.Context, acked []*batch) error {
	_, err := s.r.cfg.Pool.Exec(ctx, "DELETE FROM ecst.outbox WHERE shard = $1 AND id = ANY($2)", s.shard, ackedIDs(acked))
	return err
}

func (s *tableSource) park(ctx context.Context, rejected []*RejectedError) error {
	return s.r.park(ctx, rejected)
}

func ackedIDs(acked []*batch) []int64 {
	var out []int64
	for _, b := range acked {
		out = append(out, ids(b.records)...)
	}
	return out
}

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
