package server

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// secretsIn lists which of the secrets appear in text.
func secretsIn(text string, secrets []string) []string {
	var found []string
	for _, s := range secrets {
		if strings.Contains(text, s) {
			found = append(found, s)
		}
	}
	return found
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// Credentials in sources never come back in responses or logs: user info
// with '@' and '#', sensitive query keys (token, pwd, auth, sig) of a camera
// that retries a dead address, and the 400 for a URL that does not parse.
func TestSourceSecretsNeverShown(t *testing.T) {
	ts := startServer(t, testConfig(t.TempDir()))
	addr := closedPort(t)
	secrets := []string{"p@ss#w0rd-A", "ss#w0rd-A", "tok-SECRET1", "pwd-SECRET2", "auth-SECRET3", "sig-SECRET4", "hunter2-SECRET5"}
	cams := map[string]string{
		"userinfo": "rtsp://admin:p@ss#w0rd-A@" + addr + "/stream",
		"query":    "rtsp://" + addr + "/stream?token=tok-SECRET1&pwd=pwd-SECRET2&auth=auth-SECRET3&sig=sig-SECRET4&channel=1",
	}
	var bodies strings.Builder
	for id, src := range cams {
		st, body, _ := ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": id, "source": src, "enabled": true})
		if st != 201 {
			t.Fatalf("create %s: %d %s", id, st, body)
		}
		bodies.Write(body)
	}
	var got cameraView
	_, body, _ := ts.do("GET", "/api/v1/cameras/query", "", nil)
	_ = json.Unmarshal(body, &got)
	if want := "rtsp://" + addr + "/stream?token=***&pwd=***&auth=***&sig=***&channel=1"; got.Source != want {
		t.Errorf("query source shown as %q, want %q", got.Source, want)
	}
	_, body, _ = ts.do("GET", "/api/v1/cameras/userinfo", "", nil)
	_ = json.Unmarshal(body, &got)
	if want := "rtsp://***:***@" + addr + "/stream"; got.Source != want {
		t.Errorf("userinfo source shown as %q, want %q", got.Source, want)
	}
	// Both cameras retry the dead address; wait for the failures to be
	// reported and logged.
	waitUntil(t, 15*time.Second, "both cameras to report their failure", func() bool {
		_, body, _ := ts.do("GET", "/api/v1/cameras", "", nil)
		var list struct{ Items []cameraView }
		_ = json.Unmarshal(body, &list)
		n := 0
		for _, c := range list.Items {
			if c.LastError != "" {
				n++
			}
		}
		return n == 2 && strings.Contains(ts.log.String(), "rtsp camera lost")
	})
	_, body, _ = ts.do("GET", "/api/v1/cameras", "", nil)
	bodies.Write(body)

	// A URL that does not parse: the 400 names the problem, not the password.
	st, body, _ := ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": "bad", "source": "rtsp://admin:hunter2-SECRET5@[::1/x"})
	expectError(t, st, body, 400, "not a valid URL")
	bodies.Write(body)

	if found := secretsIn(bodies.String(), secrets); len(found) > 0 {
		t.Errorf("responses show %q:\n%s", found, bodies.String())
	}
	if found := secretsIn(ts.log.String(), secrets); len(found) > 0 {
		t.Errorf("logs show %q:\n%s", found, ts.log.String())
	}
}

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// file:// sources play only regular files inside media_dirs; every other
// path gets one message, whether it exists or not.
func TestFileSourceConfinedToMediaDirs(t *testing.T) {
	media := t.TempDir()
	cfg := testConfig(t.TempDir())
	cfg.MediaDirs = []string{media}
	ts := startServer(t, cfg)
	clip := filepath.Join(media, "clip.mp4")
	if err := os.WriteFile(clip, []byte("not really a video"), 0o644); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(t.TempDir(), "outside.mp4")
	if err := os.WriteFile(outside, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(media, "passwd.mp4")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(media, "outside-link.mp4")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(media, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(media, "fifo.mp4"), 0o644); err != nil {
		t.Fatal(err)
	}

	var message string
	for _, src := range []string{
		"file:///etc/shadow",
		"file:///no/such/video.mp4",
		"file://" + outside,
		"file://" + filepath.Join(media, "passwd.mp4"),
		"file://" + filepath.Join(media, "outside-link.mp4"),
		"file://" + media + "/../" + filepath.Base(filepath.Dir(outside)) + "/outside.mp4",
		"file://" + filepath.Join(media, "missing.mp4"),
		"file://" + media,
	} {
		st, body, _ := ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": "f", "source": src, "enabled": false})
		expectError(t, st, body, 400, "no such file")
		var e errorBody
		_ = json.Unmarshal(body, &e)
		if message == "" {
			message = e.Error.Message
		} else if e.Error.Message != message {
			t.Errorf("%s: message %q differs from %q", src, e.Error.Message, message)
		}
	}
	st, body, _ := ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": "f", "source": "file://" + filepath.Join(media, "sub"), "enabled": false})
	expectError(t, st, body, 400, "is a directory")
	st, body, _ = ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": "f", "source": "file://" + filepath.Join(media, "fifo.mp4"), "enabled": false})
	expectError(t, st, body, 400, "not a regular file")
	if st, body, _ := ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": "f", "source": "file://" + clip, "enabled": false}); st != 201 {
		t.Fatalf("a file in media_dirs: %d %s", st, body)
	}
	if st, body, _ := ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": "u", "source": "/dev/video0", "enabled": false}); st != 201 {
		t.Fatalf("usb source: %d %s", st, body)
	}
	if st, body, _ := ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": "u2", "source": "/dev/sda", "enabled": false}); st != 400 {
		t.Fatalf("/dev/sda as a source: %d %s", st, body)
	}
}

// Sources and grpc:// steps may not point at link-local metadata hosts; the
// list is checked on save and, after DNS resolution, on connect.
func TestDenyHosts(t *testing.T) {
	ts := startServer(t, testConfig(t.TempDir()))
	for _, src := range []string{
		"rtsp://169.254.169.254/latest",
		"rtsp://user:pw@169.254.169.254:554/x",
		"whep://[fe80::1]/whep",
		"wheps://metadata.google.internal/x",
		"rtsps://[::ffff:169.254.169.254]/x",
	} {
		st, body, _ := ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": "m", "source": src, "enabled": false})
		expectError(t, st, body, 400, "deny_hosts")
		if !strings.Contains(string(body), "source") {
			t.Errorf("%s: error does not name the field: %s", src, body)
		}
	}
	st, body, _ := ts.do("POST", "/api/v1/pipelines", "", pipelineBody("meta", step("far", "grpc://169.254.169.254:50051", nil)))
	expectError(t, st, body, 400, "deny_hosts")
	if !strings.Contains(string(body), "processor") {
		t.Errorf("pipeline error does not name the field: %s", body)
	}
	// Loopback stays allowed.
	if st, body, _ := ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": "lo", "source": "rtsp://127.0.0.1:8554/x", "enabled": false}); st != 201 {
		t.Fatalf("loopback source: %d %s", st, body)
	}
	if st, body, _ := ts.do("POST", "/api/v1/pipelines", "", pipelineBody("lo", step("far", "grpc://127.0.0.1:50051", nil))); st != 201 {
		t.Fatalf("loopback step: %d %s", st, body)
	}
}

// A name that passes the save check but resolves into a denied range is
// refused when the source connects: the listener never sees a connection.
func TestDenyHostsAfterResolution(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	cfg := testConfig(t.TempDir())
	cfg.DenyHosts = []string{"127.0.0.0/8", "::1"}
	ts := startServer(t, cfg)
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	st, body, _ := ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": "dns", "source": "rtsp://localhost:" + port + "/x", "enabled": true})
	if st != 201 {
		t.Fatalf("create: %d %s", st, body)
	}
	var got cameraView
	waitUntil(t, 15*time.Second, "the camera to report the refusal", func() bool {
		_, body, _ := ts.do("GET", "/api/v1/cameras/dns", "", nil)
		_ = json.Unmarshal(body, &got)
		return strings.Contains(got.LastError, "deny_hosts")
	})
	if n := accepted.Load(); n != 0 {
		t.Fatalf("the denied address got %d connections", n)
	}
	// The WHEP pull goes through the same dialer.
	st, body, _ = ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": "dnswhep", "source": "whep://localhost:" + port + "/whep?token=t0ken-x", "enabled": true})
	if st != 201 {
		t.Fatalf("create whep: %d %s", st, body)
	}
	waitUntil(t, 15*time.Second, "the WHEP camera to report the refusal", func() bool {
		_, body, _ := ts.do("GET", "/api/v1/cameras/dnswhep", "", nil)
		_ = json.Unmarshal(body, &got)
		return strings.Contains(got.LastError, "deny_hosts")
	})
	if n := accepted.Load(); n != 0 {
		t.Fatalf("the denied address got %d connections", n)
	}
	// The literal address is refused on save already.
	st, body, _ = ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": "lit", "source": "rtsp://127.0.0.1:" + port + "/x"})
	expectError(t, st, body, 400, "deny_hosts")
}

func TestSourcePolicyConfig(t *testing.T) {
	cfg := testConfig(t.TempDir())
	if len(cfg.denyHosts()) == 0 {
		t.Fatal("no default deny_hosts")
	}
	cfg.DenyHosts = []string{"10.0.0.0/33"}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "deny_hosts") {
		t.Fatalf("bad deny_hosts: %v", err)
	}
	cfg.DenyHosts = nil
	cfg.MediaDirs = []string{" "}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "media_dirs") {
		t.Fatalf("empty media_dirs entry: %v", err)
	}
	env := map[string]string{"IFC_DENY_HOSTS": "192.0.2.0/24,cam.internal", "IFC_MEDIA_DIRS": "/srv/video"}
	cfg = testConfig(t.TempDir())
	if err := cfg.LoadEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if len(cfg.DenyHosts) != 2 || cfg.MediaDirs[0] != "/srv/video" || cfg.Validate() != nil {
		t.Fatalf("from the environment: %v %v", cfg.DenyHosts, cfg.MediaDirs)
	}
}
