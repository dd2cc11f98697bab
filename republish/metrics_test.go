package republish_test

import (
	"context"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/republish"
)

// scrape gathers reg and returns each ecst_republish_* gauge of entity by
// name; a missing one is absent from the map.
func scrape(t *testing.T, reg *prometheus.Registry, entity string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "entity" && l.GetValue() == entity {
					out[mf.GetName()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	return out
}

// TestCollectorFollowsTheLatestRun: the collector says whether each
// entity's latest run is running, failed (or abandoned by a dead process),
// and how far it got, as ecst.republish_runs and the run's lock say.
func TestCollectorFollowsTheLatestRun(t *testing.T) {
	w := ecsttest.New(t, ecsttest.Options{})
	ctx := context.Background()
	w.Seed(ctx, ecsttest.Keys(40))
	reg := prometheus.NewRegistry()
	reg.MustRegister(republish.NewCollector(w.Pool, nil))
	if got := scrape(t, reg, "customer"); len(got) != 0 {
		t.Fatalf("no run yet: %v", got)
	}

	if _, err := republish.Run(ctx, cfg(w), republish.Options{Keys: []string{"c00001", "c00002"}}); err != nil {
		t.Fatal(err)
	}
	want := func(what string, wants map[string]float64) {
		t.Helper()
		got := scrape(t, reg, "customer")
		for name, v := range wants {
			if g, ok := got[name]; !ok || g != v {
				t.Errorf("%s: %s = %v (present %v), want %v", what, name, g, ok, v)
			}
		}
	}
	want("completed", map[string]float64{"ecst_republish_last_run_failed": 0, "ecst_republish_running": 0,
		"ecst_republish_last_run_rows_written": 2, "ecst_republish_last_run_rows_selected": 2})

	// A process killed mid-run leaves its row running, and its lock gone.
	w.Exec(`INSERT INTO ecst.republish_runs (entity, selection, rows_selected, rows_written) VALUES ('customer', '{}', 40, 7)`)
	want("abandoned", map[string]float64{"ecst_republish_last_run_failed": 1, "ecst_republish_running": 0, "ecst_republish_last_run_rows_written": 7})

	// A run under way, slowed down: running, with its lock held.
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	started := make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	go func() {
		_, err := republish.Run(runCtx, cfg(w), republish.Options{All: true, Batch: 1, Rate: 5,
			Progress: func(p republish.Progress) {
				if p.Done > 0 {
					once.Do(func() { close(started) })
				}
			}})
		done <- err
	}()
	<-started
	want("running", map[string]float64{"ecst_republish_last_run_failed": 0, "ecst_republish_running": 1, "ecst_republish_last_run_rows_selected": 40})
	if got := scrape(t, reg, "customer")["ecst_republish_last_run_rows_written"]; got < 1 {
		t.Errorf("running: rows written %v, want at least the first", got)
	}

	// The source table goes away under it: the run fails.
	w.Exec(`ALTER TABLE customers RENAME TO customers_gone`)
	if err := <-done; err == nil {
		t.Fatal("a run whose source table went away succeeded")
	}
	want("failed", map[string]float64{"ecst_republish_last_run_failed": 1, "ecst_republish_running": 0})
}
