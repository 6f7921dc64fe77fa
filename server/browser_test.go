package server

import (
	"context"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/imageflowcanvas/imageflow/internal/testkit"
	"github.com/imageflowcanvas/imageflow/webapp"
)

// needBrowser skips when Chromium or the built UI is missing on a developer
// machine; in CI (scripts/test.sh installs and builds both) it fails.
func needBrowser(t *testing.T) {
	t.Helper()
	testkit.NeedCommand(t, "chromium")
	if !webapp.Built() {
		testkit.Need(t, "web UI not built (scripts/build-webapp.sh)")
	}
}

// newBrowser starts headless Chromium with a fake camera; every call gets a
// new profile. Tabs are made with chromedp.NewContext(browserCtx).
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	ctx, _ := testkit.Chromium(t)
	return ctx
}

// pollJS reports whether a JavaScript boolean expression held within timeout.
func pollJS(ctx context.Context, expr string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr)); err == nil && ok {
			return true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return false
}

// waitJS polls a JavaScript boolean expression until it holds.
func waitJS(t *testing.T, ctx context.Context, expr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		if ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr)); err == nil && ok {
			return
		}
		last, _ = chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify(window.__ifc || null)`))
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s; window.__ifc = %v", expr, last)
}
