package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/imageflowcanvas/imageflow/server/rest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// fasthttp's date cache and nats' timer pool live for the process.
		goleak.IgnoreTopFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
		goleak.IgnoreTopFunction("time.Sleep"),
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreAnyFunction("gocv.io/x/gocv._Cfunc_Mat_New"),
		// nats.go's JetStream context starts this once for async publishes
		// and, after the connection closed, leaves it waiting on a nil
		// channel: one per bus, not per request.
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect"),
	)
}

// testServer runs a server in-process on random ports in dir.
type testServer struct {
	t    *testing.T
	srv  *Server
	base string
	log  *bytes.Buffer
}

func testConfig(dir string) Config {
	cfg := Defaults()
	cfg.DataDir = dir
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.RTSPAddr = ""
	cfg.RTSPUDPAddr = ""
	cfg.GRPCAddr = "127.0.0.1:0"
	cfg.WebRTCUDPAddr = "127.0.0.1:0"
	cfg.Demo = false
	return cfg
}

func startServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	var logs bytes.Buffer
	srv := &Server{Config: cfg, Logger: slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, nil))}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	ts := &testServer{t: t, srv: srv, base: "http://" + srv.Addrs().HTTP, log: &logs}
	t.Cleanup(func() { _ = srv.Close() })
	return ts
}

type syncWriter struct{ w io.Writer }

func (s *syncWriter) Write(p []byte) (int, error) { return s.w.Write(p) }

// do sends a request and returns the status and body.
func (ts *testServer) do(method, path, token string, body any) (int, []byte, http.Header) {
	ts.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, _ := json.Marshal(b)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, ts.base+path, rd)
	if err != nil {
		ts.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ts.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out, resp.Header
}

// doRaw sends a body with its own content type.
func (ts *testServer) doRaw(method, path, contentType, body string) (int, []byte, http.Header) {
	ts.t.Helper()
	req, err := http.NewRequest(method, ts.base+path, strings.NewReader(body))
	if err != nil {
		ts.t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ts.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out, resp.Header
}

func jsonInto(b []byte, v any) error { return json.Unmarshal(b, v) }

// expectError checks the status and that the body is the one JSON error
// shape with a message containing want.
func expectError(t *testing.T, status int, body []byte, wantStatus int, want string) {
	t.Helper()
	if status != wantStatus {
		t.Fatalf("status %d, want %d: %s", status, wantStatus, body)
	}
	var e rest.ErrorBody
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body is not the JSON error shape: %s", body)
	}
	if e.Error.Status != wantStatus || e.Error.Message == "" || e.Error.Code == "" {
		t.Fatalf("incomplete error body: %s", body)
	}
	if !strings.Contains(e.Error.Message, want) {
		t.Fatalf("error %q does not mention %q", e.Error.Message, want)
	}
}

func TestHealthReadyAndUnknownRoute(t *testing.T) {
	ts := startServer(t, testConfig(t.TempDir()))
	if st, body, _ := ts.do("GET", "/api/v1/health", "", nil); st != 200 || !strings.Contains(string(body), "ok") {
		t.Fatalf("health: %d %s", st, body)
	}
	if st, body, _ := ts.do("GET", "/api/v1/ready", "", nil); st != 200 || !strings.Contains(string(body), "ready") {
		t.Fatalf("ready: %d %s", st, body)
	}
	st, body, _ := ts.do("GET", "/api/v1/nope", "", nil)
	expectError(t, st, body, 404, "no route")
}

func TestCameraCRUD(t *testing.T) {
	ts := startServer(t, testConfig(t.TempDir()))
	cam := map[string]any{"id": "front-door", "name": "Front door", "source": "rtsp://admin:s3cret-pass@192.0.2.10:554/stream1", "enabled": false}
	st, body, hdr := ts.do("POST", "/api/v1/cameras", "", cam)
	if st != 201 {
		t.Fatalf("create: %d %s", st, body)
	}
	if hdr.Get("Location") != "/api/v1/cameras/front-door" {
		t.Fatalf("location %q", hdr.Get("Location"))
	}
	if strings.Contains(string(body), "s3cret") || strings.Contains(string(body), "admin") {
		t.Fatalf("credentials leaked in response: %s", body)
	}
	var got cameraView
	_ = json.Unmarshal(body, &got)
	if got.Source != "rtsp://***:***@192.0.2.10:554/stream1" || got.Name != "Front door" || got.Enabled || got.State != "offline" {
		t.Fatalf("created camera: %+v", got)
	}

	st, body, _ = ts.do("POST", "/api/v1/cameras", "", cam)
	expectError(t, st, body, 409, "already exists")

	st, body, _ = ts.do("GET", "/api/v1/cameras/front-door", "", nil)
	if st != 200 || strings.Contains(string(body), "s3cret") {
		t.Fatalf("get: %d %s", st, body)
	}
	st, body, _ = ts.do("GET", "/api/v1/cameras", "", nil)
	var list struct{ Items []cameraView }
	_ = json.Unmarshal(body, &list)
	if st != 200 || len(list.Items) != 1 || list.Items[0].ID != "front-door" {
		t.Fatalf("list: %d %s", st, body)
	}

	// Sending the redacted source back keeps the stored credentials.
	st, body, _ = ts.do("PUT", "/api/v1/cameras/front-door", "", map[string]any{"name": "Porch", "source": got.Source, "enabled": false})
	if st != 200 {
		t.Fatalf("update: %d %s", st, body)
	}
	stored, _, err := ts.srv.cameras.get(context.Background(), "front-door")
	if err != nil || stored.Source != cam["source"] || stored.Name != "Porch" {
		t.Fatalf("stored after update: %v %v", stored, err)
	}

	if st, body, _ = ts.do("DELETE", "/api/v1/cameras/front-door", "", nil); st != 204 {
		t.Fatalf("delete: %d %s", st, body)
	}
	st, body, _ = ts.do("GET", "/api/v1/cameras/front-door", "", nil)
	expectError(t, st, body, 404, "not found")
	st, body, _ = ts.do("DELETE", "/api/v1/cameras/front-door", "", nil)
	expectError(t, st, body, 404, "not found")

	if strings.Contains(ts.log.String(), "s3cret") {
		t.Fatalf("credentials leaked in logs:\n%s", ts.log.String())
	}
}

func TestCameraBadInput(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.BodyLimit = 4096
	ts := startServer(t, cfg)
	cases := []struct {
		name   string
		body   any
		status int
		want   string
	}{
		{"malformed JSON", `{"id": "a",`, 400, "malformed JSON"},
		{"not an object", `[1,2]`, 400, "malformed JSON"},
		{"trailing data", `{"id":"a","source":"publish"} {}`, 400, "data after"},
		{"empty body", ``, 400, "empty body"},
		{"unknown field", `{"id":"a","source":"publish","colour":"red"}`, 400, "unknown field"},
		{"oversized body", `{"id":"a","source":"publish","name":"` + strings.Repeat("x", 5000) + `"}`, 413, "limit of 4096"},
		{"empty id", map[string]any{"id": "", "source": "publish"}, 400, "empty"},
		{"path characters in id", map[string]any{"id": "../etc", "source": "publish"}, 400, "character"},
		{"subject wildcard in id", map[string]any{"id": "a.*", "source": "publish"}, 400, "character"},
		{"too long id", map[string]any{"id": strings.Repeat("a", 65), "source": "publish"}, 400, "at most 64"},
		{"no source", map[string]any{"id": "a"}, 400, "source"},
		{"bad scheme", map[string]any{"id": "a", "source": "ftp://host/x"}, 400, "unsupported"},
		{"rtsp without host", map[string]any{"id": "a", "source": "rtsp:///path"}, 400, "needs a host"},
		{"bad port", map[string]any{"id": "a", "source": "rtsp://h:99999/x"}, 400, "port"},
		{"malformed URL", map[string]any{"id": "a", "source": "rtsp://u:p@[::1/x"}, 400, "not a valid URL"},
		{"control character", map[string]any{"id": "a", "source": "rtsp://h/\x01"}, 400, "control character"},
		{"missing file", map[string]any{"id": "a", "source": "file:///no/such/video.mp4"}, 400, "no such file"},
		{"relative file", map[string]any{"id": "a", "source": "file://video.mp4"}, 400, "absolute"},
		{"unknown pipeline", map[string]any{"id": "a", "source": "publish", "pipeline": "nope"}, 400, "does not exist"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, body, _ := ts.do("POST", "/api/v1/cameras", "", tc.body)
			expectError(t, st, body, tc.status, tc.want)
		})
	}
	// Nothing was stored.
	st, body, _ := ts.do("GET", "/api/v1/cameras", "", nil)
	if st != 200 || string(body) != `{"items":[]}` {
		t.Fatalf("bad input changed state: %s", body)
	}
	for _, id := range []string{"..%2Fetc", strings.Repeat("b", 65), "a%2Eb"} {
		st, body, _ := ts.do("GET", "/api/v1/cameras/"+id, "", nil)
		expectError(t, st, body, 400, "id")
	}
	st, body, _ = ts.do("PUT", "/api/v1/cameras/x", "", map[string]any{"id": "y", "source": "publish"})
	expectError(t, st, body, 400, "differs")
	st, body, _ = ts.do("PUT", "/api/v1/cameras/x", "", map[string]any{"source": "publish"})
	expectError(t, st, body, 404, "not found")
}

func pipelineBody(id string, steps ...map[string]any) map[string]any {
	return map[string]any{"id": id, "name": id, "steps": steps}
}

func step(id, processor string, params map[string]any, inputs ...string) map[string]any {
	s := map[string]any{"id": id, "processor": processor}
	if params != nil {
		s["params"] = params
	}
	if inputs != nil {
		s["inputs"] = inputs
	}
	return s
}

func TestPipelineCRUDAndValidation(t *testing.T) {
	ts := startServer(t, testConfig(t.TempDir()))
	good := pipelineBody("people",
		step("small", "resize", map[string]any{"width": 640}),
		step("gray", "filter", map[string]any{"mode": "grayscale"}, "small"),
		step("remote", "grpc://127.0.0.1:50052", nil, "small"),
	)
	st, body, _ := ts.do("POST", "/api/v1/pipelines", "", good)
	if st != 201 {
		t.Fatalf("create: %d %s", st, body)
	}
	var p struct {
		ID    string
		Steps []struct {
			ID, Processor string
			Params        map[string]any
			Inputs        []string
		}
	}
	_ = json.Unmarshal(body, &p)
	if p.ID != "people" || len(p.Steps) != 3 || p.Steps[1].Inputs[0] != "small" || p.Steps[0].Params["width"] != float64(640) {
		t.Fatalf("created pipeline: %s", body)
	}

	cases := []struct {
		name, wantStep, want string
		body                 any
	}{
		{"unknown processor", "x", "unknown processor", pipelineBody("p1", step("x", "teleport", nil))},
		{"cycle", "a", "cycle", pipelineBody("p1", step("a", "resize", nil, "b"), step("b", "resize", nil, "a"))},
		{"missing input", "b", "missing input", pipelineBody("p1", step("a", "resize", nil), step("b", "resize", nil, "ghost"))},
		{"bad parameter type", "a", "width", pipelineBody("p1", step("a", "resize", map[string]any{"width": "wide"}))},
		{"parameter out of range", "a", "maximum", pipelineBody("p1", step("a", "resize", map[string]any{"width": 1e9}))},
		{"unknown parameter", "a", "no such parameter", pipelineBody("p1", step("a", "resize", map[string]any{"colour": 1}))},
		{"bad enum", "f", "want one of", pipelineBody("p1", step("f", "filter", map[string]any{"mode": "sepia"}))},
		{"duplicate step", "a", "duplicate", pipelineBody("p1", step("a", "resize", nil), step("a", "resize", nil))},
		{"bad remote", "r", "grpc://host:port", pipelineBody("p1", step("r", "grpc://", nil))},
		{"bad step id", "a/b", "invalid step id", pipelineBody("p1", step("a/b", "resize", nil))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, body, _ := ts.do("POST", "/api/v1/pipelines", "", tc.body)
			expectError(t, st, body, 400, tc.want)
			var e rest.ErrorBody
			_ = json.Unmarshal(body, &e)
			if e.Error.Step != tc.wantStep || !strings.Contains(e.Error.Message, tc.wantStep) {
				t.Fatalf("error does not name step %q: %s", tc.wantStep, body)
			}
		})
	}
	for name, body := range map[string]string{
		"no steps":      `{"id":"p2","steps":[]}`,
		"unknown field": `{"id":"p2","steps":[{"id":"a","processor":"resize"}],"colour":1}`,
		"malformed":     `{"id":"p2",`,
	} {
		st, b, _ := ts.do("POST", "/api/v1/pipelines", "", body)
		if st != 400 {
			t.Fatalf("%s: %d %s", name, st, b)
		}
	}
	st, body, _ = ts.do("GET", "/api/v1/pipelines", "", nil)
	if st != 200 || strings.Count(string(body), `"id":"people"`) != 1 || strings.Contains(string(body), "p1") {
		t.Fatalf("invalid pipelines were stored: %s", body)
	}

	// A camera using the pipeline keeps it from being deleted.
	if st, body, _ := ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": "cam", "source": "publish", "pipeline": "people"}); st != 201 {
		t.Fatalf("camera: %d %s", st, body)
	}
	st, body, _ = ts.do("DELETE", "/api/v1/pipelines/people", "", nil)
	expectError(t, st, body, 409, "used by camera")

	upd := pipelineBody("people", step("small", "resize", map[string]any{"width": 320}))
	if st, body, _ := ts.do("PUT", "/api/v1/pipelines/people", "", upd); st != 200 || !strings.Contains(string(body), "320") {
		t.Fatalf("update: %d %s", st, body)
	}
	st, body, _ = ts.do("PUT", "/api/v1/pipelines/people", "", pipelineBody("people", step("a", "resize", nil, "a")))
	expectError(t, st, body, 400, "cycle")
	if st, body, _ := ts.do("GET", "/api/v1/pipelines/people", "", nil); !strings.Contains(string(body), "320") {
		t.Fatalf("failed update changed the pipeline: %d %s", st, body)
	}
	ts.do("DELETE", "/api/v1/cameras/cam", "", nil)
	if st, body, _ := ts.do("DELETE", "/api/v1/pipelines/people", "", nil); st != 204 {
		t.Fatalf("delete: %d %s", st, body)
	}
}

func TestProcessorsListed(t *testing.T) {
	ts := startServer(t, testConfig(t.TempDir()))
	st, body, _ := ts.do("GET", "/api/v1/processors", "", nil)
	var list struct {
		Items []struct {
			Name   string
			Params []struct{ Name, Type string }
		}
	}
	if err := json.Unmarshal(body, &list); st != 200 || err != nil {
		t.Fatalf("processors: %d %s", st, body)
	}
	names := map[string]int{}
	for _, p := range list.Items {
		names[p.Name] = len(p.Params)
	}
	for _, want := range []string{"resize", "filter"} {
		if names[want] == 0 {
			t.Fatalf("processor %q missing or without parameters: %s", want, body)
		}
	}
}

func TestAuth(t *testing.T) {
	const token = "test-token-0123456789"
	cfg := testConfig(t.TempDir())
	cfg.APITokens = []string{token}
	ts := startServer(t, cfg)

	for _, path := range []string{"/api/v1/cameras", "/api/v1/pipelines", "/api/v1/processors", "/api/v1/openapi.json", "/api/v1/cameras/x"} {
		st, body, hdr := ts.do("GET", path, "", nil)
		expectError(t, st, body, 401, "missing bearer token")
		if !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
			t.Fatalf("%s: no WWW-Authenticate", path)
		}
		st, body, _ = ts.do("GET", path, "wrong-token-000000", nil)
		expectError(t, st, body, 401, "invalid bearer token")
	}
	st, body, _ := ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": "a", "source": "publish"})
	expectError(t, st, body, 401, "bearer")
	if st, body, _ := ts.do("POST", "/api/v1/cameras", token, map[string]any{"id": "a", "source": "publish"}); st != 201 {
		t.Fatalf("with token: %d %s", st, body)
	}
	if st, _, _ := ts.do("GET", "/api/v1/cameras", token, nil); st != 200 {
		t.Fatalf("list with token: %d", st)
	}
	// Health and metrics stay open unless configured otherwise.
	if st, _, _ := ts.do("GET", "/api/v1/health", "", nil); st != 200 {
		t.Fatalf("health: %d", st)
	}
	if st, _, _ := ts.do("GET", "/metrics", "", nil); st != 200 {
		t.Fatalf("metrics: %d", st)
	}
	if strings.Contains(ts.log.String(), token) {
		t.Fatal("token in logs")
	}

	cfg2 := testConfig(t.TempDir())
	cfg2.APITokens = []string{token}
	cfg2.MetricsAuth, cfg2.HealthAuth = true, true
	ts2 := startServer(t, cfg2)
	for _, path := range []string{"/metrics", "/api/v1/health", "/api/v1/ready"} {
		if st, _, _ := ts2.do("GET", path, "", nil); st != 401 {
			t.Fatalf("%s without token: %d", path, st)
		}
		if st, _, _ := ts2.do("GET", path, token, nil); st != 200 {
			t.Fatalf("%s with token: %d", path, st)
		}
	}
}

func TestStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	ts := startServer(t, cfg)
	ts.do("POST", "/api/v1/pipelines", "", pipelineBody("p", step("a", "resize", map[string]any{"width": 320})))
	if st, body, _ := ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": "keep", "source": "rtsp://u:pw@192.0.2.1/x", "pipeline": "p", "enabled": false}); st != 201 {
		t.Fatalf("create: %d %s", st, body)
	}
	if err := ts.srv.Close(); err != nil {
		t.Fatal(err)
	}
	ts2 := startServer(t, cfg)
	st, body, _ := ts2.do("GET", "/api/v1/cameras/keep", "", nil)
	if st != 200 || !strings.Contains(string(body), `"pipeline":"p"`) {
		t.Fatalf("camera after restart: %d %s", st, body)
	}
	stored, _, _ := ts2.srv.cameras.get(context.Background(), "keep")
	if stored.GetSource() != "rtsp://u:pw@192.0.2.1/x" {
		t.Fatalf("source after restart: %q", stored.GetSource())
	}
	if st, body, _ := ts2.do("GET", "/api/v1/pipelines/p", "", nil); st != 200 || !strings.Contains(string(body), "320") {
		t.Fatalf("pipeline after restart: %d %s", st, body)
	}
}

func TestGracefulShutdown(t *testing.T) {
	cfg := testConfig(t.TempDir())
	ts := startServer(t, cfg)
	ts.do("GET", "/api/v1/health", "", nil)
	start := time.Now()
	if err := ts.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
	if _, err := http.Get(ts.base + "/api/v1/health"); err == nil {
		t.Fatal("HTTP still answers after Close")
	}
	// A second Close is harmless.
	if err := ts.srv.Close(); err != nil {
		t.Fatal(err)
	}
	// goleak in TestMain checks that nothing was left running.
}

func TestOpenAPIMatchesRoutes(t *testing.T) {
	ts := startServer(t, testConfig(t.TempDir()))
	st, body, _ := ts.do("GET", "/api/v1/openapi.json", "", nil)
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(body, &doc); st != 200 || err != nil || !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi: %d %v %s", st, err, body[:min(len(body), 200)])
	}
	documented := map[string]bool{}
	for p, ops := range doc.Paths {
		for m := range ops {
			documented[strings.ToUpper(m)+" "+p] = true
		}
	}
	registered := map[string]bool{}
	for _, r := range ts.srv.app.GetRoutes(true) {
		if !strings.HasPrefix(r.Path, "/api/v1/") || strings.Contains(r.Path, "*") || r.Method == "HEAD" {
			continue
		}
		registered[r.Method+" "+rest.OpenAPIPath(r.Path)] = true
	}
	for k := range registered {
		if !documented[k] {
			t.Errorf("route %s is not in the OpenAPI document", k)
		}
	}
	for k := range documented {
		if !registered[k] {
			t.Errorf("OpenAPI documents %s, which is not registered", k)
		}
	}
	if len(registered) < 14 {
		t.Fatalf("only %d routes registered", len(registered))
	}
}

func TestConfigPipeline(t *testing.T) {
	cfg := Defaults()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	env := map[string]string{"IFC_HTTP": "127.0.0.1:9999", "IFC_API_TOKENS": "aaaaaaaaaa, bbbbbbbbbb", "IFC_VIDEO_WINDOW": "3s"}
	if err := cfg.LoadEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPAddr != "127.0.0.1:9999" || len(cfg.APITokens) != 2 || cfg.VideoWindow != 3*time.Second {
		t.Fatalf("env not applied: %+v", cfg)
	}
	bad := []struct {
		mutate func(*Config)
		want   string
	}{
		{func(c *Config) { c.HTTPAddr = "nope" }, `http: "nope"`},
		{func(c *Config) { c.RTSPAddr = ":70000" }, `rtsp: ":70000"`},
		{func(c *Config) { c.NATSAddr = "127.0.0.1:4222" }, "nats_user"},
		{func(c *Config) { c.LogLevel = "loud" }, `log_level: "loud"`},
		{func(c *Config) { c.APITokens = []string{"short"} }, "api_tokens[0]"},
		{func(c *Config) { c.Prefix = "a.b" }, "prefix"},
		{func(c *Config) { c.WebRTCMaxPending = -1 }, "webrtc_max_pending: -1"},
		{func(c *Config) { c.WebRTCConnectTimeout = -time.Second }, "webrtc_connect_timeout"},
		{func(c *Config) { c.WebRTCTranscodeWidth = 1281 }, "webrtc_transcode_width: 1281"},
		{func(c *Config) { c.WebRTCTranscodeBitrate = -1 }, "webrtc_transcode_bitrate: -1"},
		{func(c *Config) { c.OpenCVThreads = -1 }, "opencv_threads: -1"},
		{func(c *Config) { c.OpenCVThreads = 257 }, "opencv_threads: 257"},
	}
	for _, tc := range bad {
		c := Defaults()
		tc.mutate(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("want error naming %q, got %v", tc.want, err)
		}
	}
	if err := cfg.LoadEnv(func(k string) (string, bool) {
		if k == "IFC_VIDEO_WINDOW" {
			return "soon", true
		}
		return "", false
	}); err == nil || !strings.Contains(err.Error(), "IFC_VIDEO_WINDOW") {
		t.Fatalf("bad env: %v", err)
	}
	if err := cfg.LoadEnv(func(k string) (string, bool) {
		if k == "IFC_NATS_PASSWORD" {
			return "x", true
		}
		return "", false
	}); err != nil {
		t.Fatal(err)
	}
}

func TestHTTPSSelfSigned(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.HTTPSAddr = "127.0.0.1:0"
	ts := startServer(t, cfg)
	addr := ts.srv.Addrs().HTTPS
	if addr == "" {
		t.Fatal("no HTTPS address")
	}
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(filepath.Join(dir, "tls", "cert.pem"))
	if err != nil || !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("self-signed certificate not written: %v", err)
	}
	_, port, _ := net.SplitHostPort(addr)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get("https://localhost:" + port + "/publish/x")
	if err != nil {
		t.Fatalf("HTTPS with the generated certificate trusted: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 && resp.StatusCode != 503 {
		t.Fatalf("publish page over HTTPS: %d", resp.StatusCode)
	}
	resp, err = client.Get("https://localhost:" + port + "/api/v1/health")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("API over HTTPS: %v %v", err, resp)
	}
	resp.Body.Close()
}
