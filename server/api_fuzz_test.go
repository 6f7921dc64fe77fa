package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"
)

// fuzzedEndpoints are the JSON bodies the API reads from operators.
var fuzzedEndpoints = []struct{ method, path string }{
	{"POST", "/api/v1/cameras"},
	{"PUT", "/api/v1/cameras/fuzzcam"},
	{"POST", "/api/v1/pipelines"},
	{"PUT", "/api/v1/pipelines/fuzzpipe"},
	{"POST", "/api/v1/cameras/fuzzcam/overlay-stats"},
}

// FuzzAPIBodies sends arbitrary JSON bodies to the server's create and
// replace endpoints over HTTP: each is answered 2xx or 4xx with a JSON
// error, never 5xx, and the server keeps answering. What was created is
// deleted again so the fuzzer's cameras do not pile up.
func FuzzAPIBodies(f *testing.F) {
	seeds := []string{
		`{"id":"c1","source":"publish"}`,
		`{"id":"c2","source":"rtsp://127.0.0.1:1/x","pipeline":"fuzzpipe","record":true,"record_retention":"1h","record_max_bytes":1000000}`,
		`{"id":"c3","source":"whep://127.0.0.1:1/w","labels":["a","b"],"node":"n1","enabled":false}`,
		`{"id":"c4","source":"publish","zones":[{"name":"gate","points":[[0,0],[1,0],[1,1]],"labels":["person"],"min_dwell_ms":500}]}`,
		`{"id":"c5","source":"file:///etc/passwd"}`,
		`{"id":"c6","source":"/dev/video0"}`,
		`{"id":"p1","steps":[{"id":"a","processor":"resize","params":{"width":320}}]}`,
		`{"id":"p2","steps":[{"id":"small","processor":"resize","params":{"width":640}},{"id":"m","processor":"motion","inputs":["small"]},{"id":"d","processor":"detect","inputs":["small","m"],"params":{"gate":"only_if_motion"}}]}`,
		`{"exact":3,"late":1,"dropped":0,"target_ms":80,"held_ms":50}`,
		`{}`, `[]`, `null`, `{"id":""}`, `{"id":"x","source":"` + string(bytes.Repeat([]byte("a"), 5000)) + `"}`,
	}
	for i, s := range seeds {
		for e := range fuzzedEndpoints {
			if i%len(fuzzedEndpoints) == e || e == 0 {
				f.Add(uint8(e), []byte(s))
			}
		}
	}
	cfg := testConfig(f.TempDir())
	// The fuzzer sends thousands of requests a second from one client.
	cfg.RateLimit = 0
	srv := &Server{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = srv.Close() })
	base := "http://" + srv.Addrs().HTTP
	client := &http.Client{Timeout: 20 * time.Second}
	send := func(t testing.TB, method, path string, body []byte) (int, []byte) {
		req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	// The targets of the PUTs and the overlay report exist.
	for _, c := range []struct{ path, body string }{
		{"/api/v1/pipelines", `{"id":"fuzzpipe","steps":[{"id":"a","processor":"resize","params":{"width":320}}]}`},
		{"/api/v1/cameras", `{"id":"fuzzcam","source":"publish"}`},
	} {
		if st, b := send(f, "POST", c.path, []byte(c.body)); st != 201 {
			f.Fatalf("POST %s: %d %s", c.path, st, b)
		}
	}

	f.Fuzz(func(t *testing.T, endpoint uint8, body []byte) {
		ep := fuzzedEndpoints[int(endpoint)%len(fuzzedEndpoints)]
		st, b := send(t, ep.method, ep.path, body)
		if st >= 500 {
			t.Fatalf("%s %s %q: %d %s", ep.method, ep.path, body, st, b)
		}
		if st >= 400 {
			var e struct {
				Error struct{ Message string }
			}
			if json.Unmarshal(b, &e) != nil || e.Error.Message == "" {
				t.Fatalf("%s %s %q: %d without a JSON error: %s", ep.method, ep.path, body, st, b)
			}
			return
		}
		// Created: take it away again.
		var made struct{ ID string }
		if ep.method == "POST" && json.Unmarshal(b, &made) == nil && made.ID != "" {
			if st, b := send(t, "DELETE", ep.path+"/"+made.ID, nil); st >= 300 && st != 404 {
				t.Fatalf("DELETE %s/%s: %d %s", ep.path, made.ID, st, b)
			}
		}
	})
}
