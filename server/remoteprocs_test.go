package server

import (
	"context"
	"encoding/json"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/processors/builtin"
	"github.com/imageflowcanvas/imageflow/processors/remote"
)

// serveRemoteResize runs the built-in resize as a gRPC Processor service (as
// `imageflow processor serve resize` does) on a loopback port until stop.
func serveRemoteResize(t *testing.T) (addr string, stop func()) {
	t.Helper()
	reg := processors.NewRegistry()
	builtin.Register(reg)
	spec, _ := reg.Lookup("resize")
	params, err := spec.Resolve(nil)
	if err != nil {
		t.Fatal(err)
	}
	proc, err := spec.New(params)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = remote.Serve(ctx, lis, "resize", spec, proc)
	}()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return lis.Addr().String(), stop
}

// TestRemoteProcessorRegistration registers a running gRPC processor: the
// server reads its Info, lists it with its gRPC health, validates its steps'
// parameters on save like a built-in's, keeps it across a restart and
// forgets it on DELETE; bad addresses and unreachable services get 400.
func TestRemoteProcessorRegistration(t *testing.T) {
	addr, stop := serveRemoteResize(t)
	cfg := testConfig(t.TempDir())
	ts := startServer(t, cfg)
	name := "grpc://" + addr

	type view struct {
		Name   string `json:"name"`
		Remote bool   `json:"remote"`
		Health string `json:"health"`
		Params []struct {
			Name string `json:"name"`
		} `json:"params"`
	}
	st, body, _ := ts.do("POST", "/api/v1/processors", "", map[string]any{"address": name})
	if st != 201 {
		t.Fatalf("register: %d %s", st, body)
	}
	var v view
	_ = json.Unmarshal(body, &v)
	if v.Name != name || !v.Remote || v.Health != "SERVING" || len(v.Params) == 0 || v.Params[0].Name == "" {
		t.Fatalf("registered: %s", body)
	}
	listed := func(ts *testServer) *view {
		_, body, _ := ts.do("GET", "/api/v1/processors", "", nil)
		var l struct{ Items []view }
		_ = json.Unmarshal(body, &l)
		for _, p := range l.Items {
			if p.Name == name {
				return &p
			}
		}
		return nil
	}
	if p := listed(ts); p == nil || p.Health != "SERVING" {
		t.Fatalf("listed: %+v", p)
	}

	// Parameters are validated on save against the remote's Info.
	st, body, _ = ts.do("POST", "/api/v1/pipelines", "", pipelineBody("r1", step("small", name, map[string]any{"width": 99999})))
	expectError(t, st, body, 400, "width")
	st, body, _ = ts.do("POST", "/api/v1/pipelines", "", pipelineBody("r2", step("small", name, map[string]any{"nope": 1})))
	expectError(t, st, body, 400, "nope")
	if st, body, _ := ts.do("POST", "/api/v1/pipelines", "", pipelineBody("r3", step("small", name, map[string]any{"width": 100}))); st != 201 {
		t.Fatalf("valid remote step: %d %s", st, body)
	}

	for _, c := range []struct{ address, want string }{
		{"http://" + addr, "grpc://"},
		{"grpc://127.0.0.1:1", "127.0.0.1:1"},
		{"grpc://169.254.169.254:80", "169.254.169.254"},
	} {
		st, body, _ := ts.do("POST", "/api/v1/processors", "", map[string]any{"address": c.address})
		expectError(t, st, body, 400, c.want)
	}

	// A stopped service is listed as not serving.
	stop()
	if p := listed(ts); p == nil || p.Health == "SERVING" {
		t.Fatalf("after stop: %+v", p)
	}

	// The registration survives a restart.
	_ = ts.srv.Close()
	ts = startServer(t, cfg)
	if p := listed(ts); p == nil || !p.Remote {
		t.Fatalf("after restart: %+v", p)
	}
	st, body, _ = ts.do("POST", "/api/v1/pipelines", "", pipelineBody("r4", step("small", name, map[string]any{"width": 99999})))
	expectError(t, st, body, 400, "width")

	if st, body, _ := ts.do("DELETE", "/api/v1/processors?address="+url.QueryEscape(name), "", nil); st != 204 {
		t.Fatalf("unregister: %d %s", st, body)
	}
	if p := listed(ts); p != nil {
		t.Fatalf("still listed: %+v", p)
	}
	st, body, _ = ts.do("DELETE", "/api/v1/processors?address="+url.QueryEscape(name), "", nil)
	expectError(t, st, body, 404, "")
	// Unregistered, its steps are the remote's to validate again.
	if st, body, _ := ts.do("POST", "/api/v1/pipelines", "", pipelineBody("r5", step("small", name, map[string]any{"width": 99999}))); st != 201 {
		t.Fatalf("unregistered remote step: %d %s", st, body)
	}
}

// TestRemoteProcessorInPalette registers a running gRPC processor from the
// designer's palette; it then shows there with its health.
func TestRemoteProcessorInPalette(t *testing.T) {
	needBrowser(t)
	addr, _ := serveRemoteResize(t)
	ts := startServer(t, testConfig(t.TempDir()))
	tab, cancel := chromedp.NewContext(newBrowser(t))
	defer cancel()
	if err := chromedp.Do(tab, chromedp.EmulateViewport(1500, 950), chromedp.Navigate(ts.base+"/pipelines/new")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, tab, `!!document.querySelector('[data-testid="remote-address"]')`, 30*time.Second)
	if err := chromedp.Do(tab, chromedp.SendKeys(`[data-testid="remote-address"]`, "grpc://"+addr), chromedp.Click(`[data-testid="remote-register"]`)); err != nil {
		t.Fatal(err)
	}
	item := jsString(`[data-testid="palette-item"][data-processor="grpc://` + addr + `"] [data-testid="palette-health"]`)
	waitJS(t, tab, `document.querySelector(`+item+`)?.dataset.state === 'serving'`, 20*time.Second)
}
