package server

import (
	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/imageflowcanvas/imageflow/server/rest"
)

// maxOverlayCount bounds one report's counts: a page reports every few
// seconds, and detection boxes of a few seconds never come near it.
const maxOverlayCount = 1_000_000

// maxPlayoutTargetMs is the browser's largest jitterBufferTarget (4 s).
const maxPlayoutTargetMs = 4000

// overlayReport is what a live page reports about the detection boxes it
// drew since its last report (webapp/src/playout.ts counts them).
type overlayReport struct {
	// Boxes drawn on the frame whose RTP timestamp they carry.
	Exact int64 `json:"exact"`
	// Boxes whose frame was shown before they arrived, drawn marked late.
	Late int64 `json:"late"`
	// Boxes never drawn: too late, superseded, or older than those shown.
	Dropped int64 `json:"dropped"`
	// The page's jitter-buffer target in ms (0: the browser's default), if it sets one.
	PlayoutTargetMs *float64 `json:"playout_target_ms"`
}

// overlayMetrics are the live pages' reports, by camera.
type overlayMetrics struct {
	boxes  *prometheus.CounterVec
	target *prometheus.HistogramVec
}

func newOverlayMetrics(reg prometheus.Registerer) *overlayMetrics {
	m := &overlayMetrics{
		boxes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imageflow_live_overlay_boxes_total",
			Help: "Detection boxes live pages drew on their own frame (exact), on a later frame marked late (late), or not at all (dropped), by camera.",
		}, []string{"camera", "outcome"}),
		target: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "imageflow_live_playout_target_seconds",
			Help:    "Jitter-buffer targets live pages set to wait for detection results (0: none), one observation per report, by camera.",
			Buckets: []float64{0, .025, .05, .075, .1, .15, .2, .3, .4, .6, 1, 2, 4},
		}, []string{"camera"}),
	}
	reg.MustRegister(m.boxes, m.target)
	return m
}

func (s *Server) overlayRoutes() []route {
	return []route{
		{Method: "POST", Path: "/api/v1/cameras/:id/overlay-stats", Summary: "Report a live page's detection boxes (exact, late, dropped) and playout delay, for metrics",
			Handler: s.reportOverlay, Request: "OverlayReport", Statuses: []int{204, 400, 404, 413}, Role: rest.RoleViewer, BodyLimit: 1024},
	}
}

func overlaySchemas() map[string]any {
	count := map[string]any{"type": "integer", "format": "int64", "minimum": 0, "maximum": maxOverlayCount}
	target := map[string]any{"type": "number", "minimum": 0, "maximum": maxPlayoutTargetMs, "nullable": true}
	return map[string]any{
		"OverlayReport": obj(map[string]any{"exact": count, "late": count, "dropped": count, "playout_target_ms": target}, "exact", "late", "dropped"),
	}
}

func (s *Server) reportOverlay(c *fiber.Ctx) error {
	id, err := pathID(c)
	if err != nil {
		return writeError(c, err)
	}
	var in overlayReport
	if err := decodeStrict(c.Body(), &in); err != nil {
		return writeError(c, err)
	}
	for _, f := range []struct {
		name string
		v    int64
	}{{"exact", in.Exact}, {"late", in.Late}, {"dropped", in.Dropped}} {
		if f.v < 0 || f.v > maxOverlayCount {
			return writeError(c, invalidf("%s %d: want 0…%d", f.name, f.v, maxOverlayCount))
		}
	}
	if t := in.PlayoutTargetMs; t != nil && !(*t >= 0 && *t <= maxPlayoutTargetMs) {
		return writeError(c, invalidf("playout_target_ms %v: want 0…%d", *t, maxPlayoutTargetMs))
	}
	// Only existing cameras get a label, so reports cannot grow the series.
	if _, _, err := s.cameras.get(c.UserContext(), id); err != nil {
		return writeError(c, err)
	}
	m := s.metrics.overlay
	m.boxes.WithLabelValues(id, "exact").Add(float64(in.Exact))
	m.boxes.WithLabelValues(id, "late").Add(float64(in.Late))
	m.boxes.WithLabelValues(id, "dropped").Add(float64(in.Dropped))
	if in.PlayoutTargetMs != nil {
		m.target.WithLabelValues(id).Observe(*in.PlayoutTargetMs / 1000)
	}
	return c.SendStatus(fiber.StatusNoContent)
}
