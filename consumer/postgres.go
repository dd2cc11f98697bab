package consumer

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/ecst-io/ecst/internal/pglock"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ecst-io/ecst/internal/pgident"
)

// Projection maps an entity's full states to rows of a table. The table is
// a parameter so that a rebuild can write a shadow table and swap it in;
// the Postgres store passes it quoted for SQL ("analytics"."Book Mirror"),
// to be written into statements as it is.
type Projection[T any] interface {
	// CreateTable returns the DDL that creates an empty table named table.
	CreateTable(table string) string
	// Upsert queues the statements that write key's full state.
	Upsert(b *pgx.Batch, table, key string, state T, c *Change[T])
	// Delete queues the statements that remove key.
	Delete(b *pgx.Batch, table, key string)
}

// Preparer is an optional Projection hook, called in the apply transaction
// before anything is queued: `ecst mirror` adds columns there when a new
// compatible schema version appears.
type Preparer[T any] interface {
	Prepare(ctx context.Context, tx pgx.Tx, table string, changes []Change[T]) error
}

// Copier is an optional Projection fast path for large batches (a replay,
// a rebuild): the states are COPYed into a staging table and merged with
// one INSERT ... ON CONFLICT, instead of a statement each.
type Copier[T any] interface {
	// CopyColumns lists the columns a change fills, its key column first.
	CopyColumns(c *Change[T]) []string
	// CopyValues returns the values for CopyColumns.
	CopyValues(key string, state T, c *Change[T]) []any
}

// copyThreshold is the batch size from which a Copier is used.
const copyThreshold = 256

// Postgres is a read model in a PostgreSQL table. Each batch's rows and
// the consumer's offsets commit in one transaction, so a crash at any
// point neither loses nor repeats an effect, and the consumer resumes from
// its offsets.
type Postgres[T any] struct {
	// Pool is the database of the table and of ecst.consumer_offsets
	// (required).
	Pool *pgxpool.Pool
	// Table is the model's table (required), written as in SQL: an
	// unquoted name folds to lower case, a double-quoted one is kept
	// exactly, and a dot separates the schema (analytics."Book Mirror").
	// See internal/pgident. The Projection creates it.
	Table string
	// Projection maps states to the table's rows (required): a Mirror, or
	// one of your own.
	Projection Projection[T]
}

// table is Table quoted for SQL.
func (s *Postgres[T]) table() (string, error) {
	n, err := pgident.Parse(s.Table)
	if err != nil {
		return "", fmt.Errorf("%w: consumer.Postgres.Table: %v", errFatal, err)
	}
	return n.Quoted(), nil
}

// Offsets reads the consumer's offsets from ecst.consumer_offsets.
func (s *Postgres[T]) Offsets(ctx context.Context, consumer, topic string) (map[int32]int64, error) {
	rows, err := s.Pool.Query(ctx, "SELECT partition, next_offset FROM ecst.consumer_offsets WHERE consumer = $1 AND topic = $2", consumer, topic)
	if err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	var p int32
	var o int64
	_, err = pgx.ForEachRow(rows, []any{&p, &o}, func() error { out[p] = o; return nil })
	return out, err
}

// AppliedAt is when the consumer last applied a batch of topic.
func (s *Postgres[T]) AppliedAt(ctx context.Context, consumer, topic string) (time.Time, error) {
	var at *time.Time
	err := s.Pool.QueryRow(ctx, "SELECT max(updated_at) FROM ecst.consumer_offsets WHERE consumer = $1 AND topic = $2", consumer, topic).Scan(&at)
	if err != nil || at == nil {
		return time.Time{}, err
	}
	return *at, nil
}

// Apply writes the batch and its offsets in one transaction. The stored
// offsets are locked and compared with the batch's From first: if a
// rebuild swapped the table and its offsets in meanwhile, it returns
// ErrOffsetsMoved and writes nothing.
func (s *Postgres[T]) Apply(ctx context.Context, consumer string, b *Batch[T]) error {
	table, err := s.table()
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		if err := lockModel(ctx, tx, consumer, b.Topic); err != nil {
			return err
		}
		if err := checkOffsets(ctx, tx, consumer, b.Topic, b.From); err != nil {
			return err
		}
		latest := lastPerKey(b.Changes)
		if p, ok := s.Projection.(Preparer[T]); ok {
			if err := p.Prepare(ctx, tx, table, latest); err != nil {
				return err
			}
		}
		q := &pgx.Batch{}
		copier, canCopy := s.Projection.(Copier[T])
		if canCopy && len(latest) >= copyThreshold {
			if err := s.copyIn(ctx, tx, table, copier, latest); err != nil {
				return err
			}
		} else {
			for i := range latest {
				c := &latest[i]
				if c.Deleted {
					s.Projection.Delete(q, table, c.Key)
				} else {
					s.Projection.Upsert(q, table, c.Key, c.State, c)
				}
			}
		}
		queueSkipped(q, consumer, b)
		queueOffsets(q, consumer, b.Topic, b.Next)
		return tx.SendBatch(ctx, q).Close()
	})
}

// copyIn writes upserts through a staging table, one COPY per column set,
// and deletes with one statement.
func (s *Postgres[T]) copyIn(ctx context.Context, tx pgx.Tx, table string, cp Copier[T], changes []Change[T]) error {
	var deleted []string
	groups := map[string][][]any{}
	colsOf := map[string][]string{}
	var order []string
	for i := range changes {
		c := &changes[i]
		if c.Deleted {
			deleted = append(deleted, c.Key)
			continue
		}
		cols := cp.CopyColumns(c)
		k := strings.Join(cols, ",")
		if _, ok := colsOf[k]; !ok {
			colsOf[k] = cols
			order = append(order, k)
		}
		groups[k] = append(groups[k], cp.CopyValues(c.Key, c.State, c))
	}
	for gi, k := range order {
		cols := colsOf[k]
		stage := fmt.Sprintf("ecst_stage_%d", gi)
		if _, err := tx.Exec(ctx, fmt.Sprintf("CREATE TEMP TABLE %s (LIKE %s INCLUDING DEFAULTS) ON COMMIT DROP", stage, table)); err != nil {
			return fmt.Errorf("staging table: %w", err)
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{stage}, cols, pgx.CopyFromRows(groups[k])); err != nil {
			return fmt.Errorf("copy into staging: %w", err)
		}
		quoted := make([]string, len(cols))
		sets := make([]string, 0, len(cols)-1)
		for i, c := range cols {
			quoted[i] = pgx.Identifier{c}.Sanitize()
			if i > 0 {
				sets = append(sets, quoted[i]+" = EXCLUDED."+quoted[i])
			}
		}
		sql := fmt.Sprintf("INSERT INTO %s (%s) SELECT %s FROM %s ON CONFLICT (%s) DO ", table, strings.Join(quoted, ", "), strings.Join(quoted, ", "), stage, quoted[0])
		if len(sets) == 0 {
			sql += "NOTHING"
		} else {
			sql += "UPDATE SET " + strings.Join(sets, ", ")
		}
		if _, err := tx.Exec(ctx, sql); err != nil {
			return fmt.Errorf("merge staged rows: %w", err)
		}
	}
	if len(deleted) > 0 {
		cols := cp.CopyColumns(&Change[T]{})
		if _, err := tx.Exec(ctx, fmt.Sprintf("DELETE FROM %s WHERE %s = ANY($1)", table, pgx.Identifier{cols[0]}.Sanitize()), deleted); err != nil {
			return fmt.Errorf("delete: %w", err)
		}
	}
	return nil
}

// lastPerKey keeps each key's last change: states are full, so the
// earlier ones in a batch have no effect of their own.
func lastPerKey[T any](cs []Change[T]) []Change[T] {
	last := make(map[string]int, len(cs))
	for i, c := range cs {
		last[c.Key] = i
	}
	out := make([]Change[T], 0, len(last))
	for i, c := range cs {
		if last[c.Key] == i {
			out = append(out, c)
		}
	}
	return out
}

// lockModel serializes a consumer's transactions with a rebuild's swap.
// It must be a statement of its own: in READ COMMITTED the next statement
// then takes its snapshot after the lock is held, so it sees offsets a swap
// committed while this transaction waited. (A row lock alone would not:
// a waiting SELECT ... FOR UPDATE skips rows the swap deleted and cannot
// see the ones it inserted.)
func lockModel(ctx context.Context, tx pgx.Tx, consumer, topic string) error {
	_, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1, $2)", pglock.Model, pglock.Hash(consumer, topic))
	return err
}

func checkOffsets(ctx context.Context, tx pgx.Tx, consumer, topic string, from map[int32]int64) error {
	rows, err := tx.Query(ctx, "SELECT partition, next_offset FROM ecst.consumer_offsets WHERE consumer = $1 AND topic = $2 FOR UPDATE", consumer, topic)
	if err != nil {
		return err
	}
	stored := map[int32]int64{}
	var p int32
	var o int64
	if _, err := pgx.ForEachRow(rows, []any{&p, &o}, func() error { stored[p] = o; return nil }); err != nil {
		return err
	}
	for p, f := range from {
		if got, ok := stored[p]; ok && got != f {
			return fmt.Errorf("%w: partition %d is at %d, the batch starts at %d", ErrOffsetsMoved, p, got, f)
		}
	}
	return nil
}

func queueOffsets(q *pgx.Batch, consumer, topic string, next map[int32]int64) {
	for p, o := range next {
		q.Queue(`INSERT INTO ecst.consumer_offsets (consumer, topic, partition, next_offset) VALUES ($1, $2, $3, $4)
			ON CONFLICT (consumer, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()`,
			consumer, topic, p, o)
	}
}

func queueSkipped[T any](q *pgx.Batch, consumer string, b *Batch[T]) {
	for _, sk := range b.Skipped {
		hs := map[string]string{}
		for _, h := range sk.Headers {
			hs[h.Key] = string(h.Value)
		}
		hj, _ := json.Marshal(hs)
		q.Queue(`INSERT INTO ecst.consumer_skipped (consumer, topic, partition, "offset", key, value, headers, error)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING`,
			consumer, b.Topic, sk.Partition, sk.Offset, sk.Key, sk.Value, hj, sk.Err.Error())
	}
}
