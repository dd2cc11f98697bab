package verify_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/verify"
)

// TestVerifyRecordsEachRun: a run in sync, one that finds drift and one
// that fails are each a row of ecst.verify_runs with their verdict, counts,
// samples and diffs, read back by LastRuns and Runs; the metrics say what
// the last run that finished found.
func TestVerifyRecordsEachRun(t *testing.T) {
	w := ecsttest.New(t, ecsttest.Options{})
	ctx := context.Background()
	w.Seed(ctx, ecsttest.Keys(10))
	w.Drain()
	reg := prometheus.NewRegistry()
	m := verify.NewMetrics(reg)
	vc := cfg(w)
	vc.Metrics = m

	before := time.Now()
	rep, err := verify.Run(ctx, vc, verify.Options{})
	if err != nil || !rep.InSync() || rep.VerifyRun == 0 {
		t.Fatalf("in sync: %v, %+v", err, rep)
	}
	inSyncID := rep.VerifyRun
	if got := value(m.DriftKeys("customer", verify.KindStale)); got != 0 {
		t.Fatalf("drift keys after a run in sync: %v", got)
	}
	last := value(m.LastSuccess("customer"))
	if last < float64(before.Unix()) {
		t.Fatalf("last success %v, before the run started (%d)", last, before.Unix())
	}

	w.Exec(`UPDATE customers SET name = 'renamed' WHERE id = 'c00002'`)
	w.Exec(`DELETE FROM customers WHERE id = 'c00004'`)
	rep, err = verify.Run(ctx, vc, verify.Options{})
	if err != nil || rep.InSync() {
		t.Fatalf("drift: %v, %+v", err, rep)
	}
	driftID := rep.VerifyRun
	if got := value(m.DriftKeys("customer", verify.KindStale)); got != 1 {
		t.Fatalf("stale keys %v, want 1", got)
	}
	if got := value(m.DriftKeys("customer", verify.KindExtra)); got != 1 {
		t.Fatalf("extra keys %v, want 1", got)
	}

	// A failed run: recorded as an error, counted, and the drift gauges
	// keep what the last run that finished found.
	_, err = verify.Run(ctx, vc, verify.Options{Mirror: "no_such_mirror"})
	if err == nil {
		t.Fatal("a mirror that does not exist: no error")
	}
	if got := value(m.DriftKeys("customer", verify.KindStale)); got != 1 {
		t.Fatalf("stale keys after a failed run %v, want the 1 found before", got)
	}
	if got := value(m.LastSuccess("customer")); got < last {
		t.Fatalf("last success went back: %v < %v", got, last)
	}
	for res, want := range map[verify.Result]float64{verify.ResultInSync: 1, verify.ResultDrift: 1, verify.ResultError: 1} {
		if got := value(m.Runs("customer", res)); got != want {
			t.Errorf("runs %s: %v, want %v", res, got, want)
		}
	}

	runs, err := verify.Runs(ctx, w.Pool, "customer", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 3 || runs[1].ID != driftID || runs[2].ID != inSyncID {
		t.Fatalf("runs %+v, want the failed one, %d and %d, newest first", runs, driftID, inSyncID)
	}
	failed, drift, inSync := runs[0], runs[1], runs[2]
	if failed.Result != verify.ResultError || failed.Report != nil || !strings.Contains(failed.Error, "no_such_mirror") || failed.Mirror != "no_such_mirror" {
		t.Errorf("the failed run: %+v", failed)
	}
	if inSync.Result != verify.ResultInSync || inSync.Report == nil || inSync.Report.SourceKeys != 10 || inSync.Error != "" ||
		inSync.Topic != w.Topic || inSync.Duration() <= 0 {
		t.Errorf("the run in sync: %+v", inSync)
	}
	if r := drift.Report; drift.Result != verify.ResultDrift || r == nil || r.Stale != 1 || r.Extra != 1 || r.SourceKeys != 9 ||
		!slices.Equal(r.Samples.Stale, []string{"c00002"}) || !slices.Equal(r.Samples.Extra, []string{"c00004"}) ||
		len(r.Diffs) != 1 || r.Diffs[0].Fields[0].Field != "name" || r.Diffs[0].Fields[0].Want != "renamed" {
		t.Errorf("the run with drift: %+v, report %+v", drift, drift.Report)
	}
	// The counts are columns too, for queries.
	var stale, extra, missing int64
	if err := w.Pool.QueryRow(ctx, `SELECT stale, extra, missing FROM ecst.verify_runs WHERE id = $1`, driftID).Scan(&stale, &extra, &missing); err != nil {
		t.Fatal(err)
	}
	if stale != 1 || extra != 1 || missing != 0 {
		t.Errorf("columns stale %d, extra %d, missing %d", stale, extra, missing)
	}

	lastRuns, err := verify.LastRuns(ctx, w.Pool, []string{"nobody", "customer"})
	if err != nil {
		t.Fatal(err)
	}
	if len(lastRuns) != 1 || lastRuns[0].ID != failed.ID {
		t.Fatalf("last runs %+v, want only customer's failed run", lastRuns)
	}
}

// TestVerifyRecordsRepair: a repaired run records what it found, and the
// verdict after the repair; the gauges say what the repair left.
func TestVerifyRecordsRepair(t *testing.T) {
	w := ecsttest.New(t, ecsttest.Options{})
	ctx := context.Background()
	w.Seed(ctx, ecsttest.Keys(10))
	w.Drain()
	w.Exec(`UPDATE customers SET name = 'renamed' WHERE id = 'c00003'`)
	stop := w.StartRelay()
	defer stop() //nolint:errcheck
	w.WaitRelayLeads()
	m := verify.NewMetrics(nil)
	vc := cfg(w)
	vc.Metrics = m
	rep, err := verify.Run(ctx, vc, verify.Options{Repair: true})
	if err != nil || !rep.InSync() || rep.Stale != 1 {
		t.Fatalf("repair: %v, %+v", err, rep)
	}
	runs, err := verify.Runs(ctx, w.Pool, "customer", 5)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 1 || runs[0].Result != verify.ResultInSync || runs[0].Report.Stale != 1 || runs[0].Report.Repair == nil ||
		runs[0].Report.Repair.Republished != 1 || runs[0].Report.Repair.After.Stale != 0 {
		t.Fatalf("recorded %+v", runs)
	}
	if got := value(m.DriftKeys("customer", verify.KindStale)); got != 0 {
		t.Fatalf("stale keys after the repair: %v, want 0", got)
	}
}

// TestVerifyUnrecordedIsAWarning: a database whose ecst schema predates
// ecst.verify_runs still verifies; the run says it is not recorded, and how
// to fix that.
func TestVerifyUnrecordedIsAWarning(t *testing.T) {
	w := ecsttest.New(t, ecsttest.Options{})
	ctx := context.Background()
	w.Seed(ctx, ecsttest.Keys(5))
	w.Drain()
	w.Exec(`DROP TABLE ecst.verify_runs`)
	var logs syncBuffer
	vc := cfg(w)
	vc.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	rep, err := verify.Run(ctx, vc, verify.Options{})
	if err != nil || !rep.InSync() || rep.VerifyRun != 0 {
		t.Fatalf("verify without ecst.verify_runs: %v, %+v", err, rep)
	}
	if l := logs.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, "the verification is not recorded") ||
		!strings.Contains(l, "run `ecst migrate`") {
		t.Fatalf("log:\n%s", l)
	}
}

// TestVerifyInterruptedIsNotRecorded: a run stopped by its context has
// concluded nothing; it leaves no row, and no count.
func TestVerifyInterruptedIsNotRecorded(t *testing.T) {
	w := ecsttest.New(t, ecsttest.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w.Seed(ctx, ecsttest.Keys(5))
	w.Drain()
	m := verify.NewMetrics(nil)
	vc := cfg(w)
	vc.Metrics = m
	opts := verify.Options{}
	verify.PauseAfterSnapshot(&opts, cancel)
	if _, err := verify.Run(ctx, vc, opts); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted: %v", err)
	}
	var n int
	if err := w.Pool.QueryRow(context.Background(), `SELECT count(*) FROM ecst.verify_runs`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d runs recorded (%v), want none", n, err)
	}
	if got := value(m.Runs("customer", verify.ResultError)); got != 0 {
		t.Fatalf("an interrupted run counted as an error")
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// value is a gauge's or a counter's value.
func value(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	if m.Gauge != nil {
		return m.Gauge.GetValue()
	}
	return m.Counter.GetValue()
}
