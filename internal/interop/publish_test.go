package interop_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ecst-io/ecst/capture"
	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/producer"
)

// TestPythonPublishes: a Python service (psycopg 3, no ecst code) writes
// its table and calls SELECT ecst.publish('customer', %s) in the same
// transaction; with the relay running, the topic's last record of every key
// equals the source, a deleted key's is a tombstone, and a rolled-back
// publish is not published.
func TestPythonPublishes(t *testing.T) {
	t.Parallel()
	python := pythonVenv(t)
	w := ecsttest.New(t, ecsttest.Options{})
	res, err := capture.NewResolver(capture.ResolverConfig{Pool: w.Pool, Config: w.Config, Publisher: w.Pub, Kafka: w.Kafka()})
	if err != nil {
		t.Fatal(err)
	}
	cfg := w.RelayConfig()
	cfg.Resolver = res
	w.RunRelay(cfg)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, python, filepath.Join("testdata", "publish.py"), w.DBURL).CombinedOutput()
	if err != nil {
		t.Fatalf("publish.py: %v\n%s", err, out)
	}
	var diffs []string
	pending := -1
	if err := wait.Until(ctx, time.Minute, 100*time.Millisecond, "the topic to equal the source", func() (bool, error) {
		if pending = w.OutboxLen(); pending > 0 {
			return false, nil
		}
		diffs = w.TopicMatchesSource()
		return len(diffs) == 0, nil
	}); err != nil {
		rows, _ := w.Pool.Query(ctx, `SELECT id, txid::text, topic, key, CASE WHEN topic = '_ecst.capture' THEN convert_from(value, 'UTF8') ELSE encode(substr(headers, 1, 200), 'escape') END FROM ecst.outbox ORDER BY id`)
		for rows.Next() {
			var id int64
			var x, tp, k, v string
			_ = rows.Scan(&id, &x, &tp, &k, &v)
			t.Logf("outbox %d tx %s %s %s %.120q", id, x, tp, k, v)
		}
		rows.Close()
		t.Fatalf("%v: %d outbox rows pending; %d keys differ: %v", err, pending, len(diffs), diffs)
	}
	latest := w.Latest()
	if r := latest["py00"]; r == nil || r.Value != nil {
		t.Fatalf("py00, deleted, has last record %v; want a tombstone", r)
	}
	if r := latest["py01"]; r == nil || strings.Contains(string(r.Value), "never") {
		t.Fatalf("py01's last record shows the rolled-back change: %v", r)
	}
	for _, h := range latest["py15"].Headers {
		if h.Key == producer.HeaderEntityVersion && string(h.Value) != "2" {
			t.Fatalf("py15 is published at version %s; want 2", h.Value)
		}
	}
}
