package batch

import "github.com/prometheus/client_golang/prometheus"

// metrics are the batch manager's Prometheus metrics.
type metrics struct {
	executions *prometheus.CounterVec // by final state, and "created"
	files      *prometheus.CounterVec // by final file state
	fileDur    prometheus.Histogram
	retries    prometheus.Counter
	dead       prometheus.Counter
	running    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		executions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imageflow_batch_executions_total", Help: "Batch executions created (state=created) and finished (by final state).",
		}, []string{"state"}),
		files: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imageflow_batch_files_total", Help: "Batch files finished, by state.",
		}, []string{"state"}),
		fileDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "imageflow_batch_file_duration_seconds", Help: "Time to process one batch file: fetch, decode, pipeline, encode, store.",
			Buckets: prometheus.ExponentialBuckets(1e-3, 2.5, 12),
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "imageflow_batch_retries_total", Help: "Batch files put back on the queue after a transient processor failure.",
		}),
		dead: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "imageflow_batch_dead_letters_total", Help: "Batch files failed because JetStream gave up after MaxAttempts deliveries without a result (each crashed or stopped the worker).",
		}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "imageflow_batch_files_running", Help: "Batch files being processed now in this process.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.executions, m.files, m.fileDur, m.retries, m.dead, m.running)
	}
	return m
}
