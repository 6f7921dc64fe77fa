package server

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/imageflowcanvas/imageflow/internal/testkit"
)

// TestMediaMTXInterop plays both sides against mediamtx, the most deployed
// WHEP server: ffmpeg publishes H264 clips (High and Constrained Baseline) to
// mediamtx; our server pulls them as cameras over WHEP; mediamtx pulls our
// cameras back over RTSP and over WHEP, and ffprobe reads those from
// mediamtx.
func TestMediaMTXInterop(t *testing.T) {
	testkit.NeedCommand(t, "ffmpeg", "ffprobe")
	cfg := testConfig(t.TempDir())
	cfg.RTSPAddr = "127.0.0.1:0"
	ours := startServer(t, cfg)
	httpAddr, rtspAddr := ours.srv.Addrs().HTTP, ours.srv.Addrs().RTSP

	profiles := []struct{ name, profile, size string }{
		{"high", "high", "640x360"},
		{"baseline", "baseline", "480x272"},
	}
	var paths strings.Builder
	for _, p := range profiles {
		fmt.Fprintf(&paths, "  %s_rtsp:\n    source: rtsp://%s/%s\n    rtspTransport: tcp\n", p.name, rtspAddr, p.name)
		fmt.Fprintf(&paths, "  %s_whep:\n    source: whep://%s/api/v1/cameras/%s/whep\n", p.name, httpAddr, p.name)
	}
	mtx := testkit.StartMediaMTX(t, paths.String())

	for _, p := range profiles {
		clip := testkit.H264File(t, p.size, p.profile, 4)
		testkit.StartProcess(t, "ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", clip,
			"-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp", "rtsp://"+mtx.RTSP+"/"+p.name+"_pub")
	}

	for _, p := range profiles {
		t.Run(p.name, func(t *testing.T) {
			// Phases are logged with the wall clock, to line them up with
			// mediamtx's log when the test fails.
			phase := func(what string) { t.Logf("%s %s", time.Now().Format("15:04:05.000"), what) }
			phase("start")
			w, h := 0, 0
			fmt.Sscanf(p.size, "%dx%d", &w, &h)
			// Our WHEP source pulls from mediamtx.
			src := "whep://" + mtx.HTTP + "/" + p.name + "_pub/whep"
			if st, body, _ := ours.do("POST", "/api/v1/cameras", "", map[string]any{"id": p.name, "source": src}); st != 201 {
				t.Fatalf("camera: %d %s", st, body)
			}
			cam := waitCameraOnline(t, ours, p.name)
			phase("camera online")
			if cam.Codec != "h264" || int(cam.Width) != w || int(cam.Height) != h {
				t.Fatalf("camera pulled from mediamtx: %+v", cam)
			}
			for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
				var v cameraView
				_, body, _ := ours.do("GET", "/api/v1/cameras/"+p.name, "", nil)
				// The clip runs at 25 fps; sessions that share a 5-tuple
				// lose a third to a half of their frames.
				if jsonInto(body, &v) == nil && v.FPS >= 20 {
					t.Logf("%s from mediamtx at %.1f fps", p.name, v.FPS)
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("frames from mediamtx not at the clip's rate: %s", body)
				}
			}

			// mediamtx pulls the camera back from us over RTSP and over WHEP.
			for _, via := range []string{"rtsp", "whep"} {
				url := "rtsp://" + mtx.RTSP + "/" + p.name + "_" + via
				want := fmt.Sprintf("h264,%d,%d", w, h)
				phase("probing " + url)
				deadline := time.Now().Add(45 * time.Second)
				for out := probe(url); out != want; out = probe(url) {
					if time.Now().After(deadline) {
						_, body, _ := ours.do("GET", "/api/v1/cameras/"+p.name, "", nil)
						t.Fatalf("ffprobe %s: got %q, want %q; our camera: %s", url, out, want, body)
					}
					time.Sleep(time.Second)
				}
				phase("read " + url)
			}
		})
	}
}

// probe reads two seconds of a stream's first video track with ffprobe and
// returns "codec,width,height" when packets were read, else what it said.
func probe(url string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-rtsp_transport", "tcp",
		"-select_streams", "v:0", "-count_packets", "-read_intervals", "%+2",
		"-show_entries", "stream=codec_name,width,height,nb_read_packets", "-of", "csv=p=0", url).CombinedOutput()
	s := strings.TrimSpace(string(out))
	if err != nil {
		return fmt.Sprintf("error %v: %s", err, s)
	}
	f := strings.Split(s, ",")
	if len(f) < 4 || f[3] == "0" || f[3] == "N/A" {
		return "no packets: " + s
	}
	return strings.Join(f[:3], ",")
}
