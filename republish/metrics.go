package republish

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ecst-io/ecst/internal/pglock"
)

// Querier is what the Collector reads with: a *pgxpool.Pool or a *pgx.Conn.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Collector exports the state of each entity's latest republish run, read
// from ecst.republish_runs when Prometheus scrapes it. A run is a one-off
// command that no Prometheus can scrape, and the table outlives it, so a
// long-running process (`ecst verify --every`) serves this instead: an
// alert on a failed run then fires however the run ended, killed included.
type Collector struct {
	q   Querier
	log *slog.Logger

	failed, running, written, selected *prometheus.Desc
}

// NewCollector reads the runs with q; log (nil: none) hears of a scrape
// that could not read them, which then exports no run at all.
func NewCollector(q Querier, log *slog.Logger) *Collector {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := []string{"entity"}
	return &Collector{q: q, log: log,
		failed: prometheus.NewDesc("ecst_republish_last_run_failed",
			"1 when the entity's latest republish run failed, or was left running by a process that died (no session holds its lock): resume it.", l, nil),
		running: prometheus.NewDesc("ecst_republish_running",
			"1 while a republish run of the entity is running (its process holds the entity's lock).", l, nil),
		written: prometheus.NewDesc("ecst_republish_last_run_rows_written",
			"Outbox rows (full states and tombstones) the entity's latest republish run has written.", l, nil),
		selected: prometheus.NewDesc("ecst_republish_last_run_rows_selected",
			"Keys the entity's latest republish run selected (absent until counted).", l, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.failed
	ch <- c.running
	ch <- c.written
	ch <- c.selected
}

// Collect implements prometheus.Collector: one query, the latest run of
// each entity (ecst.republish_runs holds a row per run, a handful per
// entity) with the republish locks held now.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	runs, err := lastRuns(ctx, c.q)
	if err != nil {
		c.log.Warn("cannot read the republish runs for /metrics", "err", err)
		return
	}
	for _, r := range runs {
		failed, running := 0.0, 0.0
		switch {
		case r.state == "failed", r.state == "running" && !r.locked:
			failed = 1
		case r.state == "running":
			running = 1
		}
		ch <- prometheus.MustNewConstMetric(c.failed, prometheus.GaugeValue, failed, r.entity)
		ch <- prometheus.MustNewConstMetric(c.running, prometheus.GaugeValue, running, r.entity)
		ch <- prometheus.MustNewConstMetric(c.written, prometheus.GaugeValue, float64(r.written), r.entity)
		if r.selected != nil {
			ch <- prometheus.MustNewConstMetric(c.selected, prometheus.GaugeValue, float64(*r.selected), r.entity)
		}
	}
}

type lastRun struct {
	entity, state string
	selected      *int64
	written       int64
	locked        bool // a session holds the entity's republish lock
}

func lastRuns(ctx context.Context, q Querier) ([]lastRun, error) {
	rows, err := q.Query(ctx, `SELECT DISTINCT ON (entity) entity, state, rows_selected, rows_written + tombstones_written,
			ARRAY(SELECT objid::bigint FROM pg_locks
				WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid::bigint = $1
				  AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))
		FROM ecst.republish_runs ORDER BY entity, started_at DESC, id DESC`, int64(pglock.Republish))
	if err != nil {
		return nil, err
	}
	var out []lastRun
	var r lastRun
	var held []int64
	_, err = pgx.ForEachRow(rows, []any{&r.entity, &r.state, &r.selected, &r.written, &held}, func() error {
		// pg_locks shows the int4 object as an oid: unsigned.
		r.locked = slices.Contains(held, int64(uint32(pglock.Hash(r.entity))))
		out = append(out, r)
		r.selected = nil
		return nil
	})
	return out, err
}
