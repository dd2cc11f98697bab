package consumer_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/ecst-io/ecst/consumer"
	"github.com/ecst-io/ecst/examples/customers"
	"github.com/ecst-io/ecst/internal/testkit"
	"github.com/ecst-io/ecst/schemas"
)

// poisons are the three kinds of record a consumer cannot apply.
func (w *world) poisons(t *testing.T) map[string]*kgo.Record {
	t.Helper()
	// A schema the reader's cannot resolve: name is an int.
	other := `{"type":"record","name":"Customer","namespace":"ecst.examples.customers","fields":[{"name":"id","type":"string"},{"name":"name","type":"int"}]}`
	id, _, err := w.reg.RegisterSchema("other-value", sr.Schema{Schema: other})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := schemas.Parse(other)
	b, err := avro.Marshal(s, map[string]any{"id": "p3", "name": 7})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]*kgo.Record{
		"unknown schema id": {Key: []byte("p1"), Value: append(schemas.AppendWire(nil, 99999), 1, 2, 3)},
		"corrupt bytes":     {Key: []byte("p2"), Value: []byte("{\"not\": \"avro\"}")},
		"schema mismatch":   {Key: []byte("p3"), Value: append(schemas.AppendWire(nil, id), b...)},
		"truncated payload": {Key: []byte("p4"), Value: append(schemas.AppendWire(nil, w.schemaID), 2)},
	}
}

func withReader(policy consumer.PoisonPolicy, reg prometheus.Registerer) func(*consumer.Config[map[string]any]) {
	return func(cfg *consumer.Config[map[string]any]) {
		cfg.ReaderSchema = customers.Schema
		cfg.Poison = policy
		cfg.Registerer = reg
	}
}

func TestPoisonHalt(t *testing.T) {
	t.Parallel()
	for _, sk := range stores {
		for _, name := range []string{"unknown schema id", "corrupt bytes", "schema mismatch", "truncated payload"} {
			t.Run(sk.name+"/"+name, func(t *testing.T) {
				t.Parallel()
				w := newWorld(t)
				rec := w.poisons(t)[name]
				w.write(w.upsert("before", 1))
				w.write(rec)
				m := sk.make(t, w)
				c := w.consumer(t, m, "halt", withReader(consumer.Halt, nil))
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				err := c.Run(ctx)
				var pe *consumer.PoisonError
				if !errors.As(err, &pe) || !errors.Is(err, consumer.ErrPoison) {
					t.Fatalf("Run = %v, want a poison error", err)
				}
				if pe.Topic != w.topic || pe.Key != string(rec.Key) || pe.Offset < 0 || !strings.Contains(err.Error(), "offset") {
					t.Fatalf("poison error does not say where: %+v", pe)
				}
				if c.Ready() {
					t.Fatal("a halted consumer reports ready")
				}
			})
		}
	}
}

func TestPoisonSkipAndDeadLetter(t *testing.T) {
	t.Parallel()
	for _, sk := range stores {
		for _, policy := range []consumer.PoisonPolicy{consumer.Skip, consumer.DeadLetter} {
			t.Run(sk.name+"/"+string(policy), func(t *testing.T) {
				t.Parallel()
				w := newWorld(t)
				poisons := w.poisons(t)
				w.write(w.upsert("before", 1))
				for _, r := range poisons {
					w.write(r)
				}
				w.write(w.upsert("after", 2))
				m := sk.make(t, w)
				reg := prometheus.NewRegistry()
				c := w.consumer(t, m, "poison-"+string(policy), withReader(policy, reg))
				start(t, c)
				waitReady(t, c)
				w.assertModel(t, m) // before and after applied, every poison passed over
				if got := testkit.Metric(t, reg, "ecst_consumer_poison_total"); got != float64(len(poisons)) {
					t.Fatalf("poison counter = %v, want %d", got, len(poisons))
				}
				switch {
				case policy == consumer.Skip && m.durable:
					var n int
					var value []byte
					var reason string
					if err := m.pool.QueryRow(context.Background(), `SELECT value, error FROM ecst.consumer_skipped
						WHERE consumer = 'poison-skip' AND key = 'p2'`).Scan(&value, &reason); err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(value, poisons["corrupt bytes"].Value) || !strings.Contains(reason, "wire format") {
						t.Fatalf("consumer_skipped keeps value %q, error %q", value, reason)
					}
					if err := m.pool.QueryRow(context.Background(), "SELECT count(*) FROM ecst.consumer_skipped").Scan(&n); err != nil || n != len(poisons) {
						t.Fatalf("consumer_skipped has %d rows, want %d (%v)", n, len(poisons), err)
					}
				case policy == consumer.DeadLetter:
					dlq := w.readAll(t, w.topic+".dlq", len(poisons))
					for _, r := range dlq {
						orig := poisons[findPoison(poisons, r.Key)]
						if orig == nil || !bytes.Equal(r.Value, orig.Value) {
							t.Fatalf("dead letter %q does not carry the original value", r.Key)
						}
						h := map[string]string{}
						for _, x := range r.Headers {
							h[x.Key] = string(x.Value)
						}
						if h[consumer.HeaderDLQTopic] != w.topic || h[consumer.HeaderDLQError] == "" || h[consumer.HeaderDLQOffset] == "" || h[consumer.HeaderDLQConsumer] != "poison-dead-letter" {
							t.Fatalf("dead letter headers = %v", h)
						}
					}
				}
			})
		}
	}
}

func findPoison(p map[string]*kgo.Record, key []byte) string {
	for name, r := range p {
		if bytes.Equal(r.Key, key) {
			return name
		}
	}
	return ""
}

// readAll reads n records of a topic from the start.
func (w *world) readAll(t *testing.T, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(append(w.opts(), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("read %s: %v (have %d of %d)", topic, err, len(out), n)
		}
		out = append(out, fs.Records()...)
	}
	return out
}
