// Package pgavro maps the rows of a PostgreSQL query onto an Avro record by
// column name: the source-of-truth rows that `ecst republish` publishes and
// `ecst verify` compares, and the rows of an `ecst mirror` table.
//
// A Mapper is planned once from the query's result columns (names and type
// OIDs) so that a column that cannot feed its field, a field with no column
// and no default, or a column with no field is an error naming it before
// anything is read or written. Map then turns one row's values (pgx's
// Rows.Values) into the map[string]any that hamba/avro encodes.
package pgavro

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/hamba/avro/v2"
	"github.com/jackc/pgx/v5/pgtype"
)

// Column is one result column of a query.
type Column struct {
	Name string
	OID  uint32
}

// Options adjust a plan.
type Options struct {
	// Key is the column holding the entity id, the Kafka key. Required.
	Key string
	// Version is the column holding the entity version, if any.
	Version string
	// IgnoreExtra lets columns without a field pass (a mirror table keeps
	// columns of fields a later schema dropped).
	IgnoreExtra bool
}

// Mapper turns rows into Avro-encodable maps.
type Mapper struct {
	schema  *avro.RecordSchema
	key     int
	keyFmt  func(any) (string, error)
	version int // -1 when there is none
	fields  []field
}

type field struct {
	name  string
	col   int // -1: the field takes its default
	typ   avro.Schema
	cname string
}

// ErrUnmappable is wrapped by every planning error.
var ErrUnmappable = errors.New("source columns do not map onto the schema")

// New plans the mapping of cols onto schema.
func New(schema avro.Schema, cols []Column, opts Options) (*Mapper, error) {
	rec, ok := schema.(*avro.RecordSchema)
	if !ok {
		return nil, fmt.Errorf("%w: the schema is %s, not a record", ErrUnmappable, schema.Type())
	}
	m := &Mapper{schema: rec, key: -1, version: -1}
	byName := map[string]int{}
	for i, c := range cols {
		byName[strings.ToLower(c.Name)] = i
	}
	find := func(name string) int {
		if i, ok := byName[strings.ToLower(name)]; ok {
			return i
		}
		return -1
	}
	var errs []error
	if opts.Key == "" {
		return nil, fmt.Errorf("%w: no key column given", ErrUnmappable)
	}
	if m.key = find(opts.Key); m.key < 0 {
		errs = append(errs, fmt.Errorf("key column %q is not in the result (columns: %s)", opts.Key, names(cols)))
	} else if f, err := keyFormatter(cols[m.key].OID); err != nil {
		errs = append(errs, fmt.Errorf("key column %q: %w", opts.Key, err))
	} else {
		m.keyFmt = f
	}
	if opts.Version != "" {
		if m.version = find(opts.Version); m.version < 0 {
			errs = append(errs, fmt.Errorf("version column %q is not in the result (columns: %s)", opts.Version, names(cols)))
		} else if !isInt(cols[m.version].OID) {
			errs = append(errs, fmt.Errorf("version column %q is %s, not an integer type", opts.Version, typeName(cols[m.version].OID)))
		}
	}
	used := map[int]bool{m.key: true, m.version: true}
	for _, f := range rec.Fields() {
		i := find(f.Name())
		if i < 0 {
			if !f.HasDefault() {
				errs = append(errs, fmt.Errorf("field %q has no column of that name and no default; select a column named %s", f.Name(), f.Name()))
			}
			m.fields = append(m.fields, field{name: f.Name(), col: -1, typ: f.Type()})
			continue
		}
		used[i] = true
		if err := compatible(f.Type(), cols[i].OID); err != nil {
			errs = append(errs, fmt.Errorf("column %q (%s) cannot feed field %q (%s): %w", cols[i].Name, typeName(cols[i].OID), f.Name(), describe(f.Type()), err))
			continue
		}
		m.fields = append(m.fields, field{name: f.Name(), col: i, typ: f.Type(), cname: cols[i].Name})
	}
	if !opts.IgnoreExtra {
		for i, c := range cols {
			if !used[i] {
				errs = append(errs, fmt.Errorf("column %q has no field of that name in the schema; drop it from the query or add the field", c.Name))
			}
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w:\n  %w", ErrUnmappable, joinIndented(errs))
	}
	return m, nil
}

func joinIndented(errs []error) error {
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return errors.New(strings.Join(msgs, "\n  "))
}

func names(cols []Column) string {
	s := make([]string, len(cols))
	for i, c := range cols {
		s[i] = c.Name
	}
	return strings.Join(s, ", ")
}

// Key returns the Kafka key of a row.
func (m *Mapper) Key(vals []any) (string, error) {
	v := vals[m.key]
	if v == nil {
		return "", errors.New("the key column is NULL")
	}
	return m.keyFmt(v)
}

// Map returns a row's key, version (0 without a version column) and state.
func (m *Mapper) Map(vals []any) (key string, version int64, state map[string]any, err error) {
	if key, err = m.Key(vals); err != nil {
		return "", 0, nil, err
	}
	if m.version >= 0 && vals[m.version] != nil {
		version, _ = toInt64(vals[m.version])
	}
	state = make(map[string]any, len(m.fields))
	for _, f := range m.fields {
		if f.col < 0 {
			continue // hamba writes the field's default
		}
		v, err := Coerce(f.typ, vals[f.col])
		if err != nil {
			return key, version, nil, fmt.Errorf("key %q: column %q → field %q: %w", key, f.cname, f.name, err)
		}
		state[f.name] = v
	}
	return key, version, state, nil
}

// Schema is the record schema the mapper encodes to.
func (m *Mapper) Schema() avro.Schema { return m.schema }

func keyFormatter(oid uint32) (func(any) (string, error), error) {
	switch oid {
	case pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID:
		return func(v any) (string, error) {
			s, ok := v.(string)
			if !ok {
				return "", fmt.Errorf("key is %T", v)
			}
			return s, nil
		}, nil
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID:
		return func(v any) (string, error) {
			n, ok := toInt64(v)
			if !ok {
				return "", fmt.Errorf("key is %T", v)
			}
			return strconv.FormatInt(n, 10), nil
		}, nil
	case pgtype.UUIDOID:
		return func(v any) (string, error) {
			b, ok := v.([16]byte)
			if !ok {
				return "", fmt.Errorf("key is %T", v)
			}
			return uuid.UUID(b).String(), nil
		}, nil
	}
	return nil, fmt.Errorf("type %s is not supported as a key (text, varchar, an integer type or uuid)", typeName(oid))
}

func isInt(oid uint32) bool {
	return oid == pgtype.Int2OID || oid == pgtype.Int4OID || oid == pgtype.Int8OID
}

func isText(oid uint32) bool {
	return oid == pgtype.TextOID || oid == pgtype.VarcharOID || oid == pgtype.BPCharOID || oid == pgtype.NameOID
}

func isJSON(oid uint32) bool { return oid == pgtype.JSONOID || oid == pgtype.JSONBOID }

// builtin reports whether oid is one of PostgreSQL's core scalar or array
// types. Other OIDs (enums, domains, extensions) arrive as text.
func builtin(oid uint32) bool { return oid < 10000 }

// compatible checks at plan time that a column of type oid can feed a
// field of type s. Coerce checks each value again.
func compatible(s avro.Schema, oid uint32) error {
	s = nonNull(s)
	if isJSON(oid) {
		return nil // any Avro type can be written as JSON
	}
	if !builtin(oid) {
		switch s.Type() {
		case avro.String, avro.Enum:
			return nil
		}
		return errors.New("a user-defined type maps only to string or enum")
	}
	if a, ok := s.(*avro.ArraySchema); ok {
		if elem, ok := arrayElem[oid]; ok {
			return compatible(a.Items(), elem)
		}
	} else if feeds(s, oid) {
		return nil
	}
	return errors.New("no mapping between these types")
}

// feeds reports whether a column of the core scalar type oid can feed a
// field of type s (not an array), one function per Avro type.
func feeds(s avro.Schema, oid uint32) bool {
	lt := logical(s)
	switch s.Type() {
	case avro.Boolean:
		return oid == pgtype.BoolOID
	case avro.Int:
		return feedsInt(lt, oid)
	case avro.Long:
		return feedsLong(lt, oid)
	case avro.Float:
		return oid == pgtype.Float4OID
	case avro.Double:
		return oid == pgtype.Float4OID || oid == pgtype.Float8OID || oid == pgtype.NumericOID || isInt(oid)
	case avro.String:
		return isText(oid) || oid == pgtype.UUIDOID || oid == pgtype.NumericOID || isInt(oid)
	case avro.Enum:
		return isText(oid)
	case avro.Bytes:
		return feedsBytes(lt, oid)
	case avro.Fixed:
		return oid == pgtype.ByteaOID || (oid == pgtype.UUIDOID && s.(*avro.FixedSchema).Size() == 16)
	case avro.Union:
		return true // a multi-type union: Coerce picks the branch by value
	}
	return false
}

// feedsInt: an int is a date, a time of day in milliseconds, or a number.
func feedsInt(lt avro.LogicalType, oid uint32) bool {
	switch lt {
	case avro.Date:
		return oid == pgtype.DateOID
	case avro.TimeMillis:
		return oid == pgtype.TimeOID
	case "":
		return oid == pgtype.Int2OID || oid == pgtype.Int4OID
	}
	return false
}

// feedsLong: a long is a timestamp, a time of day in microseconds, or a
// number.
func feedsLong(lt avro.LogicalType, oid uint32) bool {
	switch lt {
	case avro.TimestampMicros, avro.TimestampMillis, avro.LocalTimestampMicros, avro.LocalTimestampMillis:
		return oid == pgtype.TimestamptzOID || oid == pgtype.TimestampOID
	case avro.TimeMicros:
		return oid == pgtype.TimeOID
	case "":
		return isInt(oid)
	}
	return false
}

// feedsBytes: bytes are a decimal, or bytes.
func feedsBytes(lt avro.LogicalType, oid uint32) bool {
	switch lt {
	case avro.Decimal:
		return oid == pgtype.NumericOID || isInt(oid)
	case "":
		return oid == pgtype.ByteaOID
	}
	return false
}

// arrayElem maps PostgreSQL array types to their element types.
var arrayElem = map[uint32]uint32{
	pgtype.BoolArrayOID:        pgtype.BoolOID,
	pgtype.Int2ArrayOID:        pgtype.Int2OID,
	pgtype.Int4ArrayOID:        pgtype.Int4OID,
	pgtype.Int8ArrayOID:        pgtype.Int8OID,
	pgtype.Float4ArrayOID:      pgtype.Float4OID,
	pgtype.Float8ArrayOID:      pgtype.Float8OID,
	pgtype.TextArrayOID:        pgtype.TextOID,
	pgtype.VarcharArrayOID:     pgtype.VarcharOID,
	pgtype.UUIDArrayOID:        pgtype.UUIDOID,
	pgtype.TimestamptzArrayOID: pgtype.TimestamptzOID,
	pgtype.TimestampArrayOID:   pgtype.TimestampOID,
	pgtype.DateArrayOID:        pgtype.DateOID,
	pgtype.NumericArrayOID:     pgtype.NumericOID,
	pgtype.ByteaArrayOID:       pgtype.ByteaOID,
	pgtype.JSONBArrayOID:       pgtype.JSONBOID,
}

func typeName(oid uint32) string {
	if t, ok := pgtype.NewMap().TypeForOID(oid); ok {
		return t.Name
	}
	return "type oid " + strconv.FormatUint(uint64(oid), 10)
}

func describe(s avro.Schema) string {
	s = nonNull(s)
	if lt := logical(s); lt != "" {
		return string(s.Type()) + "." + string(lt)
	}
	if n, ok := s.(avro.NamedSchema); ok {
		return string(s.Type()) + " " + n.FullName()
	}
	return string(s.Type())
}

func logical(s avro.Schema) avro.LogicalType {
	if l, ok := s.(avro.LogicalTypeSchema); ok && l.Logical() != nil {
		return l.Logical().Type()
	}
	return ""
}

// nonNull strips null from a two-branch nullable union.
func nonNull(s avro.Schema) avro.Schema {
	if u, ok := s.(*avro.UnionSchema); ok && u.Nullable() {
		for _, t := range u.Types() {
			if t.Type() != avro.Null {
				return t
			}
		}
	}
	return s
}

// Coerce converts v, a value as pgx returns it (or as encoding/json decodes
// it, for json columns and mirror jsonb columns), into the native form
// hamba/avro encodes for s: one function per Avro type.
func Coerce(s avro.Schema, v any) (any, error) {
	if u, ok := s.(*avro.UnionSchema); ok {
		return coerceUnion(u, v)
	}
	if v == nil {
		if s.Type() == avro.Null {
			return nil, nil
		}
		return nil, errors.New("NULL, and the field is not nullable (make it a union with null, or select a value)")
	}
	switch s.Type() {
	case avro.Record, avro.Array, avro.Map:
		// json and jsonb columns arrive decoded; a json string holding a
		// structure (a mirror's jsonb text) is decoded here.
		if str, ok := v.(string); ok {
			var d any
			if err := json.Unmarshal([]byte(str), &d); err != nil {
				return nil, fmt.Errorf("not JSON: %w", err)
			}
			v = d
		}
	}
	switch s.Type() {
	case avro.Null:
		return nil, fmt.Errorf("%T for a null field", v)
	case avro.Boolean:
		if b, ok := v.(bool); ok {
			return b, nil
		}
	case avro.Int:
		return coerceInt(s, v)
	case avro.Long:
		return coerceLong(s, v)
	case avro.Float:
		if f, ok := toFloat(v); ok {
			return float32(f), nil
		}
	case avro.Double:
		if f, ok := toFloat(v); ok {
			return f, nil
		}
	case avro.String:
		return coerceString(s, v)
	case avro.Enum:
		return coerceEnum(s.(*avro.EnumSchema), v)
	case avro.Bytes:
		return coerceBytes(s, v)
	case avro.Fixed:
		return coerceFixed(s.(*avro.FixedSchema), v)
	case avro.Array:
		return coerceArray(s.(*avro.ArraySchema), v)
	case avro.Map:
		return coerceMap(s.(*avro.MapSchema), v)
	case avro.Record:
		return coerceRecord(s.(*avro.RecordSchema), v)
	}
	return misfit(s, v)
}

// misfit is the error of a value that does not fit its field's type.
func misfit(s avro.Schema, v any) (any, error) {
	return nil, fmt.Errorf("%T does not fit %s", v, describe(s))
}

// coerceUnion: NULL for a nullable union; the other branch of a nullable
// union; else the first branch that takes the value.
func coerceUnion(u *avro.UnionSchema, v any) (any, error) {
	if v == nil {
		if u.Nullable() {
			return nil, nil
		}
		return nil, errors.New("NULL, and the field is not nullable")
	}
	if u.Nullable() {
		t := nonNull(u)
		c, err := Coerce(t, v)
		if err != nil {
			return nil, err
		}
		if n, ok := t.(avro.NamedSchema); ok {
			return map[string]any{n.FullName(): c}, nil
		}
		return c, nil
	}
	for _, t := range u.Types() {
		if t.Type() == avro.Null {
			continue
		}
		if c, err := Coerce(t, v); err == nil {
			name := string(t.Type())
			if n, ok := t.(avro.NamedSchema); ok {
				name = n.FullName()
			} else if lt := logical(t); lt != "" {
				name += "." + string(lt)
			}
			return map[string]any{name: c}, nil
		}
	}
	return nil, fmt.Errorf("%T fits no branch of the union", v)
}

// coerceInt: a date, a time of day in milliseconds, or a 32-bit number.
func coerceInt(s avro.Schema, v any) (any, error) {
	switch logical(s) {
	case avro.Date:
		return toTime(v, true)
	case avro.TimeMillis:
		return toDuration(v)
	}
	if n, ok := toInt64(v); ok && n >= math.MinInt32 && n <= math.MaxInt32 {
		return int(n), nil
	}
	return misfit(s, v)
}

// coerceLong: a timestamp, a time of day in microseconds, or a number.
func coerceLong(s avro.Schema, v any) (any, error) {
	switch logical(s) {
	case avro.TimestampMicros, avro.TimestampMillis, avro.LocalTimestampMicros, avro.LocalTimestampMillis:
		return toTime(v, false)
	case avro.TimeMicros:
		return toDuration(v)
	}
	if n, ok := toInt64(v); ok {
		return n, nil
	}
	return misfit(s, v)
}

// coerceString: text, a uuid, an integer or a numeric in its text form, or
// a JSON structure as JSON text.
func coerceString(s avro.Schema, v any) (any, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case [16]byte:
		return uuid.UUID(x).String(), nil
	case int16, int32, int64:
		n, _ := toInt64(x)
		return strconv.FormatInt(n, 10), nil
	case pgtype.Numeric:
		b, err := x.MarshalJSON()
		return string(b), err
	case map[string]any, []any:
		b, err := json.Marshal(x)
		return string(b), err
	}
	return misfit(s, v)
}

// coerceEnum: text that is one of the symbols.
func coerceEnum(s *avro.EnumSchema, v any) (any, error) {
	str, ok := v.(string)
	if !ok {
		return misfit(s, v)
	}
	for _, sym := range s.Symbols() {
		if sym == str {
			return str, nil
		}
	}
	return nil, fmt.Errorf("%q is not a symbol of enum %s", str, s.FullName())
}

// coerceBytes: a decimal, or bytes.
func coerceBytes(s avro.Schema, v any) (any, error) {
	if logical(s) == avro.Decimal {
		return toRat(v)
	}
	if b, ok := v.([]byte); ok {
		return b, nil
	}
	return misfit(s, v)
}

// coerceFixed: a uuid or bytes of the fixed's size.
func coerceFixed(s *avro.FixedSchema, v any) (any, error) {
	var b []byte
	switch x := v.(type) {
	case [16]byte:
		b = x[:]
	case []byte:
		b = x
	}
	if b == nil {
		return misfit(s, v)
	}
	if len(b) != s.Size() {
		return nil, fmt.Errorf("%d bytes for fixed %s of size %d", len(b), s.FullName(), s.Size())
	}
	return fixedArray(b), nil
}

// coerceArray: a PostgreSQL array, or a JSON array, item by item.
func coerceArray(s *avro.ArraySchema, v any) (any, error) {
	xs, ok := v.([]any)
	if !ok {
		return misfit(s, v)
	}
	out := make([]any, len(xs))
	for i, x := range xs {
		c, err := Coerce(s.Items(), x)
		if err != nil {
			return nil, fmt.Errorf("item %d: %w", i, err)
		}
		out[i] = c
	}
	return out, nil
}

// coerceMap: a JSON object, value by value.
func coerceMap(s *avro.MapSchema, v any) (any, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return misfit(s, v)
	}
	out := make(map[string]any, len(m))
	for k, x := range m {
		c, err := Coerce(s.Values(), x)
		if err != nil {
			return nil, fmt.Errorf("value %q: %w", k, err)
		}
		out[k] = c
	}
	return out, nil
}

// coerceRecord: a JSON object, field by field; a field it lacks takes its
// default, or NULL.
func coerceRecord(s *avro.RecordSchema, v any) (any, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return misfit(s, v)
	}
	out := make(map[string]any, len(m))
	for _, f := range s.Fields() {
		x, ok := m[f.Name()]
		if !ok {
			if f.HasDefault() {
				continue
			}
			x = nil
		}
		c, err := Coerce(f.Type(), x)
		if err != nil {
			return nil, fmt.Errorf("field %s: %w", f.Name(), err)
		}
		out[f.Name()] = c
	}
	return out, nil
}

// fixedArray returns b as the [N]byte array hamba encodes a fixed from.
func fixedArray(b []byte) any {
	switch len(b) {
	case 16:
		return [16]byte(b)
	case 8:
		return [8]byte(b)
	case 32:
		return [32]byte(b)
	}
	return b
}

func toInt64(v any) (int64, bool) {
	switch x := v.(type) {
	case int16:
		return int64(x), true
	case int32:
		return int64(x), true
	case int64:
		return x, true
	case int:
		return int64(x), true
	case float64: // a JSON number
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return int64(x), true
		}
	case json.Number:
		n, err := x.Int64()
		return n, err == nil
	}
	return 0, false
}

func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float32:
		return float64(x), true
	case float64:
		return x, true
	case int16, int32, int64, int:
		n, _ := toInt64(x)
		return float64(n), true
	case pgtype.Numeric:
		f, err := x.Float64Value()
		return f.Float64, err == nil && f.Valid
	}
	return 0, false
}

func toRat(v any) (any, error) {
	switch x := v.(type) {
	case pgtype.Numeric:
		if !x.Valid || x.NaN || x.InfinityModifier != pgtype.Finite {
			return nil, errors.New("numeric NaN or infinity has no decimal form")
		}
		r := new(big.Rat).SetInt(x.Int)
		if x.Exp > 0 {
			r.Mul(r, new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(x.Exp)), nil)))
		} else if x.Exp < 0 {
			r.Quo(r, new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(-x.Exp)), nil)))
		}
		return r, nil
	case float64:
		return new(big.Rat).SetFloat64(x), nil
	case string:
		r, ok := new(big.Rat).SetString(x)
		if !ok {
			return nil, fmt.Errorf("%q is not a decimal", x)
		}
		return r, nil
	}
	if n, ok := toInt64(v); ok {
		return new(big.Rat).SetInt64(n), nil
	}
	return nil, fmt.Errorf("%T is not a decimal", v)
}

func toTime(v any, date bool) (any, error) {
	switch x := v.(type) {
	case time.Time:
		return x, nil
	case string: // a mirror's jsonb, or JSON text
		layout := time.RFC3339Nano
		if date {
			if t, err := time.Parse(time.DateOnly, x); err == nil {
				return t, nil
			}
		}
		t, err := time.Parse(layout, x)
		if err != nil {
			return nil, fmt.Errorf("%q is not a time: %w", x, err)
		}
		return t, nil
	case pgtype.InfinityModifier:
		return nil, errors.New("infinity has no Avro form")
	}
	return nil, fmt.Errorf("%T is not a time", v)
}

func toDuration(v any) (any, error) {
	switch x := v.(type) {
	case pgtype.Time:
		return time.Duration(x.Microseconds) * time.Microsecond, nil
	case time.Duration:
		return x, nil
	}
	if n, ok := toInt64(v); ok {
		return time.Duration(n), nil
	}
	return nil, fmt.Errorf("%T is not a time of day", v)
}
