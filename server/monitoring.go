package server

import (
	"math"
	"sort"

	"github.com/gofiber/fiber/v2"
	dto "github.com/prometheus/client_model/go"

	"github.com/imageflowcanvas/imageflow/server/rest"
)

// monitorCamera is one camera's live figures.
type monitorCamera struct {
	ID       string  `json:"id"`
	Name     string  `json:"name"`
	State    string  `json:"state"`
	Pipeline string  `json:"pipeline"`
	FPS      float64 `json:"fps"`
	Bitrate  float64 `json:"bitrate"`
	// Skipped counts frames the live pipeline dropped while busy (since start).
	Skipped float64 `json:"skipped"`
	// Results counts results the live pipeline published (since start).
	Results float64 `json:"results"`
	// LatencyP50MS and LatencyP99MS are frame-to-result latencies (since start).
	LatencyP50MS float64 `json:"latency_p50_ms"`
	LatencyP99MS float64 `json:"latency_p99_ms"`
}

// monitorStep is one pipeline step's processing time.
type monitorStep struct {
	Pipeline  string  `json:"pipeline"`
	Step      string  `json:"step"`
	Processor string  `json:"processor"`
	Count     uint64  `json:"count"`
	P50MS     float64 `json:"p50_ms"`
	P99MS     float64 `json:"p99_ms"`
}

// monitoring answers GET /api/v1/monitoring.
type monitoring struct {
	GrafanaURL string          `json:"grafana_url,omitempty"`
	Cameras    []monitorCamera `json:"cameras"`
	Steps      []monitorStep   `json:"steps"`
}

func monitoringSchemas() map[string]any {
	cam := obj(map[string]any{"id": str, "name": str, "state": str, "pipeline": str, "fps": num, "bitrate": num, "skipped": num, "results": num,
		"latency_p50_ms": num, "latency_p99_ms": num}, "id", "name", "state", "pipeline", "fps", "bitrate", "skipped", "results", "latency_p50_ms", "latency_p99_ms")
	step := obj(map[string]any{"pipeline": str, "step": str, "processor": str, "count": integ, "p50_ms": num, "p99_ms": num},
		"pipeline", "step", "processor", "count", "p50_ms", "p99_ms")
	return map[string]any{"Monitoring": obj(map[string]any{"grafana_url": str, "cameras": arr(cam), "steps": arr(step)}, "cameras", "steps")}
}

func (s *Server) monitoringRoute() route {
	return route{Method: "GET", Path: "/api/v1/monitoring", Summary: "Live figures for the monitoring page: per camera fps, bitrate, skipped frames and frame-to-result latency; per pipeline step latency p50/p99 (latencies and counts since start)",
		Handler: s.monitoring, Response: "Monitoring", Statuses: []int{200}, Role: rest.RoleViewer}
}

// monitoring reads the server's own Prometheus metrics (no scraping of the
// text format) and the cameras' live status.
func (s *Server) monitoring(c *fiber.Ctx) error {
	out := monitoring{GrafanaURL: s.Config.GrafanaURL, Cameras: []monitorCamera{}, Steps: []monitorStep{}}
	byCam := map[string]*monitorCamera{}
	cams, err := s.cameras.list(c.UserContext())
	if err != nil {
		return writeError(c, err)
	}
	for _, cam := range cams {
		v := s.viewCamera(cam)
		out.Cameras = append(out.Cameras, monitorCamera{ID: v.ID, Name: v.Name, State: v.State, Pipeline: v.Pipeline, FPS: v.FPS, Bitrate: v.Bitrate})
	}
	for i := range out.Cameras {
		byCam[out.Cameras[i].ID] = &out.Cameras[i]
	}
	families, err := s.Gatherer.Gather()
	if err != nil {
		return writeError(c, err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			switch f.GetName() {
			case "imageflow_live_frames_skipped_total":
				if mc := byCam[labels["camera"]]; mc != nil {
					mc.Skipped += m.GetCounter().GetValue()
				}
			case "imageflow_live_results_total":
				if mc := byCam[labels["camera"]]; mc != nil {
					mc.Results += m.GetCounter().GetValue()
				}
			case "imageflow_live_frame_latency_seconds":
				if mc := byCam[labels["camera"]]; mc != nil && labels["pipeline"] == mc.Pipeline {
					mc.LatencyP50MS = 1000 * histogramQuantile(0.5, m.GetHistogram())
					mc.LatencyP99MS = 1000 * histogramQuantile(0.99, m.GetHistogram())
				}
			case "imageflow_pipeline_step_duration_seconds":
				h := m.GetHistogram()
				out.Steps = append(out.Steps, monitorStep{Pipeline: labels["pipeline"], Step: labels["step"], Processor: labels["processor"],
					Count: h.GetSampleCount(), P50MS: 1000 * histogramQuantile(0.5, h), P99MS: 1000 * histogramQuantile(0.99, h)})
			}
		}
	}
	sort.Slice(out.Steps, func(i, j int) bool {
		a, b := out.Steps[i], out.Steps[j]
		if a.Pipeline != b.Pipeline {
			return a.Pipeline < b.Pipeline
		}
		return a.Step < b.Step
	})
	return c.JSON(out)
}

// histogramQuantile estimates quantile q of a cumulative histogram as
// Prometheus's histogram_quantile does: linear inside the bucket it falls
// in; the top bucket's bound when it falls in +Inf; 0 with no samples.
func histogramQuantile(q float64, h *dto.Histogram) float64 {
	total := h.GetSampleCount()
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	lower, below := 0.0, 0.0
	for _, b := range h.GetBucket() {
		upper, count := b.GetUpperBound(), float64(b.GetCumulativeCount())
		if math.IsInf(upper, 1) {
			break
		}
		if count >= rank {
			if count == below {
				return upper
			}
			return lower + (upper-lower)*(rank-below)/(count-below)
		}
		lower, below = upper, count
	}
	return lower
}
