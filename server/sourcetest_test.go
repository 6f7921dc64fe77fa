package server

import (
	"encoding/json"
	"net"
	"os"
	"strings"
	"testing"
)

// TestSourceTest asks the server to test sources before any camera exists:
// the demo clip reports its codec, size and about its frame rate; a closed
// RTSP port reports the connection error; a path outside the media
// directories and the publish source are refused with 400; no camera is made.
func TestSourceTest(t *testing.T) {
	if _, err := os.Stat(demoVideo); err != nil {
		t.Skipf("opencv-doc not installed: %v", err)
	}
	ts := startServer(t, testConfig(t.TempDir()))
	st, body, _ := ts.do("POST", "/api/v1/cameras/test", "", map[string]any{"source": "file://" + demoVideo})
	if st != 200 {
		t.Fatalf("test file source: %d %s", st, body)
	}
	var res sourceTestResult
	if err := json.Unmarshal(body, &res); err != nil {
		t.Fatal(err)
	}
	t.Logf("file source: %+v", res)
	if !res.OK || res.Codec == "" || res.Width != 768 || res.Height != 576 || res.FPS < 5 || res.FPS > 20 || res.Frames < 2 {
		t.Errorf("file source: %+v, want ok, a codec, 768x576, about 10 fps", res)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // a port nothing listens on
	st, body, _ = ts.do("POST", "/api/v1/cameras/test", "", map[string]any{"source": "rtsp://user:secret@" + addr + "/cam"})
	if st != 200 {
		t.Fatalf("test closed port: %d %s", st, body)
	}
	res = sourceTestResult{}
	_ = json.Unmarshal(body, &res)
	t.Logf("closed port: %+v", res)
	if res.OK || res.Error == "" || strings.Contains(res.Error, "secret") {
		t.Errorf("closed port: %+v, want an error without the password", res)
	}

	st, body, _ = ts.do("POST", "/api/v1/cameras/test", "", map[string]any{"source": "file:///etc/passwd"})
	expectError(t, st, body, 400, "")
	st, body, _ = ts.do("POST", "/api/v1/cameras/test", "", map[string]any{"source": "publish"})
	expectError(t, st, body, 400, "pushed")
	st, body, _ = ts.do("POST", "/api/v1/cameras/test", "", map[string]any{"source": "file://x", "extra": 1})
	expectError(t, st, body, 400, "")
	if _, body, _ := ts.do("GET", "/api/v1/cameras", "", nil); strings.Contains(string(body), "source_test") {
		t.Errorf("testing a source made a camera: %s", body)
	}
}
