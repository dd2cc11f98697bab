// Package outbox is the outbox table's write path: rows inserted inside the
// writer's transaction under the per-key lock, the bulk paths republish
// uses, shards, and the header encoding. The relay (package relay) reads
// and publishes what is written here; package migrate owns the table.
//
// Per-key order rests on one rule: every writer of a (topic, key) pair takes
// the transaction-scoped advisory lock KeyLock(topic, key) before it inserts
// the row. Same-key writers are thereby serialized, so for any key the outbox
// ids increase in commit order, and a relay that publishes committed rows in
// id order publishes each key's states in commit order. docs/architecture.md
// has the whole argument.
package outbox

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"

	"github.com/jackc/pgx/v5"
)

// KeyLock is the advisory lock key of a (topic, key) pair: a 64-bit FNV-1a
// hash. A collision serializes two unrelated keys; it never reorders one.
func KeyLock(topic, key string) int64 {
	h := fnv.New64a()
	h.Write([]byte(topic))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return int64(h.Sum64()) //nolint:gosec // a wrapping conversion is the intent
}

// Shard is the outbox shard of a (topic, key) pair among n shards. Every
// row of one key lands in one shard, so one relay leader publishes it.
func Shard(topic, key string, n int) int16 {
	if n <= 1 {
		return 0
	}
	return int16(uint64(KeyLock(topic, key)) % uint64(n)) //nolint:gosec // n is at most MaxShards
}

// MaxShards bounds outbox.shards.
const MaxShards = 256

// Row is one outbox row to insert.
type Row struct {
	// Shard is Shard(Topic, Key, outbox.shards): the relay leader that
	// publishes the row (0 with one shard, the default).
	Shard int16
	// Topic and Key are the record's topic and key, the entity id.
	Topic string
	Key   string // see Topic
	Value []byte // nil for a tombstone
	// Headers are the record's headers, encoded by EncodeHeaders.
	Headers []Header
}

// insertSQL takes the key lock and inserts in one statement, one round trip.
// OFFSET 0 keeps the planner from flattening the subquery, so the lock is
// taken before the identity default draws the row's id: an id drawn before
// the lock could be lower than that of a same-key writer that commits first.
const insertSQL = `INSERT INTO ecst.outbox (shard, topic, key, value, headers)
SELECT $1, $2, $3, $4, $5 FROM (SELECT pg_advisory_xact_lock($6) OFFSET 0) AS l`

// Insert writes r inside tx under r's key lock.
func Insert(ctx context.Context, tx pgx.Tx, r Row) error {
	_, err := tx.Exec(ctx, insertSQL, r.Shard, r.Topic, r.Key, r.Value, EncodeHeaders(r.Headers), KeyLock(r.Topic, r.Key))
	if err != nil {
		return fmt.Errorf("insert outbox row: %w", err)
	}
	return nil
}

// Queue adds r's insert, under its key lock, to a batch the caller sends in
// its transaction.
func Queue(b *pgx.Batch, r Row) {
	b.Queue(insertSQL, r.Shard, r.Topic, r.Key, r.Value, EncodeHeaders(r.Headers), KeyLock(r.Topic, r.Key))
}

// LockKeys takes the key locks of topic's keys inside tx, in ascending lock
// order so that two bulk writers never deadlock on each other. A single-key
// writer (Insert) may still meet a bulk writer in the other order only if it
// locks more keys later in its own transaction; Postgres then aborts one of
// them with a deadlock error, which the bulk writer retries.
func LockKeys(ctx context.Context, tx pgx.Tx, topic string, keys []string) error {
	if _, err := tx.Exec(ctx, lockKeysSQL, sortedLocks(topic, keys)); err != nil {
		return fmt.Errorf("lock %d keys of %s: %w", len(keys), topic, err)
	}
	return nil
}

// QueueLockKeys adds LockKeys's statement to a batch: statements queued
// after it run once every lock is held.
func QueueLockKeys(b *pgx.Batch, topic string, keys []string) {
	b.Queue(lockKeysSQL, sortedLocks(topic, keys))
}

// unnest yields the array in order and the function scan evaluates
// pg_advisory_xact_lock row by row, so the locks are taken in order.
const lockKeysSQL = `SELECT count(pg_advisory_xact_lock(l)) FROM unnest($1::bigint[]) AS l`

func sortedLocks(topic string, keys []string) []int64 {
	locks := make([]int64, len(keys))
	for i, k := range keys {
		locks[i] = KeyLock(topic, k)
	}
	slices.Sort(locks)
	return slices.Compact(locks)
}

// CopyRows writes rows with COPY, the bulk path. The caller must hold every
// row's key lock in tx (LockKeys): COPY does not take them.
func CopyRows(ctx context.Context, tx pgx.Tx, rows []Row) error {
	if len(rows) == 0 {
		return nil
	}
	_, err := tx.CopyFrom(ctx, pgx.Identifier{"ecst", "outbox"}, []string{"shard", "topic", "key", "value", "headers"},
		pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
			r := rows[i]
			return []any{r.Shard, r.Topic, r.Key, r.Value, EncodeHeaders(r.Headers)}, nil
		}))
	if err != nil {
		return fmt.Errorf("copy %d outbox rows: %w", len(rows), err)
	}
	return nil
}
