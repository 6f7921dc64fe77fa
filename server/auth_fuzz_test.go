package server

import (
	"io"
	"log/slog"
	"net/url"
	"sync"
	"testing"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/imageflowcanvas/imageflow/server/batch"
	"github.com/imageflowcanvas/imageflow/server/rest"
)

const (
	fuzzAdmin  = "fuzz-admin-0123456789"
	fuzzViewer = "fuzz-viewer-0123456789"
)

// guardHarness is the server's real route table and guard with every
// handler replaced by one that records which route it belongs to.
type guardHarness struct {
	handle  fasthttp.RequestHandler
	reached *route
}

var (
	harnessOnce sync.Once
	harness     *guardHarness
)

func newGuardHarness() *guardHarness {
	harnessOnce.Do(func() {
		cfg := Defaults()
		cfg.APITokens = []string{fuzzAdmin}
		cfg.APIKeys = []APIKey{{Role: "viewer", SHA256: sha(fuzzViewer)}}
		cfg.MetricsAuth = true
		cfg.RateLimit, cfg.AuthFailuresPerMinute = 0, 0
		s := &Server{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
		s.keys = newKeyring(&s.Config)
		s.metrics = newMetrics(prometheus.NewRegistry(), nil)
		h := &guardHarness{}
		routes := append(s.appRoutes(), (&batch.Manager{}).Routes()...)
		for i := range routes {
			r := routes[i]
			routes[i].Handler = func(c *fiber.Ctx) error {
				h.reached = &r
				return c.SendStatus(299)
			}
		}
		h.handle = s.buildApp(routes).Handler()
		harness = h
	})
	return harness
}

// roleOfCredential is what a request carrying cred may do.
func roleOfCredential(cred uint8) rest.Role {
	switch cred % 4 {
	case 1, 3:
		return rest.RoleViewer
	}
	return rest.RoleNone
}

// FuzzGuard checks path normalisation and the auth decision together: for
// any method and request target, a handler that is not open runs only when
// the credential sent has the role its route needs. cred: 0 none, 1 viewer
// header, 2 wrong token, 3 viewer in ?token=.
func FuzzGuard(f *testing.F) {
	n := 0
	for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "get", "Post"} {
		for _, p := range []string{
			"/api/v1/cameras", "/API/v1/cameras", "/Api/V1/Cameras/demo", "/api/v1/cameras/", "/api/v1//cameras",
			"/api/v1/cameras/demo/whep", "/API/v1/cameras/demo/whep", "/api/v1/cameras/demo/whip", "/api/v1/executions",
			"/api/v1/executions/x/ws", "/api/v1/executions/x/events", "/api/v1/cameras/ws", "/metrics", "/METRICS",
			"/metrics/", "/api/v1/health", "/api/v1/%63ameras", "/api/v1/./cameras", "/api/v1/x/../cameras",
			"/%2e%2e/api/v1/cameras", "http://host/api/v1/cameras", "/index.html", "/cameras/demo", "//api/v1/cameras",
			"/api/v1/cameras%2f", "/api/v1/pipelines/p", "/api/v1/openapi.json", "/api/v1/cameras;x", "*",
		} {
			// The credential cycles; the fuzzer mutates it too.
			f.Add(m, p, uint8(n%4))
			n++
		}
	}
	h := newGuardHarness()
	f.Fuzz(func(t *testing.T, method, target string, cred uint8) {
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetMethod(method)
		switch cred % 4 {
		case 1:
			ctx.Request.Header.Set("Authorization", "Bearer "+fuzzViewer)
		case 2:
			ctx.Request.Header.Set("Authorization", "Bearer wrong-token-0000000")
		case 3:
			sep := "?"
			if u, err := url.Parse(target); err == nil && u.RawQuery != "" {
				sep = "&"
			}
			target += sep + "token=" + fuzzViewer
		}
		ctx.Request.SetRequestURI(target)
		h.reached = nil
		h.handle(&ctx)
		r := h.reached
		if r == nil || r.Open {
			return
		}
		have := roleOfCredential(cred)
		if cred%4 == 3 && !r.TokenQuery {
			have = rest.RoleNone
		}
		if have < r.Needs() {
			t.Fatalf("%s %q with credential %d reached %s %s (needs %s) with status %d", method, target, cred%4, r.Method, r.Path, r.Needs(), ctx.Response.StatusCode())
		}
	})
}
