package verify

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// PauseAfterSnapshot widens the window between a snapshot of the database
// and the topic read after it, where live changes look like drift.
func PauseAfterSnapshot(o *Options, pause func()) { o.afterSnapshot = pause }

// LeaderGrace shortens how long a repair waits for a relay to lead a shard
// holding its rows.
func LeaderGrace(o *Options, d time.Duration) { o.leaderGrace = d }

// DriftKeys is the gauge of an entity's drifted keys of a kind.
func (m *Metrics) DriftKeys(entity, kind string) prometheus.Gauge {
	return m.drift.WithLabelValues(entity, kind)
}

// LastSuccess is the gauge of when an entity's last run finished.
func (m *Metrics) LastSuccess(entity string) prometheus.Gauge {
	return m.lastSuccess.WithLabelValues(entity)
}

// Runs is the counter of an entity's runs with a result.
func (m *Metrics) Runs(entity string, r Result) prometheus.Counter {
	return m.runs.WithLabelValues(entity, string(r))
}
