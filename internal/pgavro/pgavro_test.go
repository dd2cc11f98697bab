package pgavro_test

import (
	"context"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/jackc/pgx/v5"

	"github.com/ecst-io/ecst/internal/pgavro"
	"github.com/ecst-io/ecst/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const schema = `{"type":"record","name":"R","fields":[
 {"name":"id","type":"string"},
 {"name":"n","type":"int"},
 {"name":"big","type":["null","long"],"default":null},
 {"name":"ok","type":"boolean"},
 {"name":"score","type":"double"},
 {"name":"at","type":{"type":"long","logicalType":"timestamp-micros"}},
 {"name":"day","type":["null",{"type":"int","logicalType":"date"}]},
 {"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}},
 {"name":"ref","type":{"type":"string","logicalType":"uuid"}},
 {"name":"tags","type":{"type":"array","items":"string"}},
 {"name":"addr","type":["null",{"type":"record","name":"Addr","fields":[{"name":"city","type":"string"},{"name":"zip","type":"int"}]}]},
 {"name":"kind","type":{"type":"enum","name":"Kind","symbols":["A","B"]}},
 {"name":"note","type":"string","default":"none"}
]}`

func plan(t *testing.T, conn *pgx.Conn, q string, opts pgavro.Options) (*pgavro.Mapper, error) {
	t.Helper()
	desc, err := conn.Prepare(context.Background(), "", q)
	if err != nil {
		t.Fatal(err)
	}
	cols := make([]pgavro.Column, len(desc.Fields))
	for i, f := range desc.Fields {
		cols[i] = pgavro.Column{Name: f.Name, OID: f.DataTypeOID}
	}
	return pgavro.New(avro.MustParse(schema), cols, opts)
}

func TestMapEveryType(t *testing.T) {
	ctx := context.Background()
	conn := pgtest.NewConn(t)
	q := `SELECT 42::bigint AS id, 7::int AS n, NULL::bigint AS big, true AS ok, 1.5::float8 AS score,
		'2026-01-02 03:04:05.123456+00'::timestamptz AS at, '2026-01-02'::date AS day, 12.34::numeric(10,2) AS amount,
		'6f1c7e7a-1b2c-4d3e-8f90-123456789abc'::uuid AS ref, ARRAY['x','y'] AS tags,
		'{"city":"Oslo","zip":150}'::jsonb AS addr, 'B' AS kind, 3::int AS version`
	m, err := plan(t, conn, q, pgavro.Options{Key: "id", Version: "version"})
	if err != nil {
		t.Fatal(err)
	}
	var vals []any
	rows, _ := conn.Query(ctx, q)
	for rows.Next() {
		vals, _ = rows.Values()
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	key, version, state, err := m.Map(vals)
	if err != nil {
		t.Fatal(err)
	}
	if key != "42" || version != 3 {
		t.Fatalf("key %q version %d", key, version)
	}
	b, err := avro.Marshal(m.Schema(), state)
	if err != nil {
		t.Fatalf("encode %v: %v", state, err)
	}
	var got map[string]any
	if err := avro.Unmarshal(m.Schema(), b, &got); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)
	if got["n"] != 7 || got["big"] != nil || got["ok"] != true || got["score"] != 1.5 || !got["at"].(time.Time).Equal(at) ||
		got["amount"].(*big.Rat).Cmp(big.NewRat(1234, 100)) != 0 || got["ref"] != "6f1c7e7a-1b2c-4d3e-8f90-123456789abc" ||
		got["kind"] != "B" || got["note"] != "none" || got["addr"].(map[string]any)["Addr"].(map[string]any)["city"] != "Oslo" {
		t.Fatalf("round trip: %#v", got)
	}
}

func TestPlanNamesWhatDoesNotMap(t *testing.T) {
	conn := pgtest.NewConn(t)
	_, err := plan(t, conn, `SELECT 'k' AS id, 'seven' AS n, 1 AS extra`, pgavro.Options{Key: "id"})
	if !errors.Is(err, pgavro.ErrUnmappable) {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{`column "n" (text) cannot feed field "n" (int)`, `column "extra" has no field`, `field "ok" has no column`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if _, err := plan(t, conn, `SELECT 1.5::float8 AS id`, pgavro.Options{Key: "id", IgnoreExtra: true}); err == nil || !strings.Contains(err.Error(), "not supported as a key") {
		t.Fatalf("float key: %v", err)
	}
}

func TestCoerceRefusesBadValues(t *testing.T) {
	s := avro.MustParse(`{"type":"enum","name":"K","symbols":["A"]}`)
	if _, err := pgavro.Coerce(s, "Z"); err == nil {
		t.Fatal("enum symbol Z accepted")
	}
	if _, err := pgavro.Coerce(avro.MustParse(`"int"`), int64(1)<<40); err == nil {
		t.Fatal("int overflow accepted")
	}
	if _, err := pgavro.Coerce(avro.MustParse(`"string"`), nil); err == nil {
		t.Fatal("NULL into a non-nullable field accepted")
	}
}
