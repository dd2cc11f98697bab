package pgavro_test

import (
	"encoding/json"
	"fmt"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/ecst-io/ecst/internal/pgavro"
)

// TestCoerceEachType pins what Coerce makes of each kind of value, for each
// Avro type: the value hamba encodes, or the error that names the misfit.
func TestCoerceEachType(t *testing.T) {
	uuidBytes := [16]byte{0x6f, 0x1c, 0x7e, 0x7a, 0x1b, 0x2c, 0x4d, 0x3e, 0x8f, 0x90, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc}
	at := time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)
	day := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	numeric := pgtype.Numeric{Int: big.NewInt(1234), Exp: -2, Valid: true}
	for _, c := range []struct {
		schema string
		in     any
		want   any    // when err is ""
		err    string // a part of the error
	}{
		{`"null"`, nil, nil, ""},
		{`"null"`, 1, nil, "int for a null field"},
		{`"boolean"`, true, true, ""},
		{`"boolean"`, "true", nil, "string does not fit boolean"},
		{`"boolean"`, nil, nil, "NULL, and the field is not nullable (make it a union"},
		{`"int"`, int16(7), 7, ""},
		{`"int"`, int32(-7), -7, ""},
		{`"int"`, float64(3), 3, ""},
		{`"int"`, json.Number("12"), 12, ""},
		{`"int"`, float64(3.5), nil, "float64 does not fit int"},
		{`"int"`, int64(1) << 40, nil, "int64 does not fit int"},
		{`{"type":"int","logicalType":"date"}`, day, day, ""},
		{`{"type":"int","logicalType":"date"}`, "2026-01-02", day, ""},
		{`{"type":"int","logicalType":"date"}`, pgtype.Infinity, nil, "infinity has no Avro form"},
		{`{"type":"int","logicalType":"date"}`, 5, nil, "int is not a time"},
		{`{"type":"int","logicalType":"time-millis"}`, pgtype.Time{Microseconds: 1500, Valid: true}, 1500 * time.Microsecond, ""},
		{`{"type":"int","logicalType":"time-millis"}`, "noon", nil, "string is not a time of day"},
		{`"long"`, int64(1) << 40, int64(1) << 40, ""},
		{`"long"`, 9, int64(9), ""},
		{`"long"`, "9", nil, "string does not fit long"},
		{`{"type":"long","logicalType":"timestamp-micros"}`, at, at, ""},
		{`{"type":"long","logicalType":"timestamp-millis"}`, "2026-01-02T03:04:05.123456Z", at, ""},
		{`{"type":"long","logicalType":"local-timestamp-micros"}`, "yesterday", nil, `"yesterday" is not a time`},
		{`{"type":"long","logicalType":"time-micros"}`, time.Second, time.Second, ""},
		{`{"type":"long","logicalType":"time-micros"}`, int64(2000), 2 * time.Microsecond, ""},
		{`"float"`, 1.5, float32(1.5), ""},
		{`"float"`, int32(2), float32(2), ""},
		{`"float"`, "1.5", nil, "string does not fit float"},
		{`"double"`, float32(0.5), 0.5, ""},
		{`"double"`, numeric, 12.34, ""},
		{`"double"`, true, nil, "bool does not fit double"},
		{`"string"`, "s", "s", ""},
		{`"string"`, uuidBytes, "6f1c7e7a-1b2c-4d3e-8f90-123456789abc", ""},
		{`"string"`, int64(42), "42", ""},
		{`"string"`, numeric, "12.34", ""},
		{`"string"`, map[string]any{"a": 1.0}, `{"a":1}`, ""},
		{`"string"`, []any{"a"}, `["a"]`, ""},
		{`"string"`, 1.5, nil, "float64 does not fit string"},
		{`{"type":"enum","name":"K","symbols":["A","B"]}`, "B", "B", ""},
		{`{"type":"enum","name":"K","symbols":["A","B"]}`, "Z", nil, `"Z" is not a symbol of enum K`},
		{`{"type":"enum","name":"K","symbols":["A","B"]}`, 1, nil, "int does not fit enum K"},
		{`"bytes"`, []byte("ab"), []byte("ab"), ""},
		{`"bytes"`, "ab", nil, "string does not fit bytes"},
		{`{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}`, numeric, big.NewRat(1234, 100), ""},
		{`{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}`, "12.34", big.NewRat(1234, 100), ""},
		{`{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}`, int32(3), big.NewRat(3, 1), ""},
		{`{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}`, "x", nil, `"x" is not a decimal`},
		{`{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}`, pgtype.Numeric{NaN: true, Valid: true}, nil, "NaN or infinity"},
		{`{"type":"fixed","name":"U","size":16}`, uuidBytes, uuidBytes, ""},
		{`{"type":"fixed","name":"F","size":8}`, []byte("12345678"), [8]byte([]byte("12345678")), ""},
		{`{"type":"fixed","name":"F","size":3}`, []byte("abc"), []byte("abc"), ""},
		{`{"type":"fixed","name":"F","size":8}`, []byte("123"), nil, "3 bytes for fixed F of size 8"},
		{`{"type":"fixed","name":"F","size":8}`, []byte(nil), nil, "[]uint8 does not fit fixed F"},
		{`{"type":"fixed","name":"F","size":8}`, "12345678", nil, "string does not fit fixed F"},
		{`{"type":"array","items":"int"}`, []any{int32(1), float64(2)}, []any{1, 2}, ""},
		{`{"type":"array","items":"int"}`, `[1,2]`, []any{1, 2}, ""},
		{`{"type":"array","items":"int"}`, `[1,`, nil, "not JSON"},
		{`{"type":"array","items":"int"}`, []any{1, "x"}, nil, "item 1: string does not fit int"},
		{`{"type":"array","items":"int"}`, 1, nil, "int does not fit array"},
		{`{"type":"map","values":"long"}`, map[string]any{"a": float64(1)}, map[string]any{"a": int64(1)}, ""},
		{`{"type":"map","values":"long"}`, `{"a":2}`, map[string]any{"a": int64(2)}, ""},
		{`{"type":"map","values":"long"}`, map[string]any{"a": "x"}, nil, `value "a": string does not fit long`},
		{`{"type":"map","values":"long"}`, []any{}, nil, "[]interface {} does not fit map"},
		{`{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":"string","default":"d"},{"name":"c","type":["null","int"]}]}`,
			map[string]any{"a": float64(1)}, map[string]any{"a": 1, "c": nil}, ""},
		{`{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}`, map[string]any{}, nil, "field a: NULL, and the field is not nullable"},
		{`{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}`, 3, nil, "int does not fit record R"},
		{`["null","string"]`, nil, nil, ""},
		{`["null","string"]`, "s", "s", ""},
		{`["null","string"]`, 1.5, nil, "float64 does not fit string"},
		{`["null",{"type":"enum","name":"E","symbols":["A"]}]`, "A", map[string]any{"E": "A"}, ""},
		{`["int","string"]`, nil, nil, "NULL, and the field is not nullable"},
		{`["int","string"]`, "s", map[string]any{"string": "s"}, ""},
		{`["null","int",{"type":"long","logicalType":"timestamp-micros"}]`, at, map[string]any{"long.timestamp-micros": at}, ""},
		{`["int","string"]`, true, nil, "bool fits no branch of the union"},
	} {
		name := fmt.Sprintf("%s<-%T(%v)", c.schema, c.in, c.in)
		got, err := pgavro.Coerce(avro.MustParse(c.schema), c.in)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: err = %v, want %q", name, err, c.err)
		case c.err == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case c.err == "" && !same(got, c.want):
			t.Errorf("%s = %#v, want %#v", name, got, c.want)
		}
	}
}

func same(got, want any) bool {
	if w, ok := want.(*big.Rat); ok {
		g, ok := got.(*big.Rat)
		return ok && g.Cmp(w) == 0
	}
	return reflect.DeepEqual(got, want)
}

// TestPlanEachType pins which column types feed which field types.
func TestPlanEachType(t *testing.T) {
	const userType = 20000
	for _, c := range []struct {
		field string
		feeds []uint32 // every other OID of the list below is refused
	}{
		{`"boolean"`, []uint32{pgtype.BoolOID}},
		{`"int"`, []uint32{pgtype.Int2OID, pgtype.Int4OID}},
		{`{"type":"int","logicalType":"date"}`, []uint32{pgtype.DateOID}},
		{`{"type":"int","logicalType":"time-millis"}`, []uint32{pgtype.TimeOID}},
		{`"long"`, []uint32{pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID}},
		{`{"type":"long","logicalType":"timestamp-micros"}`, []uint32{pgtype.TimestamptzOID, pgtype.TimestampOID}},
		{`{"type":"long","logicalType":"local-timestamp-millis"}`, []uint32{pgtype.TimestamptzOID, pgtype.TimestampOID}},
		{`{"type":"long","logicalType":"time-micros"}`, []uint32{pgtype.TimeOID}},
		{`"float"`, []uint32{pgtype.Float4OID}},
		{`"double"`, []uint32{pgtype.Float4OID, pgtype.Float8OID, pgtype.NumericOID, pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID}},
		{`"string"`, []uint32{pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID, pgtype.UUIDOID, pgtype.NumericOID, pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, userType}},
		{`["null","string"]`, []uint32{pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID, pgtype.UUIDOID, pgtype.NumericOID, pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, userType}},
		{`{"type":"enum","name":"E","symbols":["A"]}`, []uint32{pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID, userType}},
		{`"bytes"`, []uint32{pgtype.ByteaOID}},
		{`{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}`, []uint32{pgtype.NumericOID, pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID}},
		{`{"type":"fixed","name":"U","size":16}`, []uint32{pgtype.UUIDOID, pgtype.ByteaOID}},
		{`{"type":"fixed","name":"F","size":8}`, []uint32{pgtype.ByteaOID}},
		{`{"type":"array","items":"string"}`, []uint32{pgtype.TextArrayOID, pgtype.VarcharArrayOID, pgtype.UUIDArrayOID, pgtype.NumericArrayOID, pgtype.Int2ArrayOID, pgtype.Int4ArrayOID, pgtype.Int8ArrayOID}},
		{`{"type":"array","items":{"type":"long","logicalType":"timestamp-micros"}}`, []uint32{pgtype.TimestamptzArrayOID, pgtype.TimestampArrayOID}},
		{`{"type":"map","values":"int"}`, nil},
		{`{"type":"record","name":"R","fields":[]}`, nil},
		{`["int","string"]`, []uint32{pgtype.BoolOID, pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.Float4OID, pgtype.Float8OID, pgtype.NumericOID, pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID, pgtype.UUIDOID, pgtype.ByteaOID, pgtype.DateOID, pgtype.TimeOID, pgtype.TimestampOID, pgtype.TimestamptzOID, pgtype.TextArrayOID, pgtype.VarcharArrayOID, pgtype.UUIDArrayOID, pgtype.NumericArrayOID, pgtype.Int2ArrayOID, pgtype.Int4ArrayOID, pgtype.Int8ArrayOID, pgtype.TimestamptzArrayOID, pgtype.TimestampArrayOID}},
	} {
		s := avro.MustParse(`{"type":"record","name":"T","fields":[{"name":"k","type":"string"},{"name":"f","type":` + c.field + `}]}`)
		// json and jsonb feed anything; the rest is as listed.
		for _, oid := range []uint32{pgtype.BoolOID, pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.Float4OID, pgtype.Float8OID, pgtype.NumericOID,
			pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID, pgtype.UUIDOID, pgtype.ByteaOID, pgtype.DateOID, pgtype.TimeOID,
			pgtype.TimestampOID, pgtype.TimestamptzOID, pgtype.TextArrayOID, pgtype.VarcharArrayOID, pgtype.UUIDArrayOID, pgtype.NumericArrayOID,
			pgtype.Int2ArrayOID, pgtype.Int4ArrayOID, pgtype.Int8ArrayOID, pgtype.TimestamptzArrayOID, pgtype.TimestampArrayOID,
			pgtype.JSONOID, pgtype.JSONBOID, userType} {
			want := oid == pgtype.JSONOID || oid == pgtype.JSONBOID
			for _, f := range c.feeds {
				want = want || f == oid
			}
			_, err := pgavro.New(s, []pgavro.Column{{Name: "k", OID: pgtype.TextOID}, {Name: "f", OID: oid}}, pgavro.Options{Key: "k"})
			if got := err == nil; got != want {
				t.Errorf("field %s, column oid %d: feeds %v, want %v (%v)", c.field, oid, got, want, err)
			}
		}
	}
}
