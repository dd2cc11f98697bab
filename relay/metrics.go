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

	slotLag      *prometheus.GaugeVec
	slotRetained *prometheus.GaugeVec
	slotSafe     *prometheus.GaugeVec
	slotLagSecs  *prometheus.GaugeVec
	slotLost     *prometheus.GaugeVec
	switchWait   *prometheus.GaugeVec
	// The table transport's outbox: rows kept, partitions truncated.
	outboxRows prometheus.Gauge
	rotations  prometheus.Counter

	// Capture markers resolved.
	markers prometheus.Counter
}

// NewMetrics creates the relay's metrics and registers them with reg
// (nil: not registered, for tests and embedding).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		leader: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ecst_relay_leader", Help: "1 while this process leads the outbox shard (shard=\"wal\": the WAL transport's slot).",
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
			Name: "ecst_relay_errors_total", Help: "Errors by kind: database, capture, kafka, timeout, fenced, lease_lost, unknown_topic, auth.",
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
			Name: "ecst_relay_commit_to_ack_seconds", Help: "Time from a row's insert (created_at), or with the WAL transport its transaction's commit, to its Kafka commit.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 1.5, 24), // 0.5ms to 5.6s
		}),
		slotLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ecst_relay_slot_lag_bytes", Help: "WAL written since the replication slot's confirmed position (WAL transport; sampled every 5s).",
		}, []string{"slot"}),
		slotRetained: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ecst_relay_slot_retained_bytes", Help: "WAL the replication slot keeps PostgreSQL from removing (sampled every 5s; also in the table transport while a slot is left).",
		}, []string{"slot"}),
		slotSafe: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ecst_relay_slot_safe_wal_bytes", Help: "WAL that may still be written before max_slot_wal_keep_size invalidates the slot (unset without a limit).",
		}, []string{"slot"}),
		slotLagSecs: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ecst_relay_slot_lag_seconds", Help: "Age of the oldest event the WAL leader has not committed to Kafka, or with none of the newest heartbeat through (the leader only).",
		}, []string{"slot"}),
		slotLost: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ecst_relay_slot_lost", Help: "1 while the WAL transport's slot is lost or invalidated: run `ecst relay --recover-slot`.",
		}, []string{"slot"}),
		switchWait: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ecst_relay_switch_waiting", Help: "1 while a leader waits for the other transport's relay to publish what it holds (after `ecst outbox switch`).",
		}, []string{"shard"}),
		outboxRows: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ecst_relay_outbox_rows", Help: "Rows kept in the outbox, published or not, as the planner estimates them (sampled every 5s); published ones go when the relay truncates their partition.",
		}),
		rotations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ecst_relay_rotations_total", Help: "Outbox partitions truncated once every row in them was published.",
		}),
		markers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ecst_relay_capture_markers_total", Help: "Capture markers resolved: their keys' current states written to the transport (outbox rows or WAL messages).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.leader, m.backlog, m.oldest, m.records, m.bytes, m.errors, m.parked, m.retries, m.batchSize, m.batchTime, m.latency,
			m.slotLag, m.slotRetained, m.slotSafe, m.slotLagSecs, m.slotLost, m.switchWait, m.outboxRows, m.rotations, m.markers)
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

// observeSlot sets the slot's gauges from a sample (nil: no slot).
func (m *Metrics) observeSlot(st *SlotStatus) {
	if st == nil {
		return
	}
	lost := 0.0
	if st.Err != nil {
		lost = 1
	}
	m.slotLost.WithLabelValues(st.Slot).Set(lost)
	if !st.Exists {
		return
	}
	m.slotLag.WithLabelValues(st.Slot).Set(float64(st.LagBytes))
	m.slotRetained.WithLabelValues(st.Slot).Set(float64(st.RetainedBytes))
	if st.SafeWALBytes >= 0 {
		m.slotSafe.WithLabelValues(st.Slot).Set(float64(st.SafeWALBytes))
	}
	m.slotLagSecs.WithLabelValues(st.Slot).Set(st.LagSeconds)
}
