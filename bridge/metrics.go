package bridge

import "github.com/prometheus/client_golang/prometheus"

var (
	mirroredDesc = prometheus.NewDesc("imageflow_bridge_mirrored_total",
		"Messages Kafka confirmed, by stream.", []string{"stream", "topic"}, nil)
	failedDesc = prometheus.NewDesc("imageflow_bridge_write_failures_total",
		"Failed Kafka batch writes, by stream; the batch stays queued in JetStream and is retried.", []string{"stream"}, nil)
	droppedDesc = prometheus.NewDesc("imageflow_bridge_dropped_total",
		"Messages that can never be written to Kafka (undecodable, too large), by stream.", []string{"stream"}, nil)
	redeliveredDesc = prometheus.NewDesc("imageflow_bridge_redelivered_total",
		"Messages JetStream delivered to the bridge more than once (possible Kafka duplicates), by stream.", []string{"stream"}, nil)
	lagDesc = prometheus.NewDesc("imageflow_bridge_lag_messages",
		"Messages waiting in JetStream for the bridge (undelivered or unacknowledged), by stream.", []string{"stream"}, nil)
)

// mirrorMetrics reads the Mirror's totals at scrape time, so the hot path
// only bumps plain counters under its lock.
type mirrorMetrics struct{ m *Mirror }

func newMirrorMetrics(m *Mirror) *mirrorMetrics { return &mirrorMetrics{m: m} }

// Describe implements prometheus.Collector.
func (c *mirrorMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- mirroredDesc
	ch <- failedDesc
	ch <- droppedDesc
	ch <- redeliveredDesc
	ch <- lagDesc
}

// Collect implements prometheus.Collector.
func (c *mirrorMetrics) Collect(ch chan<- prometheus.Metric) {
	for _, spec := range c.m.specs {
		s := c.m.Stats(spec.name)
		ch <- prometheus.MustNewConstMetric(mirroredDesc, prometheus.CounterValue, float64(s.Mirrored), spec.name, c.m.Topic(spec.name))
		ch <- prometheus.MustNewConstMetric(failedDesc, prometheus.CounterValue, float64(s.Failed), spec.name)
		ch <- prometheus.MustNewConstMetric(droppedDesc, prometheus.CounterValue, float64(s.Dropped), spec.name)
		ch <- prometheus.MustNewConstMetric(redeliveredDesc, prometheus.CounterValue, float64(s.Redelivered), spec.name)
		ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, float64(s.Lag), spec.name)
	}
}
