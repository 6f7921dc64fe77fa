package server

import (
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/server/rest"
)

// metrics holds the server's own instruments; component collectors register
// themselves beside them.
type metrics struct {
	httpRequests *prometheus.CounterVec
	httpLatency  *prometheus.HistogramVec
	liveDrops    *prometheus.CounterVec
	remoteErrors *prometheus.CounterVec
	rtspLatency  prometheus.Histogram
	overlay      *overlayMetrics
}

func newMetrics(reg prometheus.Registerer, b *bus.Bus) *metrics {
	m := &metrics{
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imageflow_http_requests_total", Help: "HTTP requests by route, method and status.",
		}, []string{"route", "method", "status"}),
		httpLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "imageflow_http_request_duration_seconds", Help: "HTTP request latency by route and method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route", "method"}),
		liveDrops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imageflow_live_dropped_total", Help: "Access units dropped for slow live readers, by camera and reader kind.",
		}, []string{"camera", "reader"}),
		remoteErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imageflow_remote_processor_errors_total", Help: "Failed calls to remote gRPC processors, by address.",
		}, []string{"address"}),
		rtspLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "imageflow_rtsp_egress_latency_seconds", Help: "Server-added latency of an access unit: from its last packet arriving to its packets written to an RTSP reader.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1},
		}),
	}
	reg.MustRegister(m.httpRequests, m.httpLatency, m.liveDrops, m.remoteErrors, m.rtspLatency, &busCollector{bus: b})
	m.overlay = newOverlayMetrics(reg)
	return m
}

// middleware records every request under its route pattern (not its path, so
// ids do not explode the label space).
func (m *metrics) middleware(c *fiber.Ctx) error {
	start := time.Now()
	err := c.Next()
	status := c.Response().StatusCode()
	if err != nil {
		status, _ = rest.StatusOf(err)
	}
	// Unknown paths land on the catch-all routes ("/api/*", "/*"), so the
	// label stays bounded.
	route := c.Route().Path
	method := c.Method()
	m.httpRequests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	m.httpLatency.WithLabelValues(route, method).Observe(time.Since(start).Seconds())
	return err
}

// busCollector reads the embedded NATS server's counters at scrape time.
type busCollector struct{ bus *bus.Bus }

var (
	busMsgsDesc  = prometheus.NewDesc("imageflow_bus_messages_total", "Messages through the embedded NATS server.", []string{"direction"}, nil)
	busBytesDesc = prometheus.NewDesc("imageflow_bus_bytes_total", "Payload bytes through the embedded NATS server.", []string{"direction"}, nil)
	busSlowDesc  = prometheus.NewDesc("imageflow_bus_slow_consumers_total", "Slow consumers the NATS server detected.", nil, nil)
	busConnsDesc = prometheus.NewDesc("imageflow_bus_connections", "Open NATS connections.", nil, nil)
)

func (c *busCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- busMsgsDesc
	ch <- busBytesDesc
	ch <- busSlowDesc
	ch <- busConnsDesc
}

func (c *busCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.bus.Stats()
	ch <- prometheus.MustNewConstMetric(busMsgsDesc, prometheus.CounterValue, float64(st.InMsgs), "in")
	ch <- prometheus.MustNewConstMetric(busMsgsDesc, prometheus.CounterValue, float64(st.OutMsgs), "out")
	ch <- prometheus.MustNewConstMetric(busBytesDesc, prometheus.CounterValue, float64(st.InBytes), "in")
	ch <- prometheus.MustNewConstMetric(busBytesDesc, prometheus.CounterValue, float64(st.OutBytes), "out")
	ch <- prometheus.MustNewConstMetric(busSlowDesc, prometheus.CounterValue, float64(st.SlowConsumers))
	ch <- prometheus.MustNewConstMetric(busConnsDesc, prometheus.GaugeValue, float64(st.Connections))
}
