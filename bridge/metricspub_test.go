package bridge

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/bus"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

func TestMetricsPublisherPublishesSelectedSamples(t *testing.T) {
	b := startBus(t)
	reg := prometheus.NewRegistry()
	frames := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "imageflow_test_frames_total", Help: "h"}, []string{"camera", "event"})
	frames.WithLabelValues("front", "decoded").Add(12)
	frames.WithLabelValues(`we"ird\`, "x").Add(1)
	fps := prometheus.NewGauge(prometheus.GaugeOpts{Name: "imageflow_test_fps", Help: "h"})
	fps.Set(29.97)
	lat := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "imageflow_test_latency_seconds", Help: "h"})
	lat.Observe(0.5)
	lat.Observe(1.5)
	other := prometheus.NewGauge(prometheus.GaugeOpts{Name: "somebody_else_gauge", Help: "h"})
	reg.MustRegister(frames, fps, lat, other, collectors.NewGoCollector())

	ch := make(chan *nats.Msg, 16)
	sub, err := b.Conn().ChanSubscribe(b.Subjects().Metrics("node-7"), ch)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	p := &MetricsPublisher{Conn: b.Conn(), Subjects: b.Subjects(), Node: "node-7", Gatherer: reg, Interval: 50 * time.Millisecond, Logger: quietLogger()}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	var got []*busv1.NodeMetrics
	deadline := time.After(5 * time.Second)
	for len(got) < 3 {
		select {
		case msg := <-ch:
			var nm busv1.NodeMetrics
			if err := proto.Unmarshal(msg.Data, &nm); err != nil {
				t.Fatal(err)
			}
			got = append(got, &nm)
		case <-deadline:
			t.Fatalf("got %d snapshots in 5 s at a 50 ms interval", len(got))
		}
	}
	nm := got[0]
	want := map[string]float64{
		`imageflow_test_frames_total{camera="front",event="decoded"}`: 12,
		`imageflow_test_frames_total{camera="we\"ird\\",event="x"}`:   1,
		`imageflow_test_fps`:                   29.97,
		`imageflow_test_latency_seconds_count`: 2,
		`imageflow_test_latency_seconds_sum`:   2,
	}
	for k, v := range want {
		if nm.Values[k] != v {
			t.Errorf("%s = %v, want %v", k, nm.Values[k], v)
		}
	}
	if _, ok := nm.Values["somebody_else_gauge"]; ok {
		t.Error("unselected metric published")
	}
	if nm.Values["go_goroutines"] <= 0 {
		t.Error("go_goroutines missing")
	}
	if nm.Node != "node-7" || nm.UnixNano == 0 || got[1].UnixNano <= nm.UnixNano {
		t.Errorf("snapshot header %v / %v", nm.Node, nm.UnixNano)
	}
	// The METRICS stream keeps them for the Mirror.
	info, err := b.JetStream().Stream(t.Context(), "METRICS")
	if err != nil {
		t.Fatal(err)
	}
	// JetStream stores asynchronously to the core delivery seen above.
	waitFor(t, 5*time.Second, "three snapshots in METRICS", func() bool {
		si, err := info.Info(t.Context())
		return err == nil && si.State.Msgs >= 3
	})
	p.Close()
	p.Close()
	if p.Published.Load() < 3 || p.Errors.Load() != 0 {
		t.Fatalf("published %d, errors %d", p.Published.Load(), p.Errors.Load())
	}
}

func TestMetricsPublisherCapsValues(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "imageflow_many", Help: "h"}, []string{"i"})
	for i := range 50 {
		g.WithLabelValues(string(rune('a' + i))).Set(1)
	}
	reg.MustRegister(g)
	p := &MetricsPublisher{Node: "n", Gatherer: reg, MaxValues: 10, Logger: quietLogger()}
	nm, err := p.Snapshot()
	if err != nil || len(nm.Values) != 10 {
		t.Fatalf("%d values, %v", len(nm.Values), err)
	}
}

func TestMetricsPublisherRejectsBadConfig(t *testing.T) {
	b := startBus(t)
	reg := prometheus.NewRegistry()
	for _, tc := range []struct {
		p    *MetricsPublisher
		want error
	}{
		{&MetricsPublisher{Gatherer: reg, Node: "n"}, ErrNoConn},
		{&MetricsPublisher{Conn: b.Conn(), Node: "n"}, ErrNoGatherer},
		{&MetricsPublisher{Conn: b.Conn(), Gatherer: reg, Node: "a.b"}, bus.ErrInvalidToken},
		{&MetricsPublisher{Conn: b.Conn(), Gatherer: reg}, bus.ErrInvalidToken},
	} {
		if err := tc.p.Start(); !errors.Is(err, tc.want) {
			t.Errorf("got %v, want %v", err, tc.want)
		}
		tc.p.Close()
	}
}
