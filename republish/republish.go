// Package republish is the forced full-state republish: it reads an
// entity's source-of-truth rows and writes each selected key's current full
// state to the outbox, tagged with the run's id, so that every consumer of
// the topic converges on the source. `ecst republish` is a thin shell around
// Run; a service can expose Run on its admin endpoint.
//
// Ordering (docs/architecture.md, point 4): every batch takes the key locks
// of its keys first (outbox.LockKeys, ascending lock order), THEN reads the
// rows again in a fresh statement, then copies the events in, all in one
// transaction. A live writer of a key holds the same lock from its outbox
// insert to its commit, so the state republish reads is never older than a
// state already in the outbox, and a live write that waits on the lock lands
// after the republished one. The run's cursor commits with its batch, so a
// killed run resumes exactly after the last batch it wrote.
package republish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/internal/pglock"
	"github.com/ecst-io/ecst/internal/source"
	"github.com/ecst-io/ecst/internal/topicscan"
	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/relay"
)

// Config is what a run needs.
type Config struct {
	// Pool is the database of the source table and the outbox (required).
	Pool *pgxpool.Pool
	// Publisher encodes the states and builds their headers (required).
	Publisher *producer.Publisher
	// Entity is the entity to republish; it needs a source.
	Entity *config.Entity
	// Kafka is the client configuration; only Options.TombstoneOrphans
	// (which reads the topic) uses it.
	Kafka []kgo.Opt
	// Logger receives the run's logs (nil: none).
	Logger *slog.Logger
}

// Options select the keys and pace the run. Errors name these fields
// (republish.Options.Where); `ecst republish` translates them to its flags.
type Options struct {
	// All selects every key of the source. Exactly one of All, Keys and
	// Where selects keys, unless Resume or Tombstones bring their own.
	All bool
	// Keys selects these keys (duplicates count once); none by default.
	Keys []string
	// Where selects the keys whose source rows match this SQL condition on
	// the source query's columns; none by default.
	Where string
	// TombstoneOrphans also tombstones the keys alive on the topic that the
	// source no longer has (with Keys: the given keys the source does not
	// have). Off by default; it reads the topic with Config.Kafka.
	TombstoneOrphans bool
	// Tombstones are keys to tombstone if the source does not have them
	// when they are locked (a key it has is left alone); verify's repair
	// sets them for the extra keys it found. None by default.
	Tombstones []string
	// Batch is the keys per transaction; 0 means 500 (for a resumed run
	// too).
	Batch int
	// Rate caps the run at this many keys per second; 0 means no cap (a
	// resumed run keeps the rate it was started with).
	Rate float64
	// MaxBacklog pauses the run while the outbox holds at least this many
	// rows (the relay is behind; with the WAL transport: while at least
	// this many of the run's events are not yet published); 0 means
	// 100000, negative never pauses.
	MaxBacklog int
	// DryRun counts the selected keys (and orphans) and samples the states
	// it would write, and writes nothing. Off by default.
	DryRun bool
	// Resume carries on the stopped run with this id, after the last batch
	// it wrote, with the selection it was started with; 0 (the default)
	// starts a new run.
	Resume int64
	// Progress, if set, is called after every batch; nil by default.
	Progress func(Progress)
	// beforeLock, a test hook, runs between a batch's read of its keys and
	// the lock; readFirst makes the batch read the rows before locking (the
	// bug the ordering test proves absent).
	beforeLock func()
	readFirst  bool
}

// Progress is a run's position.
type Progress struct {
	Phase string // "republish" or "orphans"
	// Done is how many keys the phase has handled, of Total.
	Done  int64
	Total int64 // see Done
}

// Result reports a run.
type Result struct {
	RunID      int64         `json:"run_id,omitempty"`  // the run's row in ecst.republish_runs (0 for a dry run)
	Entity     string        `json:"entity"`            // the entity's name
	Selected   int64         `json:"selected"`          // keys the options selected
	Written    int64         `json:"written"`           // full states written
	Tombstones int64         `json:"tombstones"`        // tombstones written
	Vanished   int64         `json:"vanished"`          // selected, then deleted before their batch (their live tombstone stands)
	Orphans    int64         `json:"orphans"`           // keys alive on the topic, absent from the source
	Resumed    bool          `json:"resumed,omitempty"` // the run continued an earlier one (Options.Resume)
	Sample     []SampleRow   `json:"sample,omitempty"`  // dry runs: the first few states
	Elapsed    time.Duration // how long the run took
}

// SampleRow is one row a dry run would write.
type SampleRow struct {
	Key     string         `json:"key"`     // the entity id
	Version int64          `json:"version"` // the entity version, from the source's version column
	State   map[string]any `json:"state"`   // the full state, field by field
}

// Errors a caller may act on.
var (
	// ErrRunning: another run of the entity holds its lock.
	ErrRunning = errors.New("a republish of this entity is already running")
	// ErrBadSelection: the options do not select keys (or select twice).
	ErrBadSelection = errors.New("bad selection")
	// ErrNoSource: the entity has no source in ecst.yaml.
	ErrNoSource = errors.New("the entity has no source")
)

type selection struct {
	All              bool     `json:"all,omitempty"`
	Keys             []string `json:"keys,omitempty"`
	Where            string   `json:"where,omitempty"`
	TombstoneOrphans bool     `json:"tombstone_orphans,omitempty"`
	Tombstones       []string `json:"tombstones,omitempty"`
	Batch            int      `json:"batch"`
	Rate             float64  `json:"rate,omitempty"`
}

// run is one republish in progress.
type run struct {
	cfg   Config
	opts  Options
	sel   selection
	topic string
	src   *source.Source // planned by plan
	log   *slog.Logger
	res   Result
	id    int64
	start time.Time
	// resumeCursor is the last key a resumed run had written.
	resumeCursor *string
	// walMarks are the batches written to the WAL and not yet known to be
	// published, oldest first.
	walMarks []walMark
}

// Run republishes the selected keys. It returns when every selected key's
// current state is in the outbox (the relay publishes it from there).
func Run(ctx context.Context, cfg Config, opts Options) (*Result, error) {
	e := cfg.Entity
	if e == nil || e.Source == nil {
		return nil, fmt.Errorf("%w: add entities.<name>.source (table, key, query) to ecst.yaml", ErrNoSource)
	}
	r := &run{cfg: cfg, opts: opts, topic: e.Topic, log: cfg.Logger, start: time.Now()}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.res.Entity = e.Name
	if opts.Batch <= 0 {
		opts.Batch = 500
		r.opts.Batch = 500
	}

	conn, err := cfg.Pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to the database: %w", err)
	}
	defer conn.Release()

	if opts.Resume != 0 {
		if err := r.loadRun(ctx, conn.Conn(), opts.Resume); err != nil {
			return nil, err
		}
	} else if err := r.setSelection(); err != nil {
		return nil, err
	}
	if err := r.plan(ctx, conn.Conn()); err != nil {
		return nil, err
	}
	if err := cfg.Publisher.CheckTransport(ctx, conn); err != nil {
		return nil, err
	}
	if opts.DryRun {
		return r.dryRun(ctx, conn.Conn())
	}

	// One run per entity: a session lock on this connection, released
	// when the run ends or its process dies.
	locked, err := lockEntity(ctx, conn.Conn(), e.Name)
	if err != nil {
		return nil, err
	}
	if !locked {
		var other int64
		_ = conn.QueryRow(ctx, `SELECT id FROM ecst.republish_runs WHERE entity = $1 AND state = 'running' ORDER BY id DESC LIMIT 1`, e.Name).Scan(&other)
		return nil, fmt.Errorf("%w (run %d): wait for it, or stop it and resume it with %s", ErrRunning, other, resume(other))
	}
	defer func() {
		_, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1, $2)`, pglock.Republish, pglock.Hash(e.Name))
	}()

	if err := r.open(ctx, conn.Conn()); err != nil {
		return nil, err
	}
	err = r.execute(ctx)
	r.finish(ctx, err)
	r.res.Elapsed = time.Since(r.start)
	if err != nil {
		return &r.res, fmt.Errorf("republish run %d of %s: %w (resume it with %s)", r.id, e.Name, err, resume(r.id))
	}
	return &r.res, nil
}

// resume is the Options that resume run id, as an error suggests them.
// Errors name Options fields, never flags: `ecst republish` and `ecst verify`
// translate them.
func resume(id int64) string { return fmt.Sprintf("republish.Options{Resume: %d}", id) }

// lockWait is how long a run waits for its entity's lock before it counts
// as taken. A process killed a moment ago still holds it until its
// server session notices the closed socket; a run resumed right after
// must not be refused for that.
const lockWait = 3 * time.Second

// lockEntity takes the entity's session lock on conn, trying again for
// up to lockWait.
func lockEntity(ctx context.Context, conn *pgx.Conn, entity string) (bool, error) {
	deadline := time.Now().Add(lockWait)
	for {
		var locked bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, $2)`, pglock.Republish, pglock.Hash(entity)).Scan(&locked); err != nil {
			return false, fmt.Errorf("take the republish lock: %w", err)
		}
		if locked || time.Now().After(deadline) {
			return locked, nil
		}
		if !wait.Sleep(ctx, 100*time.Millisecond) {
			return false, ctx.Err()
		}
	}
}

func (r *run) setSelection() error {
	n := 0
	for _, b := range []bool{r.opts.All, len(r.opts.Keys) > 0, r.opts.Where != ""} {
		if b {
			n++
		}
	}
	if n == 0 && len(r.opts.Tombstones) == 0 {
		return fmt.Errorf("%w: choose the keys: republish.Options.All, republish.Options.Keys or republish.Options.Where", ErrBadSelection)
	}
	if n > 1 {
		return fmt.Errorf("%w: republish.Options.All, republish.Options.Keys and republish.Options.Where exclude each other", ErrBadSelection)
	}
	keys := slices.Clone(r.opts.Keys)
	slices.Sort(keys)
	keys = slices.Compact(keys)
	if slices.Contains(keys, "") {
		return fmt.Errorf("%w: an empty key", ErrBadSelection)
	}
	tombs := slices.Clone(r.opts.Tombstones)
	slices.Sort(tombs)
	r.sel = selection{All: r.opts.All, Keys: keys, Where: r.opts.Where, TombstoneOrphans: r.opts.TombstoneOrphans,
		Tombstones: slices.Compact(tombs), Batch: r.opts.Batch, Rate: r.opts.Rate}
	return nil
}

// plan describes the source query and maps its columns onto the schema:
// an unmappable column fails here, before anything is written.
func (r *run) plan(ctx context.Context, conn *pgx.Conn) error {
	src, err := source.Plan(ctx, conn, r.cfg.Entity)
	if err != nil {
		return err
	}
	r.src = src
	if r.sel.Where != "" {
		if _, err := conn.Prepare(ctx, "", "SELECT 1 FROM "+r.src.Query+" WHERE ("+r.sel.Where+")"); err != nil {
			return fmt.Errorf("republish.Options.Where %q does not run against the source query: %w", r.sel.Where, err)
		}
	}
	return nil
}

// pageSQL selects the next keys after $1 (NULL: from the start).
func (r *run) pageSQL() string {
	where := ""
	if r.sel.Where != "" {
		where = " AND (" + r.sel.Where + ")"
	}
	return fmt.Sprintf(`SELECT %[1]s::text FROM %[2]s WHERE ($1::text IS NULL OR %[1]s > $1::text::%[3]s)%[4]s ORDER BY %[1]s LIMIT $2`,
		r.src.KeyCol, r.src.Query, r.src.KeyType, where)
}

// rowsSQL reads the current rows of the keys in $1.
func (r *run) rowsSQL() string { return r.src.RowsSQL() }

func (r *run) count(ctx context.Context, conn *pgx.Conn) (int64, error) {
	if !r.sel.All && r.sel.Where == "" {
		return int64(len(r.sel.Keys)), nil
	}
	q := "SELECT count(*) FROM " + r.src.Query
	if r.sel.Where != "" {
		q += " WHERE (" + r.sel.Where + ")"
	}
	var n int64
	if err := conn.QueryRow(ctx, q).Scan(&n); err != nil {
		return 0, fmt.Errorf("count the selected rows: %w", err)
	}
	return n, nil
}

func (r *run) dryRun(ctx context.Context, conn *pgx.Conn) (*Result, error) {
	n, err := r.count(ctx, conn)
	if err != nil {
		return nil, err
	}
	r.res.Selected = n
	keys, err := r.nextKeys(ctx, conn, nil, 5)
	if err != nil {
		return nil, err
	}
	rows, err := conn.Query(ctx, r.rowsSQL(), keys)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return nil, err
		}
		key, version, state, err := r.src.Mapper.Map(vals)
		if err != nil {
			return nil, err
		}
		// Encode it as a real run would, so a dry run finds bad rows.
		if _, err := r.cfg.Publisher.Event(ctx, r.res.Entity, key, version, state); err != nil {
			return nil, err
		}
		r.res.Sample = append(r.res.Sample, SampleRow{Key: key, Version: version, State: state})
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	slices.SortFunc(r.res.Sample, func(a, b SampleRow) int { return strings.Compare(a.Key, b.Key) })
	if r.sel.TombstoneOrphans {
		orphans, err := r.orphans(ctx, conn)
		if err != nil {
			return nil, err
		}
		r.res.Orphans = int64(len(orphans))
	}
	r.res.Elapsed = time.Since(r.start)
	return &r.res, nil
}

// nextKeys returns up to n selected keys after cursor, in key order.
func (r *run) nextKeys(ctx context.Context, conn *pgx.Conn, cursor *string, n int) ([]string, error) {
	if !r.sel.All && r.sel.Where == "" {
		i := 0
		if cursor != nil {
			i, _ = slices.BinarySearch(r.sel.Keys, *cursor)
			if i < len(r.sel.Keys) && r.sel.Keys[i] == *cursor {
				i++
			}
		}
		return r.sel.Keys[i:min(i+n, len(r.sel.Keys))], nil
	}
	rows, err := conn.Query(ctx, r.pageSQL(), cursor, n)
	if err != nil {
		return nil, fmt.Errorf("read the next keys: %w", err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read the next keys: %w", err)
	}
	return keys, nil
}

// open records a new run, or takes over the one being resumed.
func (r *run) open(ctx context.Context, conn *pgx.Conn) error {
	if r.id != 0 {
		_, err := conn.Exec(ctx, `UPDATE ecst.republish_runs SET state = 'running', error = NULL, updated_at = now(), finished_at = NULL WHERE id = $1`, r.id)
		return err
	}
	sel, err := json.Marshal(r.sel)
	if err != nil {
		return err
	}
	n, err := r.count(ctx, conn)
	if err != nil {
		return err
	}
	r.res.Selected = n
	if err := conn.QueryRow(ctx, `INSERT INTO ecst.republish_runs (entity, selection, rows_selected) VALUES ($1, $2, $3) RETURNING id`,
		r.res.Entity, sel, n).Scan(&r.id); err != nil {
		return fmt.Errorf("record the run: %w", err)
	}
	r.res.RunID = r.id
	// A run left 'running' by a dead process holds no lock (we have it).
	tag, err := conn.Exec(ctx, `UPDATE ecst.republish_runs SET state = 'failed', error = $3, finished_at = now()
		WHERE entity = $1 AND state = 'running' AND id <> $2`, r.res.Entity, r.id,
		fmt.Sprintf("abandoned: its process stopped without finishing; run %d started after it (an abandoned run can still be resumed)", r.id))
	if err != nil {
		return err
	}
	if tag.RowsAffected() > 0 {
		r.log.Warn("found runs of this entity left running by a process that died; marked failed (they can be resumed)", "entity", r.res.Entity, "runs", tag.RowsAffected())
	}
	return nil
}

var errCompleted = errors.New("the run completed; start a new one")

func (r *run) loadRun(ctx context.Context, conn *pgx.Conn, id int64) error {
	var (
		entity, state string
		sel           []byte
		cursor        *string
		selected      *int64
	)
	err := conn.QueryRow(ctx, `SELECT entity, state, selection, cursor_key, rows_selected, rows_written, tombstones_written
		FROM ecst.republish_runs WHERE id = $1`, id).Scan(&entity, &state, &sel, &cursor, &selected, &r.res.Written, &r.res.Tombstones)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: no republish run %d", ErrBadSelection, id)
	}
	if err != nil {
		return fmt.Errorf("read run %d: %w", id, err)
	}
	if entity != r.res.Entity {
		return fmt.Errorf("%w: run %d republished %s, not %s", ErrBadSelection, id, entity, r.res.Entity)
	}
	if state == "completed" {
		return fmt.Errorf("run %d: %w", id, errCompleted)
	}
	if err := json.Unmarshal(sel, &r.sel); err != nil {
		return fmt.Errorf("run %d: selection: %w", id, err)
	}
	if r.opts.Batch > 0 {
		r.sel.Batch = r.opts.Batch
	}
	if r.opts.Rate > 0 {
		r.sel.Rate = r.opts.Rate
	}
	r.id, r.res.RunID, r.res.Resumed = id, id, true
	if selected != nil {
		r.res.Selected = *selected
	}
	r.resumeCursor = cursor
	return nil
}

func (r *run) execute(ctx context.Context) error {
	r.log.Info("republish started", "run", r.id, "entity", r.res.Entity, "topic", r.topic, "selected", r.res.Selected, "resumed", r.res.Resumed)
	cursor := r.resumeCursor
	if cursor == nil || *cursor != doneCursor {
		conn, err := r.cfg.Pool.Acquire(ctx)
		if err != nil {
			return err
		}
		defer conn.Release()
		pace := newPacer(r.sel.Rate)
		keys, err := r.nextKeys(ctx, conn.Conn(), cursor, r.sel.Batch)
		if err != nil {
			return err
		}
		type page struct {
			keys []string
			err  error
		}
		for len(keys) > 0 {
			if err := r.backpressure(ctx); err != nil {
				return err
			}
			last := keys[len(keys)-1]
			// The next page's keys are read on this connection while the
			// batch is written on another.
			next := make(chan page, 1)
			go func() {
				k, err := r.nextKeys(ctx, conn.Conn(), &last, r.sel.Batch)
				next <- page{k, err}
			}()
			err := r.writeBatch(ctx, keys, nil, last)
			p := <-next
			if err != nil {
				return err
			}
			if p.err != nil {
				return p.err
			}
			r.report("republish", r.res.Written+r.res.Vanished, r.res.Selected)
			if err := pace.wait(ctx, len(keys)); err != nil {
				return err
			}
			keys = p.keys
		}
	}
	// The upserts are done: a resume goes straight to the tombstones.
	if _, err := r.cfg.Pool.Exec(ctx, `UPDATE ecst.republish_runs SET cursor_key = $2, updated_at = now() WHERE id = $1`, r.id, doneCursor); err != nil {
		return err
	}
	return r.tombstones(ctx)
}

// doneCursor marks a run whose upserts are all written. It cannot be a
// key: the producer refuses empty keys.
const doneCursor = ""

func (r *run) tombstones(ctx context.Context) error {
	candidates := slices.Clone(r.sel.Tombstones)
	if r.sel.TombstoneOrphans {
		if len(r.sel.Keys) > 0 {
			candidates = append(candidates, r.sel.Keys...)
		} else {
			conn, err := r.cfg.Pool.Acquire(ctx)
			if err != nil {
				return err
			}
			orphans, err := r.orphans(ctx, conn.Conn())
			conn.Release()
			if err != nil {
				return err
			}
			r.res.Orphans = int64(len(orphans))
			candidates = append(candidates, orphans...)
		}
	}
	slices.Sort(candidates)
	candidates = slices.Compact(candidates)
	for i := 0; i < len(candidates); i += r.sel.Batch {
		batch := candidates[i:min(i+r.sel.Batch, len(candidates))]
		if err := r.writeBatch(ctx, nil, batch, doneCursor); err != nil {
			return err
		}
		r.report("orphans", int64(i+len(batch)), int64(len(candidates)))
	}
	return nil
}

// orphans are the keys alive on the topic that the source lacks.
func (r *run) orphans(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	alive := map[string]bool{}
	_, err := topicscan.Scan(ctx, r.cfg.Kafka, r.topic, nil, func(rec *kgo.Record) error {
		if rec.Value == nil {
			delete(alive, string(rec.Key))
		} else {
			alive[string(rec.Key)] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read topic %s for orphans: %w", r.topic, err)
	}
	rows, err := conn.Query(ctx, r.src.KeysSQL())
	if err != nil {
		return nil, err
	}
	var k string
	if _, err := pgx.ForEachRow(rows, []any{&k}, func() error { delete(alive, k); return nil }); err != nil {
		return nil, fmt.Errorf("read the source keys: %w", err)
	}
	out := make([]string, 0, len(alive))
	for k := range alive {
		out = append(out, k)
	}
	slices.Sort(out)
	return out, nil
}

// writeBatch writes, in one transaction under the keys' locks, the current
// state of upserts (or nothing for a key the source no longer has) and a
// tombstone for each of tombs that the source does not have, and moves the
// run's cursor to cursor.
func (r *run) writeBatch(ctx context.Context, upserts, tombs []string, cursor string) error {
	for attempt := 1; ; attempt++ {
		err := r.tryBatch(ctx, upserts, tombs, cursor)
		var pe *pgconn.PgError
		if err != nil && errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001") && attempt < 5 {
			r.log.Warn("batch retried", "run", r.id, "attempt", attempt, "error", err)
			continue
		}
		return err
	}
}

func (r *run) tryBatch(ctx context.Context, upserts, tombs []string, cursor string) error {
	keys := append(slices.Clone(upserts), tombs...)
	tx, err := r.cfg.Pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck
	var early []any
	if r.opts.readFirst {
		early, err = r.readRows(ctx, tx, keys)
		if err != nil {
			return err
		}
	}
	if r.opts.beforeLock != nil {
		r.opts.beforeLock()
	}
	// Lock, then read in a new statement, in one round trip: the server
	// runs the read after the lock statement returned, and READ COMMITTED
	// gives it a snapshot that includes every write committed before the
	// locks were ours.
	current := early
	b := &pgx.Batch{}
	outbox.QueueLockKeys(b, r.topic, keys)
	if !r.opts.readFirst {
		b.Queue(r.rowsSQL(), keys).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				vals, err := rows.Values()
				if err != nil {
					return err
				}
				current = append(current, vals)
			}
			return rows.Err()
		})
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("lock and read %d keys: %w", len(keys), err)
	}
	found := make(map[string]bool, len(current))
	out := make([]outbox.Row, 0, len(keys))
	opt := producer.Republish(strconv.FormatInt(r.id, 10))
	isUpsert := make(map[string]bool, len(upserts))
	for _, k := range upserts {
		isUpsert[k] = true
	}
	var written, tombstones int64
	for _, v := range current {
		vals := v.([]any)
		key, version, state, err := r.src.Mapper.Map(vals)
		if err != nil {
			return err
		}
		found[key] = true
		if !isUpsert[key] {
			continue
		}
		row, err := r.cfg.Publisher.Event(ctx, r.res.Entity, key, version, state, opt)
		if err != nil {
			return err
		}
		out = append(out, row)
		written++
	}
	for _, k := range tombs {
		if found[k] {
			continue // the source has it after all: no tombstone
		}
		row, err := r.cfg.Publisher.DeleteEvent(r.res.Entity, k, 0, opt)
		if err != nil {
			return err
		}
		out = append(out, row)
		tombstones++
	}
	vanished := int64(len(upserts)) - written
	if err := r.cfg.Publisher.Transport().CopyRows(ctx, tx, out); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `UPDATE ecst.republish_runs SET cursor_key = $2, rows_written = rows_written + $3,
		tombstones_written = tombstones_written + $4, updated_at = now() WHERE id = $1`, r.id, cursor, written, tombstones); err != nil {
		return fmt.Errorf("move the run's cursor: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	if err := r.markWAL(ctx, written+tombstones); err != nil {
		return err
	}
	r.res.Written += written
	r.res.Tombstones += tombstones
	r.res.Vanished += vanished
	return nil
}

func (r *run) readRows(ctx context.Context, tx pgx.Tx, keys []string) ([]any, error) {
	rows, err := tx.Query(ctx, r.rowsSQL(), keys)
	if err != nil {
		return nil, fmt.Errorf("read the source rows: %w", err)
	}
	var out []any
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, vals)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the source rows: %w", err)
	}
	return out, nil
}

// backpressure waits while the outbox holds MaxBacklog rows or more: with
// the WAL transport, while MaxBacklog of the run's events are not yet
// published.
func (r *run) backpressure(ctx context.Context) error {
	limit := r.opts.MaxBacklog
	if limit == 0 {
		limit = 100_000
	}
	if limit < 0 {
		return nil
	}
	warned := false
	for {
		n, err := r.backlog(ctx, limit)
		if err != nil {
			return err
		}
		if n < limit {
			return nil
		}
		if !warned {
			r.log.Warn("outbox backlog at its limit; waiting for the relay", "limit", limit)
			warned = true
		}
		if !wait.Sleep(ctx, 200*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// backlog counts, up to limit, the outbox rows not yet published; with the
// WAL transport, the run's events the slot has not confirmed (the WAL has
// no rows to count, and what the run wrote is what it must not run ahead
// of).
func (r *run) backlog(ctx context.Context, limit int) (int, error) {
	if r.cfg.Publisher.Transport() != outbox.TransportWAL {
		n, err := outbox.PendingCount(ctx, r.cfg.Pool, limit)
		if err != nil {
			return 0, fmt.Errorf("read the outbox backlog: %w", err)
		}
		return int(n), nil
	}
	if len(r.walMarks) == 0 {
		return 0, nil
	}
	_, confirmed, err := relay.LiveSlot(ctx, r.cfg.Pool)
	if err != nil {
		return 0, err
	}
	var n int64
	for len(r.walMarks) > 0 && r.walMarks[0].lsn <= confirmed {
		r.walMarks = r.walMarks[1:]
	}
	for _, m := range r.walMarks {
		n += m.n
	}
	return int(min(n, int64(limit))), nil
}

// walMark is a batch the run wrote to the WAL: the WAL position after its
// commit, and how many events it holds.
type walMark struct {
	lsn pglogrepl.LSN
	n   int64
}

// markWAL records, with the WAL transport, where a committed batch ends.
func (r *run) markWAL(ctx context.Context, n int64) error {
	if r.cfg.Publisher.Transport() != outbox.TransportWAL || n == 0 {
		return nil
	}
	var lsn string
	if err := r.cfg.Pool.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&lsn); err != nil {
		return fmt.Errorf("read the WAL position: %w", err)
	}
	l, err := pglogrepl.ParseLSN(lsn)
	if err != nil {
		return err
	}
	r.walMarks = append(r.walMarks, walMark{l, n})
	return nil
}

func (r *run) report(phase string, done, total int64) {
	if r.opts.Progress != nil {
		r.opts.Progress(Progress{Phase: phase, Done: done, Total: total})
	}
}

// finish records how the run ended.
func (r *run) finish(ctx context.Context, err error) {
	state, msg := "completed", ""
	switch {
	case err == nil:
	case errors.Is(err, context.Canceled):
		state, msg = "cancelled", "cancelled"
	default:
		state, msg = "failed", err.Error()
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, uerr := r.cfg.Pool.Exec(ctx, `UPDATE ecst.republish_runs SET state = $2, error = NULLIF($3, ''), updated_at = now(),
		finished_at = now() WHERE id = $1`, r.id, state, msg); uerr != nil {
		r.log.Error("could not record the run's end", "run", r.id, "error", uerr)
	}
	r.log.Info("republish "+state, "run", r.id, "entity", r.res.Entity, "written", r.res.Written, "tombstones", r.res.Tombstones,
		"vanished", r.res.Vanished, "elapsed", time.Since(r.start).Round(time.Millisecond))
}

// pacer holds a run to a rate.
type pacer struct {
	rate  float64
	start time.Time
	done  int
}

func newPacer(rate float64) *pacer { return &pacer{rate: rate, start: time.Now()} }

func (p *pacer) wait(ctx context.Context, n int) error {
	if p.rate <= 0 {
		return nil
	}
	p.done += n
	due := p.start.Add(time.Duration(float64(p.done) / p.rate * float64(time.Second)))
	d := time.Until(due)
	if d <= 0 {
		return nil
	}
	if !wait.Sleep(ctx, d) {
		return ctx.Err()
	}
	return nil
}
