package server

import (
	"bytes"
	"encoding/json"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestExecutionsPage uploads three real images as one batch through the REST
// API and follows the execution on its web page: the page's progress (fed
// by the SSE stream) must reach done 3/3 and show the three output images.
func TestExecutionsPage(t *testing.T) {
	needBrowser(t)
	dir := "/usr/share/doc/opencv-doc/examples/data"
	names := []string{"messi5.jpg", "apple.jpg", "HappyFish.jpg"}
	imgs := make([][]byte, len(names))
	for i, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Skipf("opencv-doc not installed: %v", err)
		}
		imgs[i] = b
	}
	ts := startServer(t, testConfig(t.TempDir()))
	if st, body, _ := ts.do("POST", "/api/v1/pipelines", "", pipelineBody("thumbs", step("a", "resize", map[string]any{"width": 200}))); st != 201 {
		t.Fatalf("pipeline: %d %s", st, body)
	}

	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	_ = w.WriteField("pipeline", "thumbs")
	for i, n := range names {
		fw, err := w.CreateFormFile("files", n)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = fw.Write(imgs[i])
	}
	_ = w.Close()
	resp, err := http.Post(ts.base+"/api/v1/executions", w.FormDataContentType(), &buf)
	if err != nil {
		t.Fatal(err)
	}
	var created struct {
		ID     string `json:"id"`
		Events string `json:"events"`
	}
	err = json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 202 || created.ID == "" {
		t.Fatalf("upload: %d %v %+v", resp.StatusCode, err, created)
	}

	tab, cancel := chromedp.NewContext(newBrowser(t))
	defer cancel()
	if err := chromedp.Do(tab, chromedp.Navigate(ts.base+"/executions/"+created.ID)); err != nil {
		t.Fatalf("navigate: %v", err)
	}
	waitJS(t, tab, `window.__ifc && window.__ifc.page === 'execution' && window.__ifc.id === `+jsString(created.ID)+
		` && window.__ifc.state === 'done' && window.__ifc.done === 3 && window.__ifc.total === 3`, 30*time.Second)
	// The stream, not only the first record read, must have carried progress.
	if n, err := chromedp.Run(tab, chromedp.Evaluate[int](`window.__ifc.events`)); err != nil || n < 1 {
		t.Fatalf("progress events received by the page: %d (%v)", n, err)
	}
	thumbs := `Array.from(document.querySelectorAll('img[data-testid="execution-thumb"]'))`
	waitJS(t, tab, thumbs+`.filter((i) => i.complete && i.naturalWidth > 0).length === 3`, 15*time.Second)
	// resize to width 200 keeps the aspect ratio: every output is 200 wide.
	widths, err := chromedp.Run(tab, chromedp.Evaluate[[]int](thumbs+`.map((i) => i.naturalWidth)`))
	if err != nil {
		t.Fatal(err)
	}
	for i, wd := range widths {
		if wd != 200 {
			t.Errorf("thumbnail %d is %d px wide, want the resized 200", i, wd)
		}
	}
	rows, err := chromedp.Run(tab, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('[data-testid="execution-file"]')).map((r) => r.dataset.state)`))
	if err != nil || len(rows) != 3 {
		t.Fatalf("file rows: %v (%v)", rows, err)
	}
	for i, s := range rows {
		if s != "done" {
			t.Errorf("file %d shows state %q, want done", i, s)
		}
	}
	if ok, err := chromedp.Run(tab, chromedp.Evaluate[bool](`!!document.querySelector('a[data-testid="execution-zip"][href$="/results.zip"]') && !document.querySelector('[data-testid="execution-cancel"]')`)); err != nil || !ok {
		t.Errorf("finished page should offer the zip and no Cancel (%v)", err)
	}
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
