package consumer

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// KeyColumn is the mirror table's primary key: the Kafka key.
const KeyColumn = "_key"

// Mirror is the Projection of `ecst mirror`: a table whose columns come
// from the entity's Avro schema. Scalars map to PostgreSQL types (logical
// types included), records, arrays, maps and multi-type unions to jsonb.
// A new compatible schema version adds columns; it never drops one.
type Mirror struct {
	schema avro.Schema

	mu     sync.Mutex
	cols   map[string]string // column → SQL type, as the table has it
	loaded map[string]bool   // tables whose columns were read
}

// NewMirror builds the projection for a record schema.
func NewMirror(schema avro.Schema) (*Mirror, error) {
	if _, ok := schema.(*avro.RecordSchema); !ok {
		return nil, fmt.Errorf("mirror: the schema is %s, not a record", schema.Type())
	}
	return &Mirror{schema: schema, cols: map[string]string{}, loaded: map[string]bool{}}, nil
}

// CreateTable creates the table with a column per field of the schema.
// Like every table a Mirror is given, table is written as in SQL
// (pgident.Name's Quoted is safe): it goes into the statement as it is.
func (m *Mirror) CreateTable(table string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "CREATE TABLE IF NOT EXISTS %s (%s text PRIMARY KEY", table, pgx.Identifier{KeyColumn}.Sanitize())
	for _, f := range m.schema.(*avro.RecordSchema).Fields() {
		typ, _ := sqlType(f.Type())
		fmt.Fprintf(&b, ", %s %s", pgx.Identifier{f.Name()}.Sanitize(), typ)
	}
	b.WriteString(")")
	return b.String()
}

// Prepare reads the table's columns once and adds a column for every field
// of a new writer schema that the table lacks.
func (m *Mirror) Prepare(ctx context.Context, tx pgx.Tx, table string, changes []Change[map[string]any]) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.loaded[table] {
		if err := m.loadColumns(ctx, tx, table); err != nil {
			return err
		}
	}
	seen := map[avro.Schema]bool{}
	for _, c := range changes {
		if c.Schema == nil || seen[c.Schema] {
			continue
		}
		seen[c.Schema] = true
		rec, ok := c.Schema.(*avro.RecordSchema)
		if !ok {
			continue
		}
		for _, f := range rec.Fields() {
			typ, _ := sqlType(f.Type())
			have, ok := m.cols[f.Name()]
			if !ok {
				if _, err := tx.Exec(ctx, fmt.Sprintf("ALTER TABLE %s ADD COLUMN IF NOT EXISTS %s %s", table, pgx.Identifier{f.Name()}.Sanitize(), typ)); err != nil {
					return fmt.Errorf("add column %s: %w", f.Name(), err)
				}
				m.cols[f.Name()] = typ
				continue
			}
			if !sameSQLType(have, typ) {
				return fmt.Errorf("%w: field %s is now %s but column %s.%s is %s; a mirror only adds columns: rebuild it (ecst rebuild) after changing the column", errFatal, f.Name(), typ, table, f.Name(), have)
			}
		}
	}
	return nil
}

// loadColumns reads the table's columns. regclass reads the name as SQL
// does, as every statement here does.
func (m *Mirror) loadColumns(ctx context.Context, tx pgx.Tx, table string) error {
	rows, err := tx.Query(ctx, `SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
		WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped`, table)
	if err != nil {
		return fmt.Errorf("read the columns of %s: %w", table, err)
	}
	var name, typ string
	if _, err := pgx.ForEachRow(rows, []any{&name, &typ}, func() error { m.cols[name] = typ; return nil }); err != nil {
		return fmt.Errorf("read the columns of %s: %w", table, err)
	}
	m.loaded[table] = true
	return nil
}

// Upsert writes the fields the writer's schema has, leaving columns of
// fields it lacks as they are.
func (m *Mirror) Upsert(b *pgx.Batch, table, key string, state map[string]any, c *Change[map[string]any]) {
	var fields []*avro.Field
	if rec, ok := c.Schema.(*avro.RecordSchema); ok {
		fields = rec.Fields()
	} else {
		fields = m.schema.(*avro.RecordSchema).Fields()
	}
	cols := []string{pgx.Identifier{KeyColumn}.Sanitize()}
	params := []string{"$1"}
	args := []any{key}
	var sets []string
	for _, f := range fields {
		_, conv := sqlType(f.Type())
		name := pgx.Identifier{f.Name()}.Sanitize()
		cols = append(cols, name)
		args = append(args, conv(state[f.Name()]))
		params = append(params, fmt.Sprintf("$%d", len(args)))
		sets = append(sets, name+" = EXCLUDED."+name)
	}
	sql := fmt.Sprintf("INSERT INTO %s (%s) VALUES (%s) ON CONFLICT (%s) DO ",
		table, strings.Join(cols, ", "), strings.Join(params, ", "), pgx.Identifier{KeyColumn}.Sanitize())
	if len(sets) == 0 {
		sql += "NOTHING"
	} else {
		sql += "UPDATE SET " + strings.Join(sets, ", ")
	}
	b.Queue(sql, args...)
}

// CopyColumns lists the key column and the writer schema's fields.
func (m *Mirror) CopyColumns(c *Change[map[string]any]) []string {
	cols := []string{KeyColumn}
	for _, f := range m.fields(c) {
		cols = append(cols, f.Name())
	}
	return cols
}

// CopyValues converts a state for CopyColumns.
func (m *Mirror) CopyValues(key string, state map[string]any, c *Change[map[string]any]) []any {
	fields := m.fields(c)
	vals := make([]any, 0, len(fields)+1)
	vals = append(vals, key)
	for _, f := range fields {
		_, conv := sqlType(f.Type())
		vals = append(vals, conv(state[f.Name()]))
	}
	return vals
}

func (m *Mirror) fields(c *Change[map[string]any]) []*avro.Field {
	if rec, ok := c.Schema.(*avro.RecordSchema); ok {
		return rec.Fields()
	}
	return m.schema.(*avro.RecordSchema).Fields()
}

// Delete removes key's row.
func (m *Mirror) Delete(b *pgx.Batch, table, key string) {
	b.Queue(fmt.Sprintf("DELETE FROM %s WHERE %s = $1", table, pgx.Identifier{KeyColumn}.Sanitize()), key)
}

// sameSQLType compares a declared type with format_type's rendering.
func sameSQLType(have, want string) bool {
	norm := func(s string) string {
		s = strings.ToLower(s)
		switch s {
		case "timestamp with time zone":
			return "timestamptz"
		case "time without time zone":
			return "time"
		}
		return s
	}
	return norm(have) == norm(want)
}

// sqlType maps an Avro type to a column type and a value conversion.
func sqlType(s avro.Schema) (string, func(any) any) {
	if ref, ok := s.(*avro.RefSchema); ok {
		s = ref.Schema()
	}
	ident := func(v any) any { return v }
	if u, ok := s.(*avro.UnionSchema); ok {
		if nullable, other := nullableOf(u); nullable {
			return sqlType(other)
		}
		return "jsonb", toJSON
	}
	if p, ok := s.(*avro.PrimitiveSchema); ok && p.Logical() != nil {
		switch p.Logical().Type() {
		case avro.TimestampMillis, avro.TimestampMicros:
			return "timestamptz", ident
		case avro.LocalTimestampMillis, avro.LocalTimestampMicros:
			return "timestamp", ident
		case avro.Date:
			return "date", ident
		case avro.TimeMillis, avro.TimeMicros:
			return "time", func(v any) any {
				if d, ok := v.(time.Duration); ok {
					return pgtype.Time{Microseconds: d.Microseconds(), Valid: true}
				}
				return v
			}
		case avro.UUID:
			return "uuid", ident
		case avro.Decimal:
			if d, ok := p.Logical().(*avro.DecimalLogicalSchema); ok {
				return fmt.Sprintf("numeric(%d,%d)", d.Precision(), d.Scale()), decimalText(d.Scale())
			}
		}
	}
	if f, ok := s.(*avro.FixedSchema); ok {
		if d, ok := f.Logical().(*avro.DecimalLogicalSchema); ok && f.Logical() != nil {
			return fmt.Sprintf("numeric(%d,%d)", d.Precision(), d.Scale()), decimalText(d.Scale())
		}
		return "bytea", fixedBytes
	}
	switch s.Type() {
	case avro.String, avro.Enum:
		return "text", ident
	case avro.Int:
		return "integer", ident
	case avro.Long:
		return "bigint", ident
	case avro.Float:
		return "real", ident
	case avro.Double:
		return "double precision", ident
	case avro.Boolean:
		return "boolean", ident
	case avro.Bytes:
		return "bytea", ident
	}
	return "jsonb", toJSON // records, arrays, maps
}

func nullableOf(u *avro.UnionSchema) (bool, avro.Schema) {
	ts := u.Types()
	if len(ts) != 2 {
		return false, nil
	}
	if ts[0].Type() == avro.Null {
		return true, ts[1]
	}
	if ts[1].Type() == avro.Null {
		return true, ts[0]
	}
	return false, nil
}

func toJSON(v any) any {
	if v == nil {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(fmt.Sprint(v))
	}
	return string(b)
}

func decimalText(scale int) func(any) any {
	return func(v any) any {
		if r, ok := v.(*big.Rat); ok && r != nil {
			return r.FloatString(scale)
		}
		return v
	}
}

// fixedBytes turns hamba's [N]byte arrays into a slice.
func fixedBytes(v any) any {
	if v == nil {
		return nil
	}
	if b, ok := v.([]byte); ok {
		return b
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Array && rv.Type().Elem().Kind() == reflect.Uint8 {
		out := make([]byte, rv.Len())
		reflect.Copy(reflect.ValueOf(out), rv)
		return out
	}
	return v
}
