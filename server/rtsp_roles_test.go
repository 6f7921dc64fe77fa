package server

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// RTSP carries the token as the password: publishing needs an operator,
// reading a viewer. Real ffmpeg and ffprobe on both sides.
func TestRTSPRoles(t *testing.T) {
	for _, tool := range []string{"ffmpeg", "ffprobe"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skip(tool + " not installed")
		}
	}
	const viewer, operator, admin = "rtsp-viewer-0123456789", "rtsp-operator-0123456789", "rtsp-admin-0123456789"
	cfg := testConfig(t.TempDir())
	cfg.RTSPAddr = "127.0.0.1:0"
	cfg.APITokens = []string{admin}
	cfg.APIKeys = []APIKey{{Role: "viewer", SHA256: sha(viewer)}, {Role: "operator", SHA256: sha(operator)}}
	ts := startServer(t, cfg)
	if st, body, _ := ts.do("POST", "/api/v1/cameras", admin, map[string]any{"id": "cam1", "source": "publish"}); st != 201 {
		t.Fatalf("camera: %d %s", st, body)
	}
	url := func(tok string) string { return "rtsp://u:" + tok + "@" + ts.srv.Addrs().RTSP + "/cam1" }
	publish := func(ctx context.Context, tok string, seconds string) *exec.Cmd {
		return exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi",
			"-i", "testsrc=size=320x240:rate=15", "-t", seconds, "-c:v", "libx264", "-preset", "ultrafast",
			"-tune", "zerolatency", "-g", "15", "-pix_fmt", "yuv420p", "-f", "rtsp", "-rtsp_transport", "tcp", url(tok))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := publish(ctx, viewer, "2").CombinedOutput(); err == nil {
		t.Fatalf("a viewer published over RTSP: %s", out)
	} else if !strings.Contains(string(out), "401") {
		t.Logf("viewer publish refused: %v: %s", err, out)
	}
	pub := publish(ctx, operator, "40")
	if err := pub.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pub.Process.Kill(); _ = pub.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, body, _ := ts.do("GET", "/api/v1/cameras/cam1", viewer, nil)
		if strings.Contains(string(body), `"state":"online"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("operator's RTSP publish never went online: %s", body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	probe := func(tok string) (string, error) {
		out, err := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-rtsp_transport", "tcp",
			"-select_streams", "v:0", "-show_entries", "stream=codec_name", "-of", "csv=p=0", url(tok)).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if out, err := probe(viewer); err != nil || out != "h264" {
		t.Fatalf("viewer RTSP read: %v: %s", err, out)
	}
	if out, err := probe("not-a-token-000000"); err == nil {
		t.Fatalf("RTSP read with an unknown token: %s", out)
	}
}
