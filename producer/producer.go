// Package producer publishes an entity's full state, or its deletion, inside
// the caller's PostgreSQL transaction: the transactional outbox.
//
//	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
//		if _, err := tx.Exec(ctx, "UPDATE customers SET ... WHERE id = $1", id); err != nil {
//			return err
//		}
//		return pub.Publish(ctx, tx, "customer", id, version, customer)
//	})
//
// The state is encoded as Avro under the entity's registered schema, in the
// Confluent wire format, and written with the headers of the wire contract
// to the outbox transport: a row of ecst.outbox, or a logical decoding
// message in the WAL (outbox.transport: wal). It commits or rolls back with
// the caller's change. Invalid input is rejected before the transaction is
// touched, so the caller's transaction stays usable after a validation
// error.
package producer

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/hamba/avro/v2"
	"github.com/jackc/pgx/v5"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/schemas"
)

// Header names of the wire contract. They are a public contract: consumers
// in any language read them.
const (
	HeaderEventID       = "ecst-event-id"
	HeaderEntityVersion = "ecst-entity-version"
	HeaderEventType     = "ecst-event-type"
	HeaderOccurredAt    = "ecst-occurred-at"
	HeaderSource        = "ecst-source"
	HeaderRepublish     = "ecst-republish"
	HeaderCapture       = "ecst-capture"
	HeaderTraceParent   = "traceparent"
)

// Sentinel errors callers branch on. Errors wrap them; use errors.Is.
var (
	ErrUnknownEntity = errors.New("unknown entity")
	ErrEmptyKey      = errors.New("empty entity key")
	ErrInvalidKey    = errors.New("entity key is not valid UTF-8")
	ErrInvalidState  = errors.New("state does not encode under the entity's schema")
	// ErrSchemaNotRegistered: the entity's schema is not in the registry and
	// auto-registration is off. Register it with `ecst schema register`.
	ErrSchemaNotRegistered = schemas.ErrNotRegistered
)

// EncodeError reports a state that does not match the entity's schema.
type EncodeError struct {
	// Entity and Key name the state that was refused.
	Entity string
	Key    string // see Entity
	// Field is the dotted path of the offending field, when known.
	Field string
	// Err is the encoder's error.
	Err error
}

func (e *EncodeError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s %q: state does not match the schema: %v", e.Entity, e.Key, e.Err)
	}
	// hamba/avro prefixes the path ("addr: city: avro: ..."); Field says it.
	msg := pathPrefixRE.ReplaceAllString(e.Err.Error(), "")
	return fmt.Sprintf("%s %q: field %s does not match the schema: %s", e.Entity, e.Key, e.Field, msg)
}

func (e *EncodeError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrInvalidState) true.
func (e *EncodeError) Is(target error) bool { return target == ErrInvalidState }

// Config configures a Publisher.
type Config struct {
	// Service is the producing service, written as the ecst-source header.
	Service string
	// Entities are the declared entities, validated (config.Config.Finish).
	Entities map[string]*config.Entity
	// Registry resolves schema ids.
	Registry *schemas.Registry
	// AutoRegister registers a schema that the registry does not have
	// instead of failing with ErrSchemaNotRegistered. For dev stacks.
	AutoRegister bool
	// Shards is outbox.shards: the relay shard of a row is its key's hash
	// modulo Shards. Zero means 1.
	Shards int
	// Transport is outbox.transport: table (zero) or wal. It must be the
	// database's: a write of the other transport fails with
	// outbox.ErrTransportMismatch, and writes nothing.
	Transport outbox.Transport
}

// Publisher writes full-state events to the outbox. It is safe for
// concurrent use; create one per process.
type Publisher struct {
	service      string
	reg          *schemas.Registry
	autoRegister bool
	shards       int
	transport    outbox.Transport
	entities     map[string]*entity
	// insert is the transport's Insert, wrapped; a test swaps it to show
	// what the key lock is for.
	insert func(context.Context, pgx.Tx, outbox.Row) error
}

type entity struct {
	cfg      *config.Entity
	schema   avro.Schema
	upserted []byte
	deleted  []byte

	mu sync.Mutex
	id int // registry id, 0 until resolved
}

// New builds a Publisher. It does no I/O: schema ids are resolved on first
// use, or up front by Resolve.
func New(cfg Config) (*Publisher, error) {
	if cfg.Service == "" {
		return nil, errors.New("producer: service is required (service in ecst.yaml or ECST_SERVICE); it becomes the ecst-source header")
	}
	if cfg.Registry == nil {
		return nil, errors.New("producer: a schema registry is required")
	}
	switch cfg.Transport {
	case "":
		cfg.Transport = outbox.TransportTable
	case outbox.TransportTable, outbox.TransportWAL:
	default:
		return nil, fmt.Errorf("producer: transport %q is not table or wal", cfg.Transport)
	}
	p := &Publisher{
		service:      cfg.Service,
		reg:          cfg.Registry,
		autoRegister: cfg.AutoRegister,
		shards:       max(cfg.Shards, 1),
		transport:    cfg.Transport,
		entities:     make(map[string]*entity, len(cfg.Entities)),
		insert: func(ctx context.Context, tx pgx.Tx, r outbox.Row) error {
			if err := cfg.Transport.Insert(ctx, tx, r); err != nil {
				return fmt.Errorf("publish %q: %w", r.Key, err)
			}
			return nil
		},
	}
	for name, e := range cfg.Entities {
		if e.SchemaText == "" {
			return nil, fmt.Errorf("producer: entity %s has no schema loaded (validate the config with Finish first)", name)
		}
		s, err := schemas.Parse(e.SchemaText)
		if err != nil {
			return nil, fmt.Errorf("producer: entity %s: parse schema %s: %w", name, e.SchemaPath, err)
		}
		p.entities[name] = &entity{
			cfg:      e,
			schema:   s,
			upserted: []byte(name + ".upserted"),
			deleted:  []byte(name + ".deleted"),
		}
	}
	return p, nil
}

// FromConfig builds a Publisher for every entity in a validated config.
func FromConfig(cfg *config.Config, reg *schemas.Registry) (*Publisher, error) {
	return New(Config{Service: cfg.Service, Entities: cfg.Entities, Registry: reg, AutoRegister: cfg.Registry.AutoRegister,
		Shards: cfg.Outbox.Shards, Transport: outbox.Transport(cfg.Outbox.Transport)})
}

// Transport is the outbox transport the Publisher writes.
func (p *Publisher) Transport() outbox.Transport { return p.transport }

// CheckTransport checks that the database runs the Publisher's transport,
// so that a service configured for the other one finds out at start rather
// than at its first write (which would fail with the same error, writing
// nothing).
func (p *Publisher) CheckTransport(ctx context.Context, q outbox.Querier) error {
	return outbox.CheckTransport(ctx, q, p.transport)
}

// Resolve looks up every entity's schema id now, so that a service finds a
// missing schema at start rather than on its first write.
func (p *Publisher) Resolve(ctx context.Context) error {
	var errs []error
	for _, e := range p.entities {
		if _, err := p.schemaID(ctx, e); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Option adjusts one event.
type Option func(*event)

type event struct {
	occurredAt  time.Time
	traceParent string
	republish   string
	capture     string
}

// OccurredAt sets the ecst-occurred-at header (default: now).
func OccurredAt(t time.Time) Option { return func(e *event) { e.occurredAt = t } }

// TraceParent sets the W3C traceparent header.
func TraceParent(tp string) Option { return func(e *event) { e.traceParent = tp } }

// Republish tags the event with the republish run that wrote it.
func Republish(runID string) Option { return func(e *event) { e.republish = runID } }

// Capture tags the event with the capture marker it resolves (the
// relay's capture path).
func Capture(markerID string) Option { return func(e *event) { e.capture = markerID } }

// Publish writes the full state of entity key at version inside tx. state
// is a map[string]any or a struct with avro tags (the generated types).
func (p *Publisher) Publish(ctx context.Context, tx pgx.Tx, entityName, key string, version int64, state any, opts ...Option) error {
	row, err := p.upsertRow(ctx, entityName, key, version, state, opts)
	if err != nil {
		return err
	}
	return p.insert(ctx, tx, row)
}

// Delete writes a tombstone for entity key inside tx: a null value that
// compaction eventually removes, and the <entity>.deleted event type.
func (p *Publisher) Delete(ctx context.Context, tx pgx.Tx, entityName, key string, version int64, opts ...Option) error {
	row, err := p.deleteRow(entityName, key, version, opts)
	if err != nil {
		return err
	}
	return p.insert(ctx, tx, row)
}

// Queue is Publish for callers that send their statements as a pgx.Batch:
// it validates and encodes now (returning the same errors as Publish, with
// nothing queued), and adds the outbox insert to b, which the caller sends
// inside its transaction (tx.SendBatch). The event then costs the business
// transaction no round trip of its own.
func (p *Publisher) Queue(ctx context.Context, b *pgx.Batch, entityName, key string, version int64, state any, opts ...Option) error {
	row, err := p.upsertRow(ctx, entityName, key, version, state, opts)
	if err != nil {
		return err
	}
	p.transport.Queue(b, row)
	return nil
}

// QueueDelete is Delete for a pgx.Batch, as Queue is for Publish.
func (p *Publisher) QueueDelete(b *pgx.Batch, entityName, key string, version int64, opts ...Option) error {
	row, err := p.deleteRow(entityName, key, version, opts)
	if err != nil {
		return err
	}
	p.transport.Queue(b, row)
	return nil
}

// Event validates and encodes the full state of entity key, like Publish,
// and returns the outbox row instead of writing it. Bulk writers (republish)
// take the rows' key locks themselves (outbox.LockKeys) and write them with
// the transport's CopyRows (Publisher.Transport).
func (p *Publisher) Event(ctx context.Context, entityName, key string, version int64, state any, opts ...Option) (outbox.Row, error) {
	return p.upsertRow(ctx, entityName, key, version, state, opts)
}

// DeleteEvent is Event for a deletion: the tombstone row.
func (p *Publisher) DeleteEvent(entityName, key string, version int64, opts ...Option) (outbox.Row, error) {
	return p.deleteRow(entityName, key, version, opts)
}

func (p *Publisher) upsertRow(ctx context.Context, entityName, key string, version int64, state any, opts []Option) (outbox.Row, error) {
	e, err := p.check(entityName, key)
	if err != nil {
		return outbox.Row{}, err
	}
	payload, err := avro.Marshal(e.schema, state)
	if err != nil {
		return outbox.Row{}, &EncodeError{Entity: entityName, Key: key, Field: fieldOf(err), Err: err}
	}
	id, err := p.schemaID(ctx, e)
	if err != nil {
		return outbox.Row{}, err
	}
	value := make([]byte, 0, 5+len(payload))
	value = append(schemas.AppendWire(value, id), payload...)
	return p.row(e, key, version, value, e.upserted, opts)
}

func (p *Publisher) deleteRow(entityName, key string, version int64, opts []Option) (outbox.Row, error) {
	e, err := p.check(entityName, key)
	if err != nil {
		return outbox.Row{}, err
	}
	return p.row(e, key, version, nil, e.deleted, opts)
}

func (p *Publisher) check(entityName, key string) (*entity, error) {
	e, ok := p.entities[entityName]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownEntity, entityName)
	}
	if key == "" {
		return nil, fmt.Errorf("%s: %w", entityName, ErrEmptyKey)
	}
	if !utf8.ValidString(key) {
		return nil, fmt.Errorf("%s %q: %w", entityName, key, ErrInvalidKey)
	}
	return e, nil
}

// row builds the outbox row with the headers of the wire contract.
func (p *Publisher) row(e *entity, key string, version int64, value, eventType []byte, opts []Option) (outbox.Row, error) {
	ev := event{}
	for _, o := range opts {
		o(&ev)
	}
	if ev.occurredAt.IsZero() {
		ev.occurredAt = time.Now()
	}
	eventID, err := uuid.NewV7()
	if err != nil {
		return outbox.Row{}, fmt.Errorf("event id: %w", err)
	}
	hs := make([]outbox.Header, 0, 7)
	hs = append(hs,
		outbox.Header{Key: HeaderEventID, Value: []byte(eventID.String())},
		outbox.Header{Key: HeaderEntityVersion, Value: strconv.AppendInt(nil, version, 10)},
		outbox.Header{Key: HeaderEventType, Value: eventType},
		outbox.Header{Key: HeaderOccurredAt, Value: ev.occurredAt.UTC().AppendFormat(nil, time.RFC3339Nano)},
		outbox.Header{Key: HeaderSource, Value: []byte(p.service)},
	)
	if ev.republish != "" {
		hs = append(hs, outbox.Header{Key: HeaderRepublish, Value: []byte(ev.republish)})
	}
	if ev.capture != "" {
		hs = append(hs, outbox.Header{Key: HeaderCapture, Value: []byte(ev.capture)})
	}
	if ev.traceParent != "" {
		hs = append(hs, outbox.Header{Key: HeaderTraceParent, Value: []byte(ev.traceParent)})
	}
	return outbox.Row{Shard: outbox.Shard(e.cfg.Topic, key, p.shards), Topic: e.cfg.Topic, Key: key, Value: value, Headers: hs}, nil
}

// schemaID resolves the entity's schema id by content, once. Failures are
// not cached, so a schema registered later is found by the next call.
func (p *Publisher) schemaID(ctx context.Context, e *entity) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.id != 0 {
		return e.id, nil
	}
	subject := e.cfg.Subject()
	id, err := p.reg.Lookup(ctx, subject, e.cfg.SchemaText)
	if errors.Is(err, schemas.ErrNotRegistered) && p.autoRegister {
		id, err = p.reg.Register(ctx, subject, e.cfg.SchemaText)
	}
	if err != nil {
		if errors.Is(err, schemas.ErrNotRegistered) {
			return 0, fmt.Errorf("entity %s: %w; register it with `ecst schema register %s`", e.cfg.Name, err, e.cfg.Name)
		}
		return 0, fmt.Errorf("entity %s: %w", e.cfg.Name, err)
	}
	e.id = id
	return id, nil
}

var (
	missingFieldRE = regexp.MustCompile(`missing required field "?([A-Za-z0-9_]+)"?`)
	pathPrefixRE   = regexp.MustCompile(`^((?:[A-Za-z_][A-Za-z0-9_]*: )+)`)
)

// fieldOf extracts the field path from hamba/avro's error text, which
// prefixes nested errors with "field: ".
func fieldOf(err error) string {
	msg := err.Error()
	var parts []string
	if m := pathPrefixRE.FindStringSubmatch(msg); m != nil {
		for _, p := range strings.Split(strings.TrimSuffix(m[1], ": "), ": ") {
			if p != "avro" {
				parts = append(parts, p)
			}
		}
	}
	if m := missingFieldRE.FindStringSubmatch(msg); m != nil {
		parts = append(parts, m[1])
	}
	return strings.Join(parts, ".")
}
