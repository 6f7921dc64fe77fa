package server

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestWHEPIngestReservedOverRTSPAndWHEP chains three servers: A plays the
// demo video; B pulls A's camera as a WHEP source and re-serves it; C pulls
// B over WHEP, and ffprobe reads B over RTSP. The WHEP server, client and
// viewer are all the real pion code paths.
func TestWHEPIngestReservedOverRTSPAndWHEP(t *testing.T) {
	if _, err := exec.LookPath("ffprobe"); err != nil {
		t.Skip("ffprobe not installed")
	}
	cfgA := testConfig(t.TempDir())
	cfgA.Demo = true
	a := startServer(t, cfgA)
	waitCameraOnline(t, a, DemoCamera)

	cfgB := testConfig(t.TempDir())
	cfgB.RTSPAddr = "127.0.0.1:0"
	b := startServer(t, cfgB)
	src := "whep://" + a.srv.Addrs().HTTP + "/api/v1/cameras/" + DemoCamera + "/whep"
	if st, body, _ := b.do("POST", "/api/v1/cameras", "", map[string]any{"id": "relay", "source": src}); st != 201 {
		t.Fatalf("camera on B: %d %s", st, body)
	}
	relay := waitCameraOnline(t, b, "relay")
	if relay.Codec != "h264" || relay.Width != 768 || relay.Height != 576 {
		t.Fatalf("relay camera: %+v", relay)
	}

	c := startServer(t, testConfig(t.TempDir()))
	src2 := "whep://" + b.srv.Addrs().HTTP + "/api/v1/cameras/relay/whep"
	if st, body, _ := c.do("POST", "/api/v1/cameras", "", map[string]any{"id": "relay2", "source": src2}); st != 201 {
		t.Fatalf("camera on C: %d %s", st, body)
	}
	relay2 := waitCameraOnline(t, c, "relay2")
	if relay2.Width != 768 || relay2.Height != 576 {
		t.Fatalf("camera re-served over WHEP: %+v", relay2)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-rtsp_transport", "tcp",
		"-select_streams", "v:0", "-count_packets", "-read_intervals", "%+2",
		"-show_entries", "stream=codec_name,width,height,nb_read_packets", "-of", "csv=p=0",
		"rtsp://"+b.srv.Addrs().RTSP+"/relay").CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe over RTSP: %v: %s", err, out)
	}
	if f := strings.Split(strings.TrimSpace(string(out)), ","); len(f) < 4 || f[0] != "h264" || f[1] != "768" || f[2] != "576" || f[3] == "0" {
		t.Fatalf("RTSP re-serve: %q", out)
	}
}
