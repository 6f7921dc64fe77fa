package server

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/imageflowcanvas/imageflow/webapp"
)

// needBrowser skips when Chromium or the built UI is missing on a developer
// machine; in CI (scripts/test.sh installs and builds both) it fails.
func needBrowser(t *testing.T) {
	t.Helper()
	_, err := exec.LookPath("chromium")
	missing := ""
	switch {
	case err != nil:
		missing = "chromium not installed"
	case !webapp.Built():
		missing = "web UI not built (scripts/build-webapp.sh)"
	}
	if missing == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s: scripts/test.sh should have set it up", missing)
	}
	t.Skip(missing)
}

// newBrowser starts headless Chromium with a fake camera; every call gets a
// new profile. Tabs are made with chromedp.NewContext(browserCtx).
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath("chromium"),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		// Loopback host candidates instead of mDNS names pion cannot resolve.
		chromedp.Flag("disable-features", "WebRtcHideLocalIpsWithMdns"),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	if err := chromedp.Do(bctx); err != nil {
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	return bctx
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
