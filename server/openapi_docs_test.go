package server

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// /api/docs renders the served OpenAPI document in headless Chromium: one
// entry per documented operation, the document fetched with the token from
// ?token=, and every file loaded from the server itself.
func TestDocsPageListsOperations(t *testing.T) {
	needBrowser(t)
	cfg := testConfig(t.TempDir())
	cfg.APIKeys = []APIKey{{Role: "viewer", SHA256: sha("docs-viewer")}}
	ts := startServer(t, cfg)
	doc, err := validateOpenAPI(servedDocument(t, ts, "docs-viewer"))
	if err != nil {
		t.Fatal(err)
	}
	ops := 0
	for _, item := range doc.Paths.Map() {
		ops += len(item.Operations())
	}

	// The page itself is open (it holds no data); the document is not.
	if st, body, _ := ts.do("GET", "/api/docs", "", nil); st != 200 || !strings.Contains(string(body), "swagger-ui-bundle.js") {
		t.Fatalf("/api/docs: %d %.200s", st, body)
	}
	if st, _, _ := ts.do("GET", "/api/v1/openapi.json", "", nil); st != 401 {
		t.Fatalf("openapi.json without a token: %d, want 401", st)
	}

	tab, cancel := chromedp.NewContext(newBrowser(t))
	defer cancel()
	if err := chromedp.Do(tab, chromedp.Navigate(ts.base+"/api/docs?token=docs-viewer")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, tab, `document.querySelectorAll('.opblock').length > 0`, 30*time.Second)
	shown, err := chromedp.Run(tab, chromedp.Evaluate[int](`document.querySelectorAll('.opblock').length`))
	if err != nil {
		t.Fatal(err)
	}
	if shown != ops {
		t.Errorf("the page lists %d operations, the document has %d", shown, ops)
	}
	text, err := chromedp.Run(tab, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ImageFlowCanvas API", "/api/v1/cameras/{id}/whep", "List cameras", "/api/v1/executions/{id}/events"} {
		if !strings.Contains(text, want) {
			t.Errorf("the page does not show %q", want)
		}
	}
	// Nothing comes from elsewhere: every resource the page loaded is the server's.
	urls, err := chromedp.Run(tab, chromedp.Evaluate[[]string](`performance.getEntriesByType('resource').map(e => e.name)`))
	if err != nil {
		t.Fatal(err)
	}
	if len(urls) < 3 {
		t.Errorf("only %d resources loaded: %v", len(urls), urls)
	}
	for _, u := range urls {
		if !strings.HasPrefix(u, ts.base+"/") {
			t.Errorf("the page loaded %s from elsewhere", u)
		}
	}
	// The token went from the address into storage, not into history.
	if loc, _ := chromedp.Run(tab, chromedp.Evaluate[string](`location.href`)); strings.Contains(loc, "token=") {
		t.Errorf("the token stays in the address: %s", loc)
	}
	// IFC_SCREENSHOT=file.png keeps a picture of the page for a person to look at.
	if out := os.Getenv("IFC_SCREENSHOT"); out != "" {
		if png, err := chromedp.Run(tab, chromedp.FullScreenshot(100)); err == nil {
			_ = os.WriteFile(out, png, 0o644)
		}
	}
}

// servedDocument fetches the OpenAPI document from ts with token.
func servedDocument(t *testing.T, ts *testServer, token string) []byte {
	t.Helper()
	st, body, _ := ts.do("GET", "/api/v1/openapi.json", token, nil)
	if st != 200 {
		t.Fatalf("openapi.json: %d %s", st, body)
	}
	return body
}
