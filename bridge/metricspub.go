package bridge

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/imageflowcanvas/imageflow/bus"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// Defaults of a MetricsPublisher.
const (
	DefaultMetricsInterval = 10 * time.Second
	DefaultMaxValues       = 2000
)

// DefaultMetricPrefixes selects the samples a MetricsPublisher sends when
// Include is nil: ImageFlowCanvas's own metrics and the process's vital signs.
var DefaultMetricPrefixes = []string{
	"imageflow_",
	"process_cpu_seconds_total",
	"process_resident_memory_bytes",
	"process_open_fds",
	"go_goroutines",
	"go_memstats_heap_alloc_bytes",
}

// Errors of the publishers.
var (
	ErrNoConn     = errors.New("bridge: no NATS connection")
	ErrNoGatherer = errors.New("bridge: no prometheus gatherer")
)

// MetricsPublisher puts a snapshot of a node's metrics on
// <prefix>.metrics.<node> every Interval, for the Mirror to carry to Kafka.
// Counters, gauges and untyped samples become values keyed
// `name{label="value",...}` (Prometheus text notation); histograms and
// summaries contribute name_count and name_sum.
type MetricsPublisher struct {
	// Conn publishes the snapshots.
	Conn *nats.Conn
	// Subjects names the metrics subject.
	Subjects bus.Subjects
	// Node is the subject token and NodeMetrics.node (a bus token).
	Node string
	// Gatherer is read at every tick, usually the server's registry.
	Gatherer prometheus.Gatherer
	// Interval between snapshots; DefaultMetricsInterval when 0.
	Interval time.Duration
	// Include selects metric families by name prefix; DefaultMetricPrefixes
	// when nil.
	Include []string
	// MaxValues caps the samples of one snapshot so a label explosion cannot
	// make a message the bus refuses; DefaultMaxValues when 0.
	MaxValues int
	// Logger; slog.Default() when nil.
	Logger *slog.Logger

	// Published and Errors count snapshots sent and failed.
	Published, Errors atomic.Uint64

	mu      sync.Mutex
	started bool
	closed  bool
	stop    chan struct{}
	wg      sync.WaitGroup
}

// Start checks the configuration, publishes a first snapshot and then one
// every Interval until Close.
func (p *MetricsPublisher) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started || p.closed {
		return ErrStarted
	}
	if p.Conn == nil {
		return ErrNoConn
	}
	if p.Gatherer == nil {
		return ErrNoGatherer
	}
	if err := bus.ValidateToken(p.Node); err != nil {
		return fmt.Errorf("bridge: metrics node %q: %w", p.Node, err)
	}
	if p.Subjects.Prefix == "" {
		p.Subjects.Prefix = "ifc"
	}
	setDefault(&p.Interval, DefaultMetricsInterval)
	setDefault(&p.MaxValues, DefaultMaxValues)
	if p.Include == nil {
		p.Include = DefaultMetricPrefixes
	}
	if p.Logger == nil {
		p.Logger = slog.Default()
	}
	p.Logger = p.Logger.With("component", "metrics-publisher", "node", p.Node)
	p.started = true
	p.stop = make(chan struct{})
	p.wg.Go(p.run)
	return nil
}

func (p *MetricsPublisher) run() {
	t := time.NewTicker(p.Interval)
	defer t.Stop()
	for {
		if err := p.PublishNow(); err != nil {
			p.Logger.Warn("publish metrics", "error", err)
		}
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
	}
}

// Close stops the ticker and waits for it; a second call does nothing.
func (p *MetricsPublisher) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	started := p.started
	p.mu.Unlock()
	if started {
		close(p.stop)
		p.wg.Wait()
	}
}

// PublishNow gathers and publishes one snapshot.
func (p *MetricsPublisher) PublishNow() error {
	nm, err := p.Snapshot()
	if err == nil {
		err = bus.Publish(p.Conn, p.Subjects.Metrics(p.Node), nm)
	}
	if err != nil {
		p.Errors.Add(1)
		return err
	}
	p.Published.Add(1)
	return nil
}

// Snapshot gathers the selected samples into a NodeMetrics. A gatherer that
// reports an error along with data still yields the data it has.
func (p *MetricsPublisher) Snapshot() (*busv1.NodeMetrics, error) {
	fams, gerr := p.Gatherer.Gather()
	if len(fams) == 0 && gerr != nil {
		return nil, fmt.Errorf("gather: %w", gerr)
	}
	nm := &busv1.NodeMetrics{Node: p.Node, UnixNano: time.Now().UnixNano(), Values: make(map[string]float64)}
	max := p.MaxValues
	if max <= 0 {
		max = DefaultMaxValues
	}
	include := p.Include
	if include == nil {
		include = DefaultMetricPrefixes
	}
	truncated := false
	for _, f := range fams {
		name := f.GetName()
		if !hasAnyPrefix(name, include) {
			continue
		}
		for _, m := range f.GetMetric() {
			var vals [2]float64
			var suffixes [2]string
			n := 0
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				vals[0], n = m.GetCounter().GetValue(), 1
			case dto.MetricType_GAUGE:
				vals[0], n = m.GetGauge().GetValue(), 1
			case dto.MetricType_UNTYPED:
				vals[0], n = m.GetUntyped().GetValue(), 1
			case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
				h := m.GetHistogram()
				vals, suffixes, n = [2]float64{float64(h.GetSampleCount()), h.GetSampleSum()}, [2]string{"_count", "_sum"}, 2
			case dto.MetricType_SUMMARY:
				s := m.GetSummary()
				vals, suffixes, n = [2]float64{float64(s.GetSampleCount()), s.GetSampleSum()}, [2]string{"_count", "_sum"}, 2
			}
			for i := range n {
				if len(nm.Values) >= max {
					truncated = true
					break
				}
				if math.IsNaN(vals[i]) {
					continue
				}
				nm.Values[sampleKey(name+suffixes[i], m.GetLabel())] = vals[i]
			}
		}
	}
	if truncated {
		log := p.Logger
		if log == nil {
			log = slog.Default()
		}
		log.Warn("metrics snapshot truncated", "max_values", max)
	}
	return nm, nil
}

// key writes name{a="x",b="y"} with label values escaped as in the
// Prometheus text format.
func sampleKey(name string, labels []*dto.LabelPair) string {
	if len(labels) == 0 {
		return name
	}
	var sb strings.Builder
	sb.WriteString(name)
	sb.WriteByte('{')
	for i, l := range labels {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(l.GetName())
		sb.WriteString(`="`)
		_, _ = labelEscaper.WriteString(&sb, l.GetValue())
		sb.WriteByte('"')
	}
	sb.WriteByte('}')
	return sb.String()
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
