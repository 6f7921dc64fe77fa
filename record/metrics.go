package record

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts what the recorders write and retention deletes.
type Metrics struct {
	bytes        *prometheus.CounterVec
	segments     *prometheus.CounterVec
	writeLatency prometheus.Histogram
	deletions    *prometheus.CounterVec
	deletedBytes prometheus.Counter
}

// NewMetrics registers the recording metrics with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "imageflow_record_bytes_total",
			Help: "Bytes of recordings written to the blob store, per camera."}, []string{"camera"}),
		segments: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "imageflow_record_segments_total",
			Help: "Recording segments completed, per camera."}, []string{"camera"}),
		writeLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "imageflow_record_write_seconds",
			Help:    "Time to store one recording blob (init or fragment) and index it.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}}),
		deletions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "imageflow_record_retention_deletions_total",
			Help: "Recording segments deleted by retention, by reason (age, camera_size, total_size)."}, []string{"reason"}),
		deletedBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "imageflow_record_retention_deleted_bytes_total",
			Help: "Bytes of recordings deleted by retention."}),
	}
	if reg != nil {
		reg.MustRegister(m.bytes, m.segments, m.writeLatency, m.deletions, m.deletedBytes)
	}
	return m
}

func (m *Metrics) observeWrite(cam string, d time.Duration, n int) {
	m.writeLatency.Observe(d.Seconds())
	m.bytes.WithLabelValues(cam).Add(float64(n))
}
