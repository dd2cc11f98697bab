package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/hamba/avro/v2"

	"github.com/ecst-io/ecst/schemas"
)

// ErrPoison marks a record that cannot be applied: bytes that are not the
// wire format, an unknown schema id, or a value that does not fit the
// reader's schema. The poison policy decides what happens to it.
var ErrPoison = errors.New("poison record")

// PoisonError is a record that cannot be applied, with where it is.
type PoisonError struct {
	// Topic, Partition and Offset locate the record.
	Topic     string
	Partition int32 // see Topic
	Offset    int64 // see Topic
	// Key is the record's key.
	Key string
	// Err is why it cannot be applied.
	Err error
}

func (e *PoisonError) Error() string {
	return fmt.Sprintf("poison record at %s/%d offset %d (key %q): %v", e.Topic, e.Partition, e.Offset, e.Key, e.Err)
}

func (e *PoisonError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrPoison) true.
func (e *PoisonError) Is(target error) bool { return target == ErrPoison }

// decoder turns Confluent wire-format values into T, resolving each
// writer schema (fetched by id, cached) to the reader schema.
type decoder[T any] struct {
	reg    *schemas.Registry
	reader avro.Schema // nil: decode with the writer's schema (generic maps)

	mu       sync.Mutex
	resolved map[int]avro.Schema
	writers  map[int]avro.Schema
}

func newDecoder[T any](reg *schemas.Registry, readerSchema string) (*decoder[T], error) {
	d := &decoder[T]{reg: reg, resolved: map[int]avro.Schema{}, writers: map[int]avro.Schema{}}
	if readerSchema != "" {
		s, err := schemas.Parse(readerSchema)
		if err != nil {
			return nil, fmt.Errorf("reader schema: %w", err)
		}
		d.reader = s
	}
	return d, nil
}

// schemaFor returns the schema to decode id's records with, and the
// writer's own schema.
func (d *decoder[T]) schemaFor(ctx context.Context, id int) (avro.Schema, avro.Schema, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s, ok := d.resolved[id]; ok {
		return s, d.writers[id], nil
	}
	w, err := d.reg.SchemaByID(ctx, id)
	if errors.Is(err, schemas.ErrNotRegistered) || errors.Is(err, schemas.ErrBadSchema) {
		return nil, nil, poison(fmt.Errorf("schema id %d: %w", id, err))
	}
	if err != nil {
		return nil, nil, err // the registry is unreachable: retry, never skip
	}
	s := w
	if d.reader != nil {
		if s, err = avro.NewSchemaCompatibility().Resolve(d.reader, w); err != nil {
			return nil, nil, poison(fmt.Errorf("writer schema %d does not resolve to the reader's schema: %w", id, err))
		}
	}
	d.resolved[id], d.writers[id] = s, w
	return s, w, nil
}

// decode decodes a non-null value into out, which must hold T's zero
// value: the caller passes the slot the state ends up in, so that decoding
// allocates no T of its own. A registry that cannot be reached is an
// ordinary error (retried); everything wrong with the record itself is a
// poison error.
func (d *decoder[T]) decode(ctx context.Context, value []byte, out *T) (avro.Schema, error) {
	id, payload, err := schemas.DecodeWire(value)
	if err != nil {
		return nil, poison(err)
	}
	s, w, err := d.schemaFor(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := avro.Unmarshal(s, payload, out); err != nil {
		return nil, poison(fmt.Errorf("value does not decode with schema id %d: %w", id, err))
	}
	return w, nil
}

func poison(err error) error { return &PoisonError{Err: err} }
