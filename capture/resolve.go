package capture

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/internal/source"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/relay"
	"github.com/ecst-io/ecst/republish"
)

// ResolverConfig configures a Resolver.
type ResolverConfig struct {
	// Pool is the database of the source tables and the outbox (required).
	Pool *pgxpool.Pool
	// Config holds the entities markers name (required).
	Config *config.Config
	// Publisher encodes the states and builds their headers (required).
	Publisher *producer.Publisher
	// Kafka is the client configuration a TRUNCATE's resolution reads the
	// topic with, to tombstone the keys the source no longer has.
	Kafka []kgo.Opt
	// Batch is the keys per resolution transaction (0: 500).
	Batch int
	// Logger receives the resolver's logs (nil: none).
	Logger *slog.Logger

	// Test hooks, set through export_test.go: each removes a part of the
	// ordering mechanism, so that a test can show what it prevents.
	noLock bool
	direct func(ctx context.Context, rows []outbox.Row) error
}

// Resolver resolves capture markers for the relay (relay.Resolver): under
// the keys' locks it reads their current state through the entity's source
// query and writes those events into the outbox, in one transaction per
// batch of keys. An entity is planned on its first marker: an entity never
// captured costs the relay no query.
type Resolver struct {
	cfg ResolverConfig
	log *slog.Logger

	mu      sync.Mutex
	sources map[string]*source.Source
}

var _ relay.Resolver = (*Resolver)(nil)

// NewResolver validates cfg. It does no I/O.
func NewResolver(cfg ResolverConfig) (*Resolver, error) {
	if cfg.Pool == nil || cfg.Config == nil || cfg.Publisher == nil {
		return nil, errors.New("capture: ResolverConfig needs Pool, Config and Publisher")
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 500
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Resolver{cfg: cfg, log: cfg.Logger, sources: map[string]*source.Source{}}, nil
}

// Resolve implements relay.Resolver. Keys are deduplicated across the
// markers: a key changed many times since the last resolution is read and
// written once, tagged with the last marker that named it. A marker for
// every key (a TRUNCATE) is resolved by a republish of the whole entity
// that also tombstones the keys the source no longer has.
func (r *Resolver) Resolve(ctx context.Context, markers []relay.Marker) error {
	type work struct {
		entity  *config.Entity
		all     bool
		keys    map[string]string // key → the last marker naming it
		pending []string          // with all, in the WAL transport: keys the relay holds unpublished
	}
	byEntity := map[string]*work{}
	var order []string
	for _, m := range markers {
		w := byEntity[m.Entity]
		if w == nil {
			e := r.cfg.Config.Entities[m.Entity]
			if e == nil {
				return &relay.MarkerError{Marker: m, Err: fmt.Errorf("ecst.yaml declares no entity %q (declared: %v): fix the ecst.capture/ecst.publish call that wrote it, or declare the entity", m.Entity, r.cfg.Config.EntityNames())}
			}
			if e.Source == nil {
				return &relay.MarkerError{Marker: m, Err: fmt.Errorf("%w: add entities.%s.source to ecst.yaml: the relay reads captured keys through it", ErrNoSource, m.Entity)}
			}
			w = &work{entity: e, keys: map[string]string{}}
			byEntity[m.Entity] = w
			order = append(order, m.Entity)
		}
		w.all = w.all || m.All
		w.pending = append(w.pending, m.Unpublished[w.entity.Topic]...)
		for _, k := range m.Keys {
			w.keys[k] = m.ID
		}
	}
	for _, name := range order {
		w := byEntity[name]
		var err error
		if w.all {
			err = r.resolveAll(ctx, w.entity, w.pending)
		} else {
			err = r.resolveKeys(ctx, w.entity, w.keys)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// plan returns e's planned source query.
func (r *Resolver) plan(ctx context.Context, e *config.Entity) (*source.Source, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.sources[e.Name]; s != nil {
		return s, nil
	}
	conn, err := r.cfg.Pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to the database: %w", err)
	}
	defer conn.Release()
	s, err := source.Plan(ctx, conn.Conn(), e)
	if err != nil {
		return nil, err
	}
	r.sources[e.Name] = s
	return s, nil
}

// resolveKeys writes the current state of keys, batch by batch.
func (r *Resolver) resolveKeys(ctx context.Context, e *config.Entity, ids map[string]string) error {
	src, err := r.plan(ctx, e)
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(ids))
	for k := range ids {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i := 0; i < len(keys); i += r.cfg.Batch {
		batch := keys[i:min(i+r.cfg.Batch, len(keys))]
		for attempt := 1; ; attempt++ {
			err := r.writeBatch(ctx, e, src, batch, ids)
			var pe *pgconn.PgError
			if err != nil && errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001") && attempt < 5 {
				r.log.Warn("capture resolution retried", "entity", e.Name, "attempt", attempt, "err", err)
				continue
			}
			if err != nil {
				return fmt.Errorf("resolve %d captured keys of %s: %w", len(batch), e.Name, err)
			}
			break
		}
	}
	return nil
}

// writeBatch is republish's lock-then-read-then-write: it takes the keys'
// locks (ascending), reads their rows in a statement that starts once the
// locks are held, and writes the events by the Publisher's transport (COPY
// into the outbox, or logical messages into the WAL), in one transaction.
// A live writer holds a key's lock from its outbox insert (or emit) to its
// commit, so the state read is at least as new as any event of the key
// already in the transport, and lands behind it.
func (r *Resolver) writeBatch(ctx context.Context, e *config.Entity, src *source.Source, keys []string, ids map[string]string) error {
	tx, err := r.cfg.Pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck
	var current [][]any
	b := &pgx.Batch{}
	if !r.cfg.noLock {
		outbox.QueueLockKeys(b, e.Topic, keys)
	}
	b.Queue(src.RowsSQL(), keys).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				return err
			}
			current = append(current, vals)
		}
		return rows.Err()
	})
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("lock and read: %w", err)
	}
	found := make(map[string]bool, len(current))
	out := make([]outbox.Row, 0, len(keys))
	for _, vals := range current {
		key, version, state, err := src.Mapper.Map(vals)
		if err != nil {
			return err
		}
		if found[key] {
			return fmt.Errorf("entities.%s.source.query returns key %q twice: it must return one row per entity", e.Name, key)
		}
		found[key] = true
		row, err := r.cfg.Publisher.Event(ctx, e.Name, key, version, state, producer.Capture(ids[key]))
		if err != nil {
			return err
		}
		out = append(out, row)
	}
	for _, k := range keys {
		if found[k] {
			continue
		}
		row, err := r.cfg.Publisher.DeleteEvent(e.Name, k, 0, producer.Capture(ids[k]))
		if err != nil {
			return err
		}
		out = append(out, row)
	}
	if r.cfg.direct != nil {
		if err := r.cfg.direct(ctx, out); err != nil {
			return err
		}
		return tx.Commit(ctx)
	}
	if err := r.cfg.Publisher.Transport().CopyRows(ctx, tx, out); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// resolveAll republishes every key of e and tombstones those the source no
// longer has: the keys alive on the topic, and the keys with an event
// still in the outbox (it may precede the TRUNCATE, in this batch or in
// another shard), or in the WAL transport those the relay holds unpublished
// (pending). The relay's stream waits for it.
func (r *Resolver) resolveAll(ctx context.Context, e *config.Entity, pending []string) error {
	if r.cfg.Publisher.Transport() != outbox.TransportWAL {
		var err error
		if pending, err = outbox.PendingKeys(ctx, r.cfg.Pool, e.Topic); err != nil {
			return err
		}
	}
	res, err := republish.Run(ctx, republish.Config{Pool: r.cfg.Pool, Publisher: r.cfg.Publisher, Entity: e, Kafka: r.cfg.Kafka, Logger: r.log},
		republish.Options{All: true, TombstoneOrphans: true, Tombstones: pending, MaxBacklog: -1})
	if err != nil {
		return fmt.Errorf("resolve a capture of every key of %s (a TRUNCATE): %w", e.Name, err)
	}
	r.log.Info("capture: republished every key (a TRUNCATE)", "entity", e.Name, "run", strconv.FormatInt(res.RunID, 10),
		"written", res.Written, "tombstones", res.Tombstones)
	return nil
}
