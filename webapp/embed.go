// Package webapp embeds the production build of the React UI (dist/ui, made
// by scripts/build-webapp.sh) and serves it as a single-page application.
//
// A Go build on a machine without Node still compiles: dist/placeholder.txt
// keeps the embed pattern matching, and Handler then answers with a 503 page
// saying how to build the UI.
package webapp

import (
	"bytes"
	"embed"
	"html"
	"io"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed all:dist
var distFS embed.FS

// uiDir is the Vite output directory inside dist.
const uiDir = "dist/ui"

func uiFS() fs.FS {
	sub, err := fs.Sub(distFS, uiDir)
	if err != nil { // only for an invalid path, which uiDir is not
		panic(err)
	}
	return sub
}

// Built reports whether the UI build (dist/ui/index.html) was embedded.
func Built() bool {
	_, err := fs.Stat(distFS, uiDir+"/index.html")
	return err == nil
}

// Handler serves the embedded UI: files by path, index.html for any other
// path outside /api/ (client-side routes such as /cameras/{id}), and a 503
// "web UI not built" page when the binary was built without the UI.
func Handler() http.Handler {
	return newHandler(uiFS())
}

// DocsPage is the path, inside the UI build, of the API page that renders
// the server's OpenAPI document (served at /api/docs).
const DocsPage = "docs/index.html"

// DocsHandler serves the API page (DocsPage) whatever the request path, or
// the "web UI not built" page when the binary was built without the UI.
func DocsHandler() http.Handler {
	page, err := fs.ReadFile(uiFS(), DocsPage)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err != nil {
			serveNotBuilt(w, r)
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeContent(w, r, "index.html", time.Time{}, bytes.NewReader(page))
	})
}

type spaHandler struct {
	fsys  fs.FS
	index []byte // nil when the UI is not built
}

// newHandler serves the single-page application rooted at fsys (the
// directory that holds index.html).
func newHandler(fsys fs.FS) http.Handler {
	h := &spaHandler{fsys: fsys}
	if b, err := fs.ReadFile(fsys, "index.html"); err == nil {
		h.index = b
	}
	return h
}

func (h *spaHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := path.Clean("/" + r.URL.Path)
	if p == "/api" || strings.HasPrefix(p, "/api/") {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
		return
	}
	if h.index == nil {
		serveNotBuilt(w, r)
		return
	}

	name := strings.TrimPrefix(p, "/")
	if name != "" && name != "index.html" {
		if f, err := h.fsys.Open(name); err == nil {
			st, serr := f.Stat()
			if serr == nil && !st.IsDir() {
				defer f.Close()
				if strings.HasPrefix(name, "assets/") {
					// Vite puts a content hash in every asset name.
					w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
				} else {
					w.Header().Set("Cache-Control", "no-cache")
				}
				serveFile(w, r, name, f)
				return
			}
			f.Close()
		}
		// A missing hashed asset is an error, not a client-side route:
		// answering it with index.html would only hide the 404.
		if strings.HasPrefix(name, "assets/") {
			http.NotFound(w, r)
			return
		}
	}
	w.Header().Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, "index.html", time.Time{}, bytes.NewReader(h.index))
}

func serveFile(w http.ResponseWriter, r *http.Request, name string, f fs.File) {
	if rs, ok := f.(io.ReadSeeker); ok {
		http.ServeContent(w, r, name, time.Time{}, rs)
		return
	}
	b, err := io.ReadAll(f)
	if err != nil {
		http.Error(w, "read error", http.StatusInternalServerError)
		return
	}
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(b))
}

// NotBuiltTitle is the title of the page served when the UI is not embedded.
const NotBuiltTitle = "web UI not built"

func serveNotBuilt(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusServiceUnavailable)
	if r.Method == http.MethodHead {
		return
	}
	_, _ = io.WriteString(w, notBuiltPage(r.URL.Path))
}

func notBuiltPage(reqPath string) string {
	return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>` + NotBuiltTitle + ` — ImageFlowCanvas</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;background:#f3f4f6;color:#111827}
header{background:#111827;color:#fff;padding:14px 20px;font-weight:700}
main{max-width:720px;margin:40px auto;padding:0 20px}
pre{background:#111827;color:#e5e7eb;padding:12px 16px;border-radius:6px;overflow:auto}
code{font-family:ui-monospace,Menlo,Consolas,monospace}
</style>
</head>
<body>
<header>ImageFlowCanvas</header>
<main>
<h1>` + NotBuiltTitle + `</h1>
<p>This binary was compiled without the web UI, so <code>` + html.EscapeString(reqPath) + `</code> cannot be shown.
The REST API (<code>/api/v1/…</code>), WHIP/WHEP and <code>/metrics</code> work as usual.</p>
<p>To include the UI, build it (needs Node.js 20.19+ and npm) and then rebuild the Go binary, which embeds <code>webapp/dist/ui</code>:</p>
<pre><code>scripts/build-webapp.sh
go build ./cmd/imageflow</code></pre>
</main>
</body>
</html>
`
}
