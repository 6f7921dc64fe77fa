package server

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestMediaEndpointsBadInput(t *testing.T) {
	ts := startServer(t, testConfig(t.TempDir()))
	ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": "pub", "source": "publish"})
	ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": "pull", "source": "rtsp://192.0.2.1/x", "enabled": false})
	av1Only := strings.NewReplacer("H264/90000", "AV1/90000", "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n", "").Replace(minimalOffer)
	cases := []struct {
		name, path, ctype, body string
		status                  int
		want                    string
	}{
		{"WHIP malformed SDP", "/api/v1/cameras/pub/whip", "application/sdp", "v=0\r\nthis is not sdp", 400, "SDP"},
		{"WHIP unsupported codec", "/api/v1/cameras/pub/whip", "application/sdp", av1Only, 400, "unsupported codec"},
		{"WHIP wrong content type", "/api/v1/cameras/pub/whip", "text/plain", minimalOffer, 415, "application/sdp"},
		{"WHIP empty", "/api/v1/cameras/pub/whip", "application/sdp", "", 400, "empty"},
		{"WHIP unknown camera", "/api/v1/cameras/ghost/whip", "application/sdp", minimalOffer, 404, "not found"},
		{"WHIP to a pulled camera", "/api/v1/cameras/pull/whip", "application/sdp", minimalOffer, 400, "pulls its source"},
		{"WHIP bad id", "/api/v1/cameras/a.b/whip", "application/sdp", minimalOffer, 400, "id"},
		{"WHEP unknown camera", "/api/v1/cameras/ghost/whep", "application/sdp", minimalOffer, 404, "not found"},
		{"WHEP malformed SDP", "/api/v1/cameras/pub/whep", "application/sdp", "garbage", 400, "SDP"},
		{"WHEP no video", "/api/v1/cameras/pub/whep", "application/sdp", strings.Replace(minimalOffer, "sendonly", "recvonly", 1), 503, "no video"},
		{"WHIP oversized SDP", "/api/v1/cameras/pub/whip", "application/sdp", minimalOffer + strings.Repeat("a=x\r\n", 20000), 413, "at most"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, body, _ := ts.doRaw("POST", tc.path, tc.ctype, tc.body)
			expectError(t, st, body, tc.status, tc.want)
		})
	}
	for _, path := range []string{"/api/v1/cameras/pub/whip/nosuch", "/api/v1/cameras/pub/whep/nosuch"} {
		st, body, _ := ts.doRaw("DELETE", path, "", "")
		expectError(t, st, body, 404, "session")
		st, body, _ = ts.doRaw("PATCH", path, "application/trickle-ice-sdpfrag", "a=ice-ufrag:x\r\n")
		expectError(t, st, body, 404, "session")
	}
	// The publish camera is still free: a failed offer released it.
	if _, release, err := ts.srv.super.acquirePublisher("pub"); err != nil {
		t.Fatalf("camera left busy by failed offers: %v", err)
	} else {
		release()
	}
}

// With tokens configured, WHIP/WHEP need the bearer token and RTSP needs it
// as the password.
func TestMediaAuth(t *testing.T) {
	if _, err := exec.LookPath("ffprobe"); err != nil {
		t.Skip("ffprobe not installed")
	}
	const token = "media-token-123456"
	cfg := testConfig(t.TempDir())
	cfg.APITokens = []string{token}
	cfg.RTSPAddr = "127.0.0.1:0"
	cfg.Demo = true
	ts := startServer(t, cfg)
	for _, path := range []string{"/api/v1/cameras/demo/whep", "/api/v1/cameras/demo/whip"} {
		st, body, _ := ts.doRaw("POST", path, "application/sdp", minimalOffer)
		expectError(t, st, body, 401, "bearer")
	}
	deadline := time.Now().Add(30 * time.Second)
	for ts.srv.super.status(DemoCamera).GetState() != "online" && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	probe := func(userinfo string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-rtsp_transport", "tcp",
			"-show_entries", "stream=codec_name", "-of", "csv=p=0",
			"rtsp://"+userinfo+ts.srv.Addrs().RTSP+"/demo").CombinedOutput()
		return string(out), err
	}
	if out, err := probe(""); err == nil || !strings.Contains(out, "401") {
		t.Fatalf("RTSP without credentials: %v %s", err, out)
	}
	if out, err := probe("viewer:wrong-password@"); err == nil || !strings.Contains(out, "401") {
		t.Fatalf("RTSP with a wrong password: %v %s", err, out)
	}
	if out, err := probe("viewer:" + token + "@"); err != nil || !strings.Contains(out, "h264") {
		t.Fatalf("RTSP with the token: %v %s", err, out)
	}
	if strings.Contains(ts.log.String(), token) {
		t.Fatal("token in logs")
	}
}
