package verify

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are a verifier's Prometheus metrics: what the last run of each
// entity found, and when one last finished. `ecst verify --every` serves
// them.
type Metrics struct {
	drift       *prometheus.GaugeVec
	lastSuccess *prometheus.GaugeVec
	runs        *prometheus.CounterVec
	every       *prometheus.GaugeVec
}

// The kinds of drift ecst_verify_drift_keys counts: the source against the
// topic, then the topic against the mirror.
const (
	KindMissing       = "missing"
	KindExtra         = "extra"
	KindStale         = "stale"
	KindMirrorMissing = "mirror_missing"
	KindMirrorExtra   = "mirror_extra"
	KindMirrorStale   = "mirror_stale"
)

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		drift: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ecst_verify_drift_keys",
			Help: "Keys drifted, by kind (missing, extra, stale: the topic against the source; mirror_*: the mirror against the topic), as the last run that finished left them (after its repair, if any).",
		}, []string{"entity", "kind"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ecst_verify_last_success_timestamp_seconds",
			Help: "When the entity's last verification that finished (in sync or not; not an error) ended, in Unix seconds.",
		}, []string{"entity"}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ecst_verify_runs_total",
			Help: "Verifications run, by result: in_sync, drift or error.",
		}, []string{"entity", "result"}),
		every: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ecst_verify_every_seconds",
			Help: "The interval `ecst verify --every` runs the entity's verification at (alerts compare the last success's age with it).",
		}, []string{"entity"}),
	}
	if reg != nil {
		reg.MustRegister(m.drift, m.lastSuccess, m.runs, m.every)
	}
	return m
}

// Every records the interval the entity is verified at.
// Its run counters start at 0 then, so that the first run of each result
// counts as an increase.
func (m *Metrics) Every(entity string, d time.Duration) {
	m.every.WithLabelValues(entity).Set(d.Seconds())
	for _, r := range []Result{ResultInSync, ResultDrift, ResultError} {
		m.runs.WithLabelValues(entity, string(r))
	}
}

// observe records a finished run. An error leaves the drift gauges as the
// last run that finished left them.
func (m *Metrics) observe(entity string, rep *Report, err error, finished time.Time) {
	if m == nil {
		return
	}
	res := ResultOf(rep, err)
	m.runs.WithLabelValues(entity, string(res)).Inc()
	if res == ResultError {
		return
	}
	final := rep
	if rep.Repair != nil && rep.Repair.After != nil {
		final = rep.Repair.After
	}
	set := func(kind string, n int64) { m.drift.WithLabelValues(entity, kind).Set(float64(n)) }
	set(KindMissing, final.Missing)
	set(KindExtra, final.Extra)
	set(KindStale, final.Stale)
	if mr := final.Mirror; mr != nil {
		set(KindMirrorMissing, mr.Missing)
		set(KindMirrorExtra, mr.Extra)
		set(KindMirrorStale, mr.Stale)
	}
	m.lastSuccess.WithLabelValues(entity).Set(float64(finished.UnixNano()) / 1e9)
}
