package server

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/imageflowcanvas/imageflow/internal/testkit"
)

// metricSum scrapes /metrics (with token, when not empty) and sums the
// samples of name whose labels contain every one of labels (`camera="demo"`).
func metricSum(t *testing.T, ts *testServer, token, name string, labels ...string) float64 {
	t.Helper()
	st, body, _ := ts.do("GET", "/metrics", token, nil)
	if st != 200 {
		t.Fatalf("/metrics: %d", st)
	}
	sum := 0.0
	line := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\{([^}]*)\} (\S+)$`)
	for _, m := range line.FindAllStringSubmatch(string(body), -1) {
		ok := true
		for _, l := range labels {
			if !regexp.MustCompile(`(^|,)` + regexp.QuoteMeta(l) + `(,|$)`).MatchString(m[1]) {
				ok = false
			}
		}
		if v, err := strconv.ParseFloat(m[2], 64); ok && err == nil {
			sum += v
		}
	}
	return sum
}

// A live page's report lands in the metrics of its camera; bad reports get
// 400 and count nothing, unknown cameras 404, and a token is needed when
// auth is on (a viewer's is enough).
func TestOverlayStatsReport(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.APIKeys = []APIKey{{Role: "viewer", SHA256: sha("v")}, {Role: "operator", SHA256: sha("o")}}
	ts := startServer(t, cfg)
	if st, body, _ := ts.do("POST", "/api/v1/cameras", "o", map[string]any{"id": "gate", "source": "publish"}); st != 201 {
		t.Fatalf("camera: %d %s", st, body)
	}
	const path = "/api/v1/cameras/gate/overlay-stats"
	if st, body, _ := ts.do("POST", path, "", map[string]any{"exact": 1, "late": 0, "dropped": 0}); st != 401 {
		t.Fatalf("without a token: %d %s", st, body)
	}
	if st, body, _ := ts.do("POST", path, "v", map[string]any{"exact": 19, "late": 1, "dropped": 2, "playout_target_ms": 96}); st != 204 {
		t.Fatalf("report: %d %s", st, body)
	}
	if st, body, _ := ts.do("POST", path, "v", map[string]any{"exact": 1, "late": 0, "dropped": 0}); st != 204 {
		t.Fatalf("report without a target: %d %s", st, body)
	}
	for _, c := range []struct {
		body any
		want string
	}{
		{map[string]any{"exact": -1, "late": 0, "dropped": 0}, "exact -1"},
		{map[string]any{"exact": 0, "late": 2_000_000, "dropped": 0}, "late 2000000"},
		{map[string]any{"exact": 0, "late": 0, "dropped": 0, "playout_target_ms": 4001}, "playout_target_ms"},
		{map[string]any{"exact": 0, "late": 0, "dropped": 0, "playout_target_ms": -5}, "playout_target_ms"},
		{map[string]any{"exact": 1.5, "late": 0, "dropped": 0}, ""},
		{map[string]any{"exact": 1, "late": 0, "dropped": 0, "extra": 1}, "extra"},
		{"not json", ""},
	} {
		st, body, _ := ts.do("POST", path, "v", c.body)
		expectError(t, st, body, 400, c.want)
	}
	st, body, _ := ts.do("POST", "/api/v1/cameras/nope/overlay-stats", "v", map[string]any{"exact": 1, "late": 0, "dropped": 0})
	expectError(t, st, body, 404, "nope")
	st, body, _ = ts.do("POST", "/api/v1/cameras/a.b/overlay-stats", "v", map[string]any{"exact": 1, "late": 0, "dropped": 0})
	expectError(t, st, body, 400, "a.b")

	metricsOf := func(outcome string) float64 {
		return metricSum(t, ts, "v", "imageflow_live_overlay_boxes_total", `camera="gate"`, `outcome="`+outcome+`"`)
	}
	if e, l, d := metricsOf("exact"), metricsOf("late"), metricsOf("dropped"); e != 20 || l != 1 || d != 2 {
		t.Fatalf("boxes exact/late/dropped = %v/%v/%v, want 20/1/2", e, l, d)
	}
	if n := metricSum(t, ts, "v", "imageflow_live_overlay_boxes_total", `camera="nope"`); n != 0 {
		t.Fatalf("an unknown camera got a series: %v", n)
	}
	if n := metricSum(t, ts, "v", "imageflow_live_playout_target_seconds_count", `camera="gate"`); n != 1 {
		t.Fatalf("playout target observations = %v, want 1", n)
	}
	if s := metricSum(t, ts, "v", "imageflow_live_playout_target_seconds_sum", `camera="gate"`); s < 0.0959 || s > 0.0961 {
		t.Fatalf("playout target sum = %v s, want 0.096", s)
	}
}

// liveState is the part of the live page's window.__ifc this test reads.
type liveState struct {
	FramesDecoded       int     `json:"framesDecoded"`
	ResultsReceived     int     `json:"resultsReceived"`
	BoxesExact          int     `json:"boxesExact"`
	BoxesLate           int     `json:"boxesLate"`
	BoxesDropped        int     `json:"boxesDropped"`
	LateFrames          int     `json:"lateFrames"`
	PlayoutTargetMs     *int    `json:"playoutTargetMs"`
	JitterBufferTarget  *int    `json:"jitterBufferTarget"`
	JitterBufferDelayMs *int    `json:"jitterBufferDelayMs"`
	LagP95Ms            float64 `json:"lagP95Ms"`
	LagSamples          int     `json:"lagSamples"`
	ResultsExpected     bool    `json:"resultsExpected"`
	Draws               []struct {
		FrameRTP  uint32 `json:"frameRtp"`
		ResultRTP uint32 `json:"resultRtp"`
		Late      bool   `json:"late"`
	} `json:"draws"`
}

func pageState(t *testing.T, tab context.Context) liveState {
	t.Helper()
	raw, err := chromedp.Run(tab, chromedp.Evaluate[string](`JSON.stringify(window.__ifc)`))
	if err != nil {
		t.Fatal(err)
	}
	var s liveState
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		t.Fatalf("window.__ifc: %v: %s", err, raw)
	}
	return s
}

// silentWrongFrames counts drawn frames whose boxes belong to another frame
// without being marked late and without being the hold of a result first
// drawn on its own frame (the boxes of a 5 fps detector stay up until the
// next result). Draws whose first appearance scrolled out of the page's
// record are not judged.
func silentWrongFrames(s liveState) (judged, wrong int) {
	exactShown := map[uint32]bool{}
	for _, d := range s.Draws {
		if d.FrameRTP == d.ResultRTP {
			exactShown[d.ResultRTP] = true
			judged++
			continue
		}
		if d.Late {
			judged++
			continue
		}
		if d.ResultRTP == s.Draws[0].ResultRTP && !exactShown[d.ResultRTP] {
			// The page's record starts in the middle of this result's
			// hold: its exact draw came before the record (ci5 counted
			// the second such frame as wrong).
			continue
		}
		judged++
		if !exactShown[d.ResultRTP] {
			wrong++
		}
	}
	return judged, wrong
}

// TestLivePlayoutDelay: in headless Chromium, a camera without a pipeline
// plays with a jitter-buffer target of 0; the demo camera's page learns the
// detector's lag, holds video just that long, and draws at least 95% of its
// boxes on the frame whose RTP timestamp they carry; with the target capped
// at 0 the results come late and are counted and drawn marked late, never
// silently on the wrong frame. The counts reach /metrics.
func TestLivePlayoutDelay(t *testing.T) {
	needBrowser(t)
	cfg := testConfig(t.TempDir())
	cfg.Demo = true
	ts := startServer(t, cfg)
	waitCameraOnline(t, ts, DemoCamera)
	var demo cameraView
	if st, body, _ := ts.do("GET", "/api/v1/cameras/"+DemoCamera, "", nil); st != 200 || jsonInto(body, &demo) != nil {
		t.Fatalf("demo camera: %d %s", st, body)
	}
	browser := newBrowser(t)

	t.Run("no pipeline plays with target 0", func(t *testing.T) {
		// The demo's video, without a pipeline.
		if st, body, _ := ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": "plain", "source": demo.Source}); st != 201 {
			t.Fatalf("camera: %d %s", st, body)
		}
		waitCameraOnline(t, ts, "plain")
		tab, cancel := chromedp.NewContext(browser)
		defer cancel()
		if err := chromedp.Do(tab, chromedp.Navigate(ts.base+"/cameras/plain")); err != nil {
			t.Fatal(err)
		}
		waitJS(t, tab, `!!(window.__ifc && window.__ifc.framesDecoded > 20 && window.__ifc.playoutTargetMs !== null)`, 60*time.Second)
		s := pageState(t, tab)
		if s.ResultsExpected || s.PlayoutTargetMs == nil || *s.PlayoutTargetMs != 0 || s.JitterBufferTarget == nil || *s.JitterBufferTarget != 0 {
			t.Fatalf("camera without a pipeline: resultsExpected %v, target %v, receiver jitterBufferTarget %v; want false, 0, 0",
				s.ResultsExpected, deref(s.PlayoutTargetMs), deref(s.JitterBufferTarget))
		}
		t.Logf("no pipeline: %d frames, jitterBufferTarget %d ms", s.FramesDecoded, *s.JitterBufferTarget)
		// The metrics hear of it: a report with target 0.
		testkit.WaitFor(t, 20*time.Second, "the plain page's report", func() bool {
			return metricSum(t, ts, "", "imageflow_live_playout_target_seconds_count", `camera="plain"`) > 0
		})
		if s := metricSum(t, ts, "", "imageflow_live_playout_target_seconds_sum", `camera="plain"`); s != 0 {
			t.Fatalf("plain camera's reported targets sum to %v s, want 0", s)
		}
		// Its encoder would take CPU from the demo's detector below.
		if st, body, _ := ts.do("DELETE", "/api/v1/cameras/plain", "", nil); st != 204 {
			t.Fatalf("delete camera: %d %s", st, body)
		}
	})

	t.Run("demo boxes on their frames", func(t *testing.T) {
		tab, cancel := chromedp.NewContext(browser)
		defer cancel()
		// The default ceiling (400 ms, the fixed hold this page used to
		// have) caps what a viewer waits; a loaded test machine's detector
		// can lag more than that, and this checks the adaptation, not the
		// cap. By definition 5% of results lag more than the p95; on a
		// loaded machine the tail is long, so the margin above the p95 is
		// 100 ms here rather than the default 20.
		if err := chromedp.Do(tab, chromedp.Navigate(ts.base+"/cameras/"+DemoCamera+"?playout_ceiling=2000&playout_margin=100")); err != nil {
			t.Fatal(err)
		}
		// Learn first: enough lag samples, the target set from them, and
		// the browser given a few seconds to build that delay up.
		// The browser moves its delay towards a new target gradually; the
		// count starts once it holds frames about as long as asked.
		waitJS(t, tab, `!!(window.__ifc && window.__ifc.lagSamples >= 15 && window.__ifc.playoutTargetMs > 0)`, 90*time.Second)
		// The target follows the lag, so on a loaded machine the browser
		// may chase it without ever holding 90% of it: count anyway after
		// a while (the windows below are what the test judges).
		if !pollJS(tab, `window.__ifc.jitterBufferDelayMs >= 0.9 * window.__ifc.playoutTargetMs`, 30*time.Second) {
			t.Logf("the browser's delay did not reach 90%% of the target within 30 s; counting anyway")
		}
		// A burst of load on a shared machine makes results lag beyond any
		// delay learned before it; such a window is measured again, up to
		// three windows of 40 boxes.
		var s2 liveState
		share := 0.0
		for window := 1; window <= 3 && share < 0.95; window++ {
			s1 := pageState(t, tab)
			waitJS(t, tab, fmt.Sprintf(`window.__ifc.boxesExact + window.__ifc.boxesLate >= %d`, s1.BoxesExact+s1.BoxesLate+40), 120*time.Second)
			s2 = pageState(t, tab)
			exact, late, dropped := s2.BoxesExact-s1.BoxesExact, s2.BoxesLate-s1.BoxesLate, s2.BoxesDropped-s1.BoxesDropped
			share = float64(exact) / float64(exact+late)
			t.Logf("demo, window %d: target %d ms, held %d ms (lag p95 %.0f ms over %d results); %d boxes exact, %d late, %d dropped: %.1f%% on their frame",
				window, deref(s2.PlayoutTargetMs), deref(s2.JitterBufferDelayMs), s2.LagP95Ms, s2.LagSamples, exact, late, dropped, 100*share)
		}
		if share < 0.95 {
			t.Errorf("%.1f%% of drawn boxes on the frame whose RTP timestamp they carry, want at least 95%%", 100*share)
		}
		if s2.JitterBufferTarget == nil || *s2.JitterBufferTarget != *s2.PlayoutTargetMs {
			t.Errorf("receiver jitterBufferTarget %v, the page asked for %v", deref(s2.JitterBufferTarget), deref(s2.PlayoutTargetMs))
		}
		if judged, wrong := silentWrongFrames(s2); wrong != 0 || judged == 0 {
			t.Errorf("%d of %d drawn frames carry another frame's boxes unmarked", wrong, judged)
		}
		testkit.WaitFor(t, 20*time.Second, "the demo page's report", func() bool {
			return metricSum(t, ts, "", "imageflow_live_overlay_boxes_total", `camera="demo"`, `outcome="exact"`) > 0
		})
	})

	t.Run("late results are counted and marked", func(t *testing.T) {
		tab, cancel := chromedp.NewContext(browser)
		defer cancel()
		// No hold at all: every result arrives after its frame was shown.
		if err := chromedp.Do(tab, chromedp.Navigate(ts.base+"/cameras/"+DemoCamera+"?playout_ceiling=0&late_max_age=1000")); err != nil {
			t.Fatal(err)
		}
		waitJS(t, tab, `!!(window.__ifc && window.__ifc.boxesLate >= 10 && window.__ifc.lateFrames > 0 && window.__ifc.playoutTargetMs !== null)`, 120*time.Second)
		s := pageState(t, tab)
		t.Logf("target capped at 0: boxes exact %d, late %d, dropped %d; %d frames drawn late", s.BoxesExact, s.BoxesLate, s.BoxesDropped, s.LateFrames)
		if deref(s.PlayoutTargetMs) != 0 {
			t.Errorf("target %d with a ceiling of 0", deref(s.PlayoutTargetMs))
		}
		if judged, wrong := silentWrongFrames(s); wrong != 0 || judged == 0 {
			t.Errorf("%d of %d drawn frames carry another frame's boxes unmarked", wrong, judged)
		}
		testkit.WaitFor(t, 20*time.Second, "late boxes in the metrics", func() bool {
			return metricSum(t, ts, "", "imageflow_live_overlay_boxes_total", `camera="demo"`, `outcome="late"`) > 0
		})
	})
}

func deref(p *int) int {
	if p == nil {
		return -1
	}
	return *p
}

// TestSilentWrongFramesJudge: the judge of TestLivePlayoutDelay skips a hold
// whose exact draw came before the page's record, however many frames it
// lasts, and still counts a result drawn unmarked on another frame.
func TestSilentWrongFramesJudge(t *testing.T) {
	var s liveState
	add := func(frame, result uint32, late bool) {
		s.Draws = append(s.Draws, struct {
			FrameRTP  uint32 `json:"frameRtp"`
			ResultRTP uint32 `json:"resultRtp"`
			Late      bool   `json:"late"`
		}{frame, result, late})
	}
	add(9000, 0, false) // the record starts in 0's hold
	add(18000, 0, false)
	add(27000, 27000, false)
	add(36000, 27000, false) // a hold of an exact draw
	add(45000, 36000, true)  // late, marked
	if judged, wrong := silentWrongFrames(s); judged != 3 || wrong != 0 {
		t.Fatalf("judged %d, wrong %d; want 3, 0", judged, wrong)
	}
	add(54000, 50000, false) // never shown on its own frame, unmarked
	if _, wrong := silentWrongFrames(s); wrong != 1 {
		t.Fatalf("wrong %d, want 1", wrong)
	}
}
