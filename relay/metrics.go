package relay

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the relay's Prometheus metrics.
type Metrics struct {
	leader    *prometheus.GaugeVec
	backlog   *prometheus.GaugeVec
	oldest    *prometheus.GaugeVec
	records   *prometheus.CounterVec
	bytes     *prometheus.CounterVec
	errors    *prometheus.CounterVec
	parked    *prometheus.CounterVec
	retries   prometheus.Counter
	batchSize prometheus.Histogram
	batchTime prometheus.Histogram
	latency   prometheus.Histogram

	// The table transport's outbox: rows kept, partitions truncated.
	outboxRows prometheus.Gauge
	rotations  prometheus.Counter
}

// NewMetrics creates the relay's metrics and registers them with reg
// (nil: not registered, for tests and embedding).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		leader: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ecst_relay_leader", Help: "1 while this process leads the outbox shard.",
		}, []string{"shard"}),
		backlog: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ecst_relay_backlog_rows", Help: "Rows of the outbox shard not yet published (sampled every 5s by its leader).",
		}, []string{"shard"}),
		oldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ecst_relay_oldest_row_age_seconds", Help: "Age of the oldest row of the outbox shard not yet published (sampled every 5s by its leader).",
		}, []string{"shard"}),
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ecst_relay_records_published_total", Help: "Records committed to Kafka.",
		}, []string{"topic"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ecst_relay_bytes_published_total", Help: "Key, value and header bytes committed to Kafka.",
		}, []string{"topic"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ecst_relay_errors_total", Help: "Errors by kind: database, kafka, timeout, fenced, lease_lost, unknown_topic, auth.",
		}, []string{"kind"}),
		parked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ecst_relay_parked_total", Help: "Records the broker rejected for good, moved to ecst.outbox_parked.",
		}, []string{"topic"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ecst_relay_retries_total", Help: "Batches retried after a transient error.",
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ecst_relay_batch_size", Help: "Rows per committed batch.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9),
		}),
		batchTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ecst_relay_batch_duration_seconds", Help: "Time from reading a batch to its Kafka commit.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ecst_relay_commit_to_ack_seconds", Help: "Time from a row's insert (created_at) to its Kafka commit.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 1.5, 24), // 0.5ms to 5.6s
		}),
		outboxRows: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ecst_relay_outbox_rows", Help: "Rows kept in the outbox, published or not, as the planner estimates them (sampled every 5s); published ones go when the relay truncates their partition.",
		}),
		rotations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ecst_relay_rotations_total", Help: "Outbox partitions truncated once every row in them was published.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.leader, m.backlog, m.oldest, m.records, m.bytes, m.errors, m.parked, m.retries, m.batchSize, m.batchTime, m.latency, m.outboxRows, m.rotations)
	}
	return m
}

func (m *Metrics) observeBatch(rows []record, took time.Duration) {
	now := time.Now()
	m.batchSize.Observe(float64(len(rows)))
	m.batchTime.Observe(took.Seconds())
	byTopic := map[string][2]float64{}
	for _, r := range rows {
		c := byTopic[r.topic]
		c[0]++
		c[1] += float64(len(r.key) + len(r.value) + len(r.headers))
		byTopic[r.topic] = c
		m.latency.Observe(now.Sub(r.createdAt).Seconds())
	}
	for t, c := range byTopic {
		m.records.WithLabelValues(t).Add(c[0])
		m.bytes.WithLabelValues(t).Add(c[1])
	}
}
