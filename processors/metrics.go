package processors

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the pipeline engine's and live runner's Prometheus metrics. A
// nil *Metrics records nothing.
type Metrics struct {
	// StepDuration is each step's processing time.
	StepDuration *prometheus.HistogramVec
	// StepErrors counts failed steps.
	StepErrors *prometheus.CounterVec
	// FramesSkipped counts live frames replaced by a newer one while the
	// pipeline was busy (latest wins).
	FramesSkipped *prometheus.CounterVec
	// Results counts results a live runner published.
	Results *prometheus.CounterVec
	// FrameLatency is the time from a frame's arrival to its published result.
	FrameLatency *prometheus.HistogramVec
	// IngestLatency is the time from the frame's access unit entering the
	// server to its published result: FrameLatency plus decoding, sampling
	// and the frame's trip over the bus.
	IngestLatency *prometheus.HistogramVec
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	// Steps range from ~50 µs (resize) to seconds (remote detection).
	buckets := prometheus.ExponentialBuckets(50e-6, 2.5, 12)
	m := &Metrics{
		StepDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "imageflow_pipeline_step_duration_seconds", Help: "Processing time of one pipeline step for one image.", Buckets: buckets,
		}, []string{"pipeline", "step", "processor"}),
		StepErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imageflow_pipeline_step_errors_total", Help: "Pipeline steps that failed.",
		}, []string{"pipeline", "step"}),
		FramesSkipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imageflow_live_frames_skipped_total", Help: "Live frames dropped because the pipeline was busy and a newer frame arrived.",
		}, []string{"camera"}),
		Results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imageflow_live_results_total", Help: "Results published by live pipelines.",
		}, []string{"camera", "pipeline"}),
		FrameLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "imageflow_live_frame_latency_seconds", Help: "Time from a frame's arrival on the bus to its result being published.", Buckets: buckets,
		}, []string{"camera", "pipeline"}),
		IngestLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "imageflow_live_ingest_latency_seconds", Help: "Time from a frame's access unit entering the server to its result being published.", Buckets: buckets,
		}, []string{"camera", "pipeline"}),
	}
	if reg != nil {
		reg.MustRegister(m.StepDuration, m.StepErrors, m.FramesSkipped, m.Results, m.FrameLatency, m.IngestLatency)
	}
	return m
}
