// Package schemas holds ecst's side of the event contract: the Schema
// Registry client wrapper, the Confluent wire format, and Avro schema
// handling.
package schemas

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/ecst-io/ecst/config"
)

// Sentinel errors callers branch on.
var (
	// ErrNotRegistered: the schema is not registered under the subject.
	ErrNotRegistered = errors.New("schema is not registered")
	// ErrUnauthorized: the registry refused the credentials.
	ErrUnauthorized = errors.New("schema registry refused the credentials (HTTP 401/403): check ECST_SCHEMA_REGISTRY_USERNAME and ECST_SCHEMA_REGISTRY_PASSWORD")
	// ErrIncompatible: the registry rejected a schema under the subject's compatibility level.
	ErrIncompatible = errors.New("schema is incompatible with the subject's registered versions")
	// ErrBadSchema: a registered schema that does not parse as Avro.
	ErrBadSchema = errors.New("registered schema does not parse as Avro")
	// ErrNotWireFormat: bytes that do not start with the Confluent wire-format header.
	ErrNotWireFormat = errors.New("not Confluent wire format (magic byte 0, 4-byte schema id)")
)

// Registry is a Schema Registry client for ecst's subjects.
type Registry struct {
	cl     *sr.Client
	httpcl *http.Client
}

// NewRegistry connects nothing yet; it builds the client from config.
// Close releases its idle connections.
func NewRegistry(cfg config.Registry) (*Registry, error) {
	opts, err := cfg.ClientOpts()
	if err != nil {
		return nil, err
	}
	httpcl := &http.Client{Timeout: 15 * time.Second, Transport: http.DefaultTransport.(*http.Transport).Clone()}
	cl, err := sr.NewClient(append([]sr.ClientOpt{sr.HTTPClient(httpcl)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("schema registry client: %w", err)
	}
	return &Registry{cl: cl, httpcl: httpcl}, nil
}

// Close closes idle connections to the registry.
func (r *Registry) Close() { r.httpcl.CloseIdleConnections() }

// Client exposes the underlying franz-go client for calls the wrapper does
// not cover.
func (r *Registry) Client() *sr.Client { return r.cl }

// Lookup returns the id under which schema is registered in subject,
// comparing by content. ErrNotRegistered when it is not there.
func (r *Registry) Lookup(ctx context.Context, subject, schema string) (int, error) {
	ss, err := r.cl.LookupSchema(ctx, subject, sr.Schema{Schema: schema, Type: sr.TypeAvro})
	if err != nil {
		return 0, classify(fmt.Sprintf("look up schema in subject %s", subject), err)
	}
	return ss.ID, nil
}

// Register registers schema under subject (a no-op returning the existing id
// if it is there already) and returns its id.
func (r *Registry) Register(ctx context.Context, subject, schema string) (int, error) {
	id, err := r.cl.RegisterSchema(ctx, subject, sr.Schema{Schema: schema, Type: sr.TypeAvro}, -1, -1)
	if err != nil {
		return 0, classify(fmt.Sprintf("register schema in subject %s", subject), err)
	}
	return id, nil
}

// SchemaByID fetches and parses the schema with the given id.
func (r *Registry) SchemaByID(ctx context.Context, id int) (avro.Schema, error) {
	s, err := r.cl.SchemaByID(ctx, id)
	if err != nil {
		return nil, classify(fmt.Sprintf("fetch schema id %d", id), err)
	}
	parsed, err := Parse(s.Schema)
	if err != nil {
		return nil, fmt.Errorf("schema id %d: %w: %v", id, ErrBadSchema, err)
	}
	return parsed, nil
}

// classify maps registry responses to the sentinels, keeping the registry's
// own message. sr's errors carry the request URL; ResponseError.Error()
// prints only the message, and credentials are never part of either.
func classify(what string, err error) error {
	var re *sr.ResponseError
	if errors.As(err, &re) {
		switch {
		case re.StatusCode == http.StatusUnauthorized || re.StatusCode == http.StatusForbidden:
			return fmt.Errorf("%s: %w", what, ErrUnauthorized)
		case re.ErrorCode == sr.ErrSubjectNotFound.Code || re.ErrorCode == sr.ErrSchemaNotFound.Code:
			return fmt.Errorf("%s: %w (%s)", what, ErrNotRegistered, re.Message)
		case re.StatusCode == http.StatusConflict || re.ErrorCode == 409:
			return fmt.Errorf("%s: %w: %s", what, ErrIncompatible, re.Message)
		case re.StatusCode == http.StatusUnprocessableEntity:
			return fmt.Errorf("%s: the registry rejected the schema as invalid (HTTP 422, code %d): %s", what, re.ErrorCode, re.Message)
		}
		return fmt.Errorf("%s: registry answered HTTP %d: %s", what, re.StatusCode, re.Error())
	}
	msg := what + ": " + userinfoRE.ReplaceAllString(err.Error(), "://$1:xxxxx@")
	if !errors.Is(err, context.Canceled) {
		msg += " (check ECST_SCHEMA_REGISTRY_URL and that the registry is reachable)"
	}
	return &redactedError{msg: msg, err: err}
}

// userinfoRE finds user:password@ in URLs quoted by transport errors.
var userinfoRE = regexp.MustCompile(`://([^:/@\s]+):([^@\s]+)@`)

// redactedError prints a message with credentials removed but still
// unwraps to the original error for errors.Is and errors.As.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// wireHeaderLen is the Confluent header: magic byte 0, big-endian schema id.
const wireHeaderLen = 5

// AppendWire appends the Confluent wire-format header for schema id to b.
func AppendWire(b []byte, id int) []byte {
	b = append(b, 0)
	return binary.BigEndian.AppendUint32(b, uint32(id)) //nolint:gosec // ids are positive int32 by contract
}

// DecodeWire splits a Confluent wire-format value into schema id and Avro
// payload.
func DecodeWire(b []byte) (id int, payload []byte, err error) {
	if len(b) < wireHeaderLen || b[0] != 0 {
		return 0, nil, ErrNotWireFormat
	}
	return int(binary.BigEndian.Uint32(b[1:5])), b[wireHeaderLen:], nil
}

// Parse parses an Avro schema with a cache of its own. hamba/avro's default
// cache is process-wide and keyed by full name, so two versions of one
// record (or two entities that share a record name) would see each other's
// definitions.
func Parse(text string) (avro.Schema, error) {
	return avro.ParseWithCache(text, "", &avro.SchemaCache{})
}

// Versions returns every registered version of subject, oldest first,
// parsed. A subject that does not exist has none.
func (r *Registry) Versions(ctx context.Context, subject string) ([]Version, error) {
	vs, err := r.cl.SubjectVersions(ctx, subject)
	if err != nil {
		err = classify("list versions of "+subject, err)
		if errors.Is(err, ErrNotRegistered) {
			return nil, nil
		}
		return nil, err
	}
	out := make([]Version, 0, len(vs))
	for _, v := range vs {
		ss, err := r.cl.SchemaByVersion(ctx, subject, v)
		if err != nil {
			return nil, classify(fmt.Sprintf("fetch %s version %d", subject, v), err)
		}
		parsed, err := Parse(ss.Schema.Schema)
		if err != nil {
			return nil, fmt.Errorf("%s version %d does not parse as Avro: %w", subject, v, err)
		}
		out = append(out, Version{Version: v, Label: fmt.Sprintf("v%d", v), Schema: parsed, ID: ss.ID, Text: ss.Schema.Schema})
	}
	return out, nil
}

// SetCompatibility sets subject's compatibility level.
func (r *Registry) SetCompatibility(ctx context.Context, subject, level string) error {
	var l sr.CompatibilityLevel
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("compatibility level %q: %w", level, err)
	}
	for _, res := range r.cl.SetCompatibility(ctx, sr.SetCompatibility{Level: l}, subject) {
		if res.Err != nil {
			return classify("set compatibility of "+subject, res.Err)
		}
	}
	return nil
}

// Compatibility returns subject's own compatibility level, or "" when the
// subject uses the registry's global default.
func (r *Registry) Compatibility(ctx context.Context, subject string) (string, error) {
	// One subject asked, so at most one result.
	results := r.cl.Compatibility(ctx, subject)
	if len(results) == 0 {
		return "", nil
	}
	res := results[0]
	if res.Err != nil {
		err := classify("get compatibility of "+subject, res.Err)
		if errors.Is(err, ErrNotRegistered) || isNotFound(res.Err) {
			return "", nil
		}
		return "", err
	}
	return res.Level.String(), nil
}

func isNotFound(err error) bool {
	var re *sr.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusNotFound
}

// VersionOf returns the version under which schema is registered in subject.
func (r *Registry) VersionOf(ctx context.Context, subject, schema string) (int, error) {
	ss, err := r.cl.LookupSchema(ctx, subject, sr.Schema{Schema: schema, Type: sr.TypeAvro})
	if err != nil {
		return 0, classify("look up schema in subject "+subject, err)
	}
	return ss.Version, nil
}

// SameText reports whether two schema texts are the same JSON, whatever the
// white space and key order.
func SameText(a, b string) bool {
	na, errA := normalizeJSON(a)
	nb, errB := normalizeJSON(b)
	return errA == nil && errB == nil && na == nb
}

func normalizeJSON(s string) (string, error) {
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return "", err
	}
	b, err := json.Marshal(v)
	return string(b), err
}

// DecodeAny decodes an Avro payload with s into generic values. A payload
// that does not fit is an error, never a panic.
func DecodeAny(s avro.Schema, payload []byte) (v any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("avro decode: %v", r)
		}
	}()
	err = avro.Unmarshal(s, payload, &v)
	return v, err
}
