package server

import (
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestEventsPages opens the web UI on the demo camera: the events page
// lists person events with crop thumbnails that load, a click opens the
// snapshot (the whole frame), and the camera's live page lists its recent
// events beside the zone editor.
func TestEventsPages(t *testing.T) {
	needBrowser(t)
	cfg := testConfig(t.TempDir())
	cfg.Demo = true
	ts := startServer(t, cfg)
	tab, cancel := chromedp.NewContext(newBrowser(t))
	defer cancel()
	if err := chromedp.Do(tab, chromedp.Navigate(ts.base+"/events")); err != nil {
		t.Fatalf("navigate: %v", err)
	}
	cards := `Array.from(document.querySelectorAll('[data-testid="event-card"] img'))`
	waitJS(t, tab, cards+`.filter((i) => i.complete && i.naturalWidth > 0).length >= 1`, 60*time.Second)
	if _, err := chromedp.Run(tab, chromedp.Evaluate[bool](`document.querySelector('[data-testid="event-card"]').click(), true`)); err != nil {
		t.Fatal(err)
	}
	snap := `document.querySelector('img[data-testid="event-snapshot"]')`
	waitJS(t, tab, snap+` && `+snap+`.complete && `+snap+`.naturalWidth > 0`, 15*time.Second)
	w, err := chromedp.Run(tab, chromedp.Evaluate[int](snap+`.naturalWidth`))
	if err != nil || w < 320 {
		t.Fatalf("snapshot %d px wide (%v): want the whole frame", w, err)
	}
	if err := chromedp.Do(tab, chromedp.Navigate(ts.base+"/cameras/demo")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, tab, `document.querySelectorAll('[data-testid="recent-event"]').length >= 1 && !!document.querySelector('[data-testid="zone-canvas"]')`, 30*time.Second)
}
