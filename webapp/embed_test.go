package webapp

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"
)

func do(t *testing.T, h http.Handler, method, target string) *http.Response {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec.Result()
}

func body(t *testing.T, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

const testIndex = `<!doctype html><html><head><script type="module" src="/assets/index-abc123.js"></script></head><body><div id="root"></div></body></html>`

func builtFS() fstest.MapFS {
	return fstest.MapFS{
		"index.html":              {Data: []byte(testIndex)},
		"assets/index-abc123.js":  {Data: []byte("console.log('ifc')")},
		"assets/index-abc123.css": {Data: []byte("body{}")},
		"favicon.svg":             {Data: []byte("<svg xmlns='http://www.w3.org/2000/svg'/>")},
	}
}

func TestSPAServesFilesAndFallsBack(t *testing.T) {
	h := newHandler(builtFS())

	for _, p := range []string{"/", "/index.html", "/cameras/demo", "/publish/phone", "/executions", "/executions/42/steps", "/../../etc/passwd", "/some/dir/"} {
		res := do(t, h, http.MethodGet, p)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: status %d", p, res.StatusCode)
		}
		if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Errorf("GET %s: content type %q", p, ct)
		}
		if b := body(t, res); b != testIndex {
			t.Errorf("GET %s: body is not index.html: %q", p, b)
		}
		if cc := res.Header.Get("Cache-Control"); cc != "no-cache" {
			t.Errorf("GET %s: Cache-Control %q", p, cc)
		}
	}

	res := do(t, h, http.MethodGet, "/assets/index-abc123.js")
	if res.StatusCode != http.StatusOK || body(t, res) != "console.log('ifc')" {
		t.Fatalf("asset: status %d", res.StatusCode)
	}
	if ct := res.Header.Get("Content-Type"); !strings.Contains(ct, "javascript") {
		t.Errorf("asset content type %q", ct)
	}
	if cc := res.Header.Get("Cache-Control"); !strings.Contains(cc, "immutable") {
		t.Errorf("asset Cache-Control %q", cc)
	}
	if res := do(t, h, http.MethodGet, "/assets/index-abc123.css"); !strings.HasPrefix(res.Header.Get("Content-Type"), "text/css") {
		t.Errorf("css content type %q", res.Header.Get("Content-Type"))
	}
	if res := do(t, h, http.MethodGet, "/favicon.svg"); res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "image/svg") {
		t.Errorf("favicon: %d %q", res.StatusCode, res.Header.Get("Content-Type"))
	}

	if res := do(t, h, http.MethodGet, "/assets/gone-000.js"); res.StatusCode != http.StatusNotFound {
		t.Errorf("missing asset: status %d, want 404", res.StatusCode)
	}
	for _, p := range []string{"/api", "/api/", "/api/v1/cameras", "/api/v1/unknown"} {
		if res := do(t, h, http.MethodGet, p); res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404 (never the SPA)", p, res.StatusCode)
		}
	}
	if res := do(t, h, http.MethodPost, "/cameras/demo"); res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: status %d, want 405", res.StatusCode)
	}
	res = do(t, h, http.MethodHead, "/cameras/demo")
	if res.StatusCode != http.StatusOK || body(t, res) != "" {
		t.Errorf("HEAD: status %d", res.StatusCode)
	}
}

func TestNotBuiltPage(t *testing.T) {
	h := newHandler(fstest.MapFS{"placeholder.txt": {Data: []byte("x")}})
	for _, p := range []string{"/", "/cameras/demo", "/placeholder.txt"} {
		res := do(t, h, http.MethodGet, p)
		if res.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("GET %s: status %d, want 503", p, res.StatusCode)
		}
		if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Errorf("content type %q", ct)
		}
		b := body(t, res)
		if !strings.Contains(b, "<title>web UI not built") || !strings.Contains(b, "scripts/build-webapp.sh") {
			t.Errorf("GET %s: page does not explain the fix:\n%s", p, b)
		}
	}
	if res := do(t, h, http.MethodGet, "/cameras/<script>"); strings.Contains(body(t, res), "<script>") {
		t.Error("request path is not escaped")
	}
	if res := do(t, h, http.MethodGet, "/api/v1/cameras"); res.StatusCode != http.StatusNotFound {
		t.Errorf("/api/ while not built: status %d, want 404", res.StatusCode)
	}
}

// TestEmbedded checks the real embedded build in whatever state dist/ is.
func TestEmbedded(t *testing.T) {
	h := Handler()
	res := do(t, h, http.MethodGet, "/cameras/demo")
	b := body(t, res)
	if !Built() {
		if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(b, NotBuiltTitle) {
			t.Fatalf("not built: status %d body %q", res.StatusCode, b)
		}
		t.Log("dist/ui not built (run scripts/build-webapp.sh): checked the not-built page only")
		return
	}
	if res.StatusCode != http.StatusOK || !strings.Contains(b, `<div id="root">`) {
		t.Fatalf("built: GET /cameras/demo status %d body %q", res.StatusCode, b)
	}
	assets := regexp.MustCompile(`(?:src|href)="(/assets/[^"]+)"`).FindAllStringSubmatch(b, -1)
	if len(assets) == 0 {
		t.Fatalf("index.html references no /assets/ files:\n%s", b)
	}
	for _, m := range assets {
		if res := do(t, h, http.MethodGet, m[1]); res.StatusCode != http.StatusOK {
			t.Errorf("GET %s: status %d", m[1], res.StatusCode)
		}
	}
}
