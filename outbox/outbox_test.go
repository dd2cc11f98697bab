package outbox_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/ecst-io/ecst/internal/pgtest"
	"github.com/ecst-io/ecst/outbox"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestInsertRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t)
	hs := []outbox.Header{{Key: "a", Value: []byte("1")}, {Key: "empty", Value: nil}, {Key: "bin", Value: []byte{0, 255, 10}}}
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := outbox.Insert(ctx, tx, outbox.Row{Topic: "t", Key: "k1", Value: []byte("v"), Headers: hs}); err != nil {
			return err
		}
		return outbox.Insert(ctx, tx, outbox.Row{Topic: "t", Key: "k2", Value: nil, Headers: hs})
	})
	if err != nil {
		t.Fatal(err)
	}
	rows, _ := pool.Query(ctx, "SELECT key, value, headers FROM ecst.outbox ORDER BY id")
	type row struct {
		Key     string
		Value   []byte
		Headers []byte
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Key != "k1" || string(got[0].Value) != "v" || got[1].Value != nil {
		t.Fatalf("rows = %+v", got)
	}
	dec, err := outbox.DecodeHeaders(got[0].Headers)
	if err != nil {
		t.Fatal(err)
	}
	if len(dec) != len(hs) {
		t.Fatalf("decoded %d headers, want %d", len(dec), len(hs))
	}
	for i := range hs {
		if dec[i].Key != hs[i].Key || !bytes.Equal(dec[i].Value, hs[i].Value) {
			t.Errorf("header %d = %+v, want %+v", i, dec[i], hs[i])
		}
	}
}

func TestDecodeHeadersRejectsGarbage(t *testing.T) {
	t.Parallel()
	for _, b := range [][]byte{nil, {}, {2}, {1, 5, 'a'}, {1, 1, 'a', 9}, {1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}} {
		if _, err := outbox.DecodeHeaders(b); err == nil {
			t.Errorf("DecodeHeaders(%v) succeeded", b)
		}
	}
}

func FuzzDecodeHeaders(f *testing.F) {
	f.Add(outbox.EncodeHeaders([]outbox.Header{{Key: "k", Value: []byte("v")}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		hs, err := outbox.DecodeHeaders(b)
		if err != nil {
			return
		}
		again, err := outbox.DecodeHeaders(outbox.EncodeHeaders(hs))
		if err != nil || len(again) != len(hs) {
			t.Fatalf("re-encoding %v: %v, %d headers, want %d", b, err, len(again), len(hs))
		}
		for i := range hs {
			if again[i].Key != hs[i].Key || !bytes.Equal(again[i].Value, hs[i].Value) {
				t.Fatalf("header %d changed on re-encoding: %+v, want %+v", i, again[i], hs[i])
			}
		}
	})
}
