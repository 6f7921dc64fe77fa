package server

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

func TestHistogramQuantile(t *testing.T) {
	bucket := func(upper float64, count uint64) *dto.Bucket {
		return &dto.Bucket{UpperBound: proto.Float64(upper), CumulativeCount: proto.Uint64(count)}
	}
	h := &dto.Histogram{SampleCount: proto.Uint64(100), Bucket: []*dto.Bucket{bucket(1, 50), bucket(2, 90), bucket(4, 100), bucket(math.Inf(1), 100)}}
	for _, c := range []struct{ q, want float64 }{{0.25, 0.5}, {0.5, 1}, {0.7, 1.5}, {0.95, 3}, {1, 4}} {
		if got := histogramQuantile(c.q, h); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("q%.2f = %v, want %v", c.q, got, c.want)
		}
	}
	if got := histogramQuantile(0.5, &dto.Histogram{}); got != 0 {
		t.Errorf("empty histogram: %v", got)
	}
	// Samples above the last finite bound answer that bound.
	h = &dto.Histogram{SampleCount: proto.Uint64(10), Bucket: []*dto.Bucket{bucket(1, 2), bucket(math.Inf(1), 10)}}
	if got := histogramQuantile(0.99, h); got != 1 {
		t.Errorf("overflow: %v, want 1", got)
	}
}

// TestMonitoringEndpoint reads GET /api/v1/monitoring while the demo camera
// runs its pipeline: the camera shows its rate, results and latency, and
// every step of the demo pipeline its p50 <= p99.
func TestMonitoringEndpoint(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Demo = true
	cfg.GrafanaURL = "http://grafana.example:3000/d/imageflow"
	ts := startServer(t, cfg)
	waitCameraOnline(t, ts, DemoCamera)
	var m monitoring
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, body, _ := ts.do("GET", "/api/v1/monitoring", "", nil)
		if st != 200 {
			t.Fatalf("monitoring: %d %s", st, body)
		}
		m = monitoring{}
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatal(err)
		}
		if len(m.Cameras) == 1 && m.Cameras[0].Results >= 5 && m.Cameras[0].FPS > 0 && len(m.Steps) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no live figures in time: %s", body)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("monitoring: %+v", m)
	cam := m.Cameras[0]
	if cam.ID != DemoCamera || cam.Pipeline != DemoPipeline || cam.Bitrate <= 0 || cam.LatencyP50MS <= 0 || cam.LatencyP99MS < cam.LatencyP50MS {
		t.Errorf("camera figures: %+v", cam)
	}
	for _, s := range m.Steps {
		if s.Pipeline != DemoPipeline || s.Count == 0 || s.P50MS <= 0 || s.P99MS < s.P50MS {
			t.Errorf("step figures: %+v", s)
		}
	}
	if m.GrafanaURL != cfg.GrafanaURL {
		t.Errorf("grafana_url: %q", m.GrafanaURL)
	}
}

// TestMonitoringPage opens /monitoring in Chromium with the demo camera
// running: four uPlot charts draw the polled figures, the step table lists
// the demo pipeline's steps and the Grafana link points where configured.
func TestMonitoringPage(t *testing.T) {
	needBrowser(t)
	cfg := testConfig(t.TempDir())
	cfg.Demo = true
	cfg.GrafanaURL = "http://grafana.example:3000/d/imageflow"
	ts := startServer(t, cfg)
	waitCameraOnline(t, ts, DemoCamera)
	tab, cancel := chromedp.NewContext(newBrowser(t))
	defer cancel()
	if err := chromedp.Do(tab, chromedp.EmulateViewport(1400, 1000), chromedp.Navigate(ts.base+"/monitoring")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, tab, `window.__ifc && window.__ifc.page === 'monitoring' && window.__ifc.samples >= 4 && document.querySelectorAll('[data-testid="chart"] canvas').length >= 4`, 60*time.Second)
	waitJS(t, tab, `document.querySelectorAll('[data-testid="monitoring-steps"] tbody tr').length >= 2 && !!document.querySelector('[data-testid="monitoring-cameras"] tr[data-camera-id="demo"]')`, 30*time.Second)
	href, err := chromedp.Run(tab, chromedp.Evaluate[string](`document.querySelector('[data-testid="grafana-link"]').href`))
	if err != nil || href != cfg.GrafanaURL {
		t.Errorf("Grafana link: %q (%v)", href, err)
	}
	screenshot(t, tab, "monitoring")
}
