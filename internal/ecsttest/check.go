package ecsttest

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/consumer"
	"github.com/ecst-io/ecst/internal/pgident"
	"github.com/ecst-io/ecst/internal/topicscan"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/schemas"
)

// What the world holds, read back: the outbox, the topic, a mirror.

// OutboxRow is an outbox row with its headers decoded.
type OutboxRow struct {
	ID      int64
	Topic   string
	Key     string
	Value   []byte // nil: a tombstone
	Headers map[string]string
	// Raw holds the headers as written, in their order.
	Raw []outbox.Header
}

// Outbox returns the rows waiting in the outbox (not yet published: past
// the relay's cursor), in id order.
func (w *World) Outbox() []OutboxRow {
	w.T.Helper()
	rows, err := w.Pool.Query(context.Background(), "SELECT id, topic, key, value, headers FROM ("+outbox.PendingSQL+") p ORDER BY id")
	if err != nil {
		w.T.Fatal(err)
	}
	var out []OutboxRow
	var r OutboxRow
	var hb []byte
	_, err = pgx.ForEachRow(rows, []any{&r.ID, &r.Topic, &r.Key, &r.Value, &hb}, func() error {
		hs, err := outbox.DecodeHeaders(hb)
		if err != nil {
			return fmt.Errorf("outbox row %d: %w", r.ID, err)
		}
		row := r
		row.Raw = hs
		row.Headers = make(map[string]string, len(hs))
		for _, h := range hs {
			row.Headers[h.Key] = string(h.Value)
		}
		out = append(out, row)
		return nil
	})
	if err != nil {
		w.T.Fatal(err)
	}
	return out
}

// OutboxLen counts the rows waiting in the outbox: not yet published.
func (w *World) OutboxLen() int {
	w.T.Helper()
	n, err := outbox.PendingCount(context.Background(), w.Pool, 0)
	if err != nil {
		w.T.Fatal(err)
	}
	return int(n)
}

// Latest reads the topic to its end: the latest record per key.
func (w *World) Latest() map[string]*kgo.Record {
	w.T.Helper()
	out := map[string]*kgo.Record{}
	if _, err := topicscan.Scan(context.Background(), w.Kafka(), w.Topic, nil, func(r *kgo.Record) error {
		out[string(r.Key)] = r
		return nil
	}); err != nil {
		w.T.Fatal(err)
	}
	return out
}

// Decode decodes a record's value (nil for a tombstone).
func (w *World) Decode(r *kgo.Record) (map[string]any, error) {
	if r.Value == nil {
		return nil, nil
	}
	id, payload, err := schemas.DecodeWire(r.Value)
	if err != nil {
		return nil, err
	}
	if id != w.SchemaID {
		return nil, fmt.Errorf("schema id %d, want %d", id, w.SchemaID)
	}
	var m map[string]any
	if err := avro.Unmarshal(w.Schema, payload, &m); err != nil {
		return nil, err
	}
	return m, nil
}

// TopicMatchesSource returns what differs between the topic's latest
// records and the source, one line per key (empty: they agree).
func (w *World) TopicMatchesSource() []string {
	w.T.Helper()
	src := w.Source()
	latest := w.Latest()
	var diffs []string
	for k, s := range src {
		r, ok := latest[k]
		if !ok {
			diffs = append(diffs, k+": not on the topic")
			continue
		}
		got, err := w.Decode(r)
		if err != nil {
			diffs = append(diffs, fmt.Sprintf("%s: %v", k, err))
			continue
		}
		if got == nil {
			diffs = append(diffs, k+": tombstone on the topic, row in the source")
			continue
		}
		if d := DiffState(s, got); d != "" {
			diffs = append(diffs, k+": "+d)
		}
	}
	for k, r := range latest {
		if _, ok := src[k]; !ok && r.Value != nil {
			diffs = append(diffs, k+": alive on the topic, not in the source")
		}
	}
	return diffs
}

// DiffState compares two customer states field by field.
func DiffState(want, got map[string]any) string {
	var d []string
	for _, f := range []string{"id", "version", "name", "email", "tier", "updated_at"} {
		a, b := fmt.Sprint(want[f]), fmt.Sprint(got[f])
		if t, ok := want[f].(time.Time); ok {
			a = t.UTC().Format(time.RFC3339Nano)
		}
		if t, ok := got[f].(time.Time); ok {
			b = t.UTC().Format(time.RFC3339Nano)
		}
		if a != b {
			d = append(d, fmt.Sprintf("%s %s≠%s", f, a, b))
		}
	}
	return strings.Join(d, ", ")
}

// MirrorCatchUp catches the mirror table up with the topic, as `ecst
// mirror --table table --once --poison skip` does, creating the table if
// needed.
func (w *World) MirrorCatchUp(table string) error {
	ctx := context.Background()
	name, err := pgident.Parse(table)
	if err != nil {
		return err
	}
	m, err := consumer.NewMirror(w.Schema)
	if err != nil {
		return err
	}
	if _, err := w.Pool.Exec(ctx, m.CreateTable(name.Quoted())); err != nil {
		return err
	}
	c, err := consumer.New(consumer.Config[map[string]any]{
		Name: "mirror:" + name.String(), Topic: w.Topic, KafkaOpts: w.Kafka(), Registry: w.Registry,
		Store:  &consumer.Postgres[map[string]any]{Pool: w.Pool, Table: name.Quoted(), Projection: m},
		Poison: consumer.Skip,
	})
	if err != nil {
		return err
	}
	return c.CatchUp(ctx)
}

// MirrorMatchesSource returns the keys whose mirror row differs from the
// source row (or exists on one side only). The table is named as `ecst
// mirror --table` takes it.
func (w *World) MirrorMatchesSource(table string) []string {
	w.T.Helper()
	name, err := pgident.Parse(table)
	if err != nil {
		w.T.Fatal(err)
	}
	rows, err := w.Pool.Query(context.Background(), `SELECT coalesce(c.id, m._key) FROM customers c FULL JOIN `+name.Quoted()+` m ON m._key = c.id
		WHERE c.id IS NULL OR m._key IS NULL OR (c.version, c.name, c.email, c.tier, c.updated_at) IS DISTINCT FROM (m.version, m.name, m.email, m.tier, m.updated_at)
		ORDER BY 1`)
	if err != nil {
		w.T.Fatal(err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		w.T.Fatal(err)
	}
	return keys
}
