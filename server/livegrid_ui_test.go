package server

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestLiveGridPlaysAndPausesOffscreen opens /live with four cameras: every
// tile decodes frames at once; a click focuses one tile; tiles scrolled out
// of view end their WHEP session on the server (DELETE counted in
// /metrics) and start again when they come back.
func TestLiveGridPlaysAndPausesOffscreen(t *testing.T) {
	needBrowser(t)
	if _, err := os.Stat(demoVideo); err != nil {
		t.Skipf("opencv-doc not installed: %v", err)
	}
	cfg := testConfig(t.TempDir())
	cfg.Demo = true
	ts := startServer(t, cfg)
	for _, id := range []string{"cam2", "cam3", "cam4"} {
		if st, b, _ := ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": id, "source": "file://" + demoVideo}); st != 201 {
			t.Fatalf("camera %s: %d %s", id, st, b)
		}
	}
	ids := []string{DemoCamera, "cam2", "cam3", "cam4"}
	for _, id := range ids {
		waitCameraOnline(t, ts, id)
	}

	tab, cancel := chromedp.NewContext(newBrowser(t))
	defer cancel()
	tab, cancelTime := context.WithTimeout(tab, 3*time.Minute)
	defer cancelTime()
	if err := chromedp.Do(tab, chromedp.EmulateViewport(1400, 900), chromedp.Navigate(ts.base+"/live")); err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, id := range ids {
		all = append(all, fmt.Sprintf(`(window.__ifc.tiles[%q]?.framesDecoded ?? 0) > 10`, id))
	}
	waitJS(t, tab, `window.__ifc && window.__ifc.page === 'live-grid' && `+strings.Join(all, " && "), 90*time.Second)
	got, _ := chromedp.Run(tab, chromedp.Evaluate[string](`JSON.stringify(window.__ifc.tiles)`))
	t.Logf("tiles: %s", got)
	time.Sleep(time.Second) // a few boxes on the demo tile for the screenshot
	screenshot(t, tab, "live-grid")

	// Click focuses one tile; a second click goes back to the grid.
	if err := chromedp.Do(tab, chromedp.Click(`[data-testid="live-tile"][data-camera-id="cam3"] video`)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, tab, `document.querySelectorAll('[data-testid="live-tile"]').length === 1 && document.querySelector('[data-testid="live-tile"]').dataset.cameraId === 'cam3'`, 10*time.Second)
	if err := chromedp.Do(tab, chromedp.Click(`[data-testid="live-tile"] video`)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, tab, `document.querySelectorAll('[data-testid="live-tile"]').length === 4 && Object.values(window.__ifc.tiles).every((x) => x.state === 'connected')`, 30*time.Second)

	// A window too short for the second row: its tiles end their sessions.
	// A DELETE may find its session already gone (404): the page closes
	// the peer connection first, and the server may notice that first.
	// Either way the tile ended its session.
	deletes := func() int {
		_, b, _ := ts.do("GET", "/metrics", "", nil)
		total := 0
		for _, l := range strings.Split(string(b), "\n") {
			for _, status := range []string{"200", "404"} {
				if strings.HasPrefix(l, `imageflow_http_requests_total{method="DELETE",route="/api/v1/cameras/:id/whep/:session",status="`+status+`"}`) {
					n := 0
					_, _ = fmt.Sscanf(l[strings.LastIndexByte(l, ' ')+1:], "%d", &n)
					total += n
				}
			}
		}
		return total
	}
	before := deletes()
	if err := chromedp.Do(tab, chromedp.EmulateViewport(1400, 250)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, tab, `Object.values(window.__ifc.tiles).filter((x) => x.state === 'paused').length === 2`, 20*time.Second)
	deadline := time.Now().Add(15 * time.Second)
	for deletes() < before+2 {
		if time.Now().After(deadline) {
			_, b, _ := ts.do("GET", "/metrics", "", nil)
			var lines []string
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, "whep") && strings.HasPrefix(l, "imageflow_http_requests_total") {
					lines = append(lines, l)
				}
			}
			tiles, _ := chromedp.Run(tab, chromedp.Evaluate[string](`JSON.stringify(window.__ifc.tiles)`))
			t.Fatalf("WHEP sessions ended on the server: %d, want %d\n%s\n%s", deletes()-before, 2, strings.Join(lines, "\n"), tiles)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := chromedp.Do(tab, chromedp.EmulateViewport(1400, 900)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, tab, `Object.values(window.__ifc.tiles).every((x) => x.state === 'connected') && Object.values(window.__ifc.tiles).filter((x) => x.sessions >= 3).length === 2`, 30*time.Second)
}
