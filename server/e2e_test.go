package server

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestDemoBoxesOnTheRightFrame opens the demo camera's live page in headless
// Chromium and reads from the page that detection boxes were drawn on a
// decoded frame whose rtpTimestamp equals the result's.
func TestDemoBoxesOnTheRightFrame(t *testing.T) {
	needBrowser(t)
	cfg := testConfig(t.TempDir())
	cfg.Demo = true
	ts := startServer(t, cfg)
	waitCameraOnline(t, ts, DemoCamera)

	tab, cancel := chromedp.NewContext(newBrowser(t))
	defer cancel()
	if err := chromedp.Do(tab, chromedp.Navigate(ts.base+"/cameras/"+DemoCamera)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, tab, `!!(window.__ifc && window.__ifc.framesDecoded > 10)`, 30*time.Second)
	// Boxes were drawn on frames whose rtpTimestamp equals their result's.
	waitJS(t, tab, `!!(window.__ifc && window.__ifc.exactFrames >= 5)`, 60*time.Second)
	got, err := chromedp.Run(tab, chromedp.Evaluate[string](`JSON.stringify(window.__ifc)`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("page state: %s", got)
	// IFC_SCREENSHOT=file.png keeps a picture of the page for a person to look at.
	if out := os.Getenv("IFC_SCREENSHOT"); out != "" {
		if png, err := chromedp.Run(tab, chromedp.CaptureScreenshot()); err == nil {
			_ = os.WriteFile(out, png, 0o644)
		}
	}
}

// TestBrowserPublishPlayAndRTSPRead: Chromium with a fake camera publishes
// through /publish over WHIP; a second page plays it over WHEP and decodes
// frames; ffmpeg then reads the same camera over RTSP.
func TestBrowserPublishPlayAndRTSPRead(t *testing.T) {
	needBrowser(t)
	if _, err := exec.LookPath("ffprobe"); err != nil {
		t.Skip("ffprobe not installed")
	}
	cfg := testConfig(t.TempDir())
	cfg.RTSPAddr = "127.0.0.1:0"
	ts := startServer(t, cfg)
	if st, body, _ := ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": "phone", "source": "publish"}); st != 201 {
		t.Fatalf("camera: %d %s", st, body)
	}
	browser := newBrowser(t)
	pub, cancelPub := chromedp.NewContext(browser)
	defer cancelPub()
	if err := chromedp.Do(pub, chromedp.Navigate(ts.base+"/publish/phone")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, pub, `!!(window.__ifc && window.__ifc.state === 'publishing' && window.__ifc.framesSent > 10)`, 30*time.Second)
	cam := waitCameraOnline(t, ts, "phone")
	t.Logf("published camera: %s %dx%d", cam.Codec, cam.Width, cam.Height)

	// A second publisher on the busy camera is refused; the stream goes on.
	st, body, _ := ts.doRaw("POST", "/api/v1/cameras/phone/whip", "application/sdp", minimalOffer)
	expectError(t, st, body, 409, "already has a publisher")

	play, cancelPlay := chromedp.NewContext(browser)
	defer cancelPlay()
	if err := chromedp.Do(play, chromedp.Navigate(ts.base+"/cameras/phone")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, play, `!!(window.__ifc && window.__ifc.framesDecoded > 20)`, 30*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-rtsp_transport", "tcp",
		"-select_streams", "v:0", "-count_packets", "-read_intervals", "%+3",
		"-show_entries", "stream=codec_name,width,height,nb_read_packets", "-of", "csv=p=0",
		"rtsp://"+ts.srv.Addrs().RTSP+"/phone").CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe over RTSP: %v: %s", err, out)
	}
	fields := strings.Split(strings.TrimSpace(string(out)), ",")
	if len(fields) < 4 || fields[0] != "h264" || fields[1] != fmt.Sprint(cam.Width) || fields[2] != fmt.Sprint(cam.Height) || fields[3] == "0" {
		t.Fatalf("RTSP stream: %q (camera %dx%d)", out, cam.Width, cam.Height)
	}
	t.Logf("ffprobe over RTSP: %s", out)
}

// minimalOffer is a syntactically valid H264 video offer, enough to reach
// the busy-publisher check.
const minimalOffer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n" +
	"m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtcp-mux\r\n" +
	"a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n" +
	"a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n" +
	"a=setup:actpass\r\na=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n"

// waitCameraOnline polls the API until the camera reports online.
func waitCameraOnline(t *testing.T, ts *testServer, id string) cameraView {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last []byte
	for time.Now().Before(deadline) {
		var v cameraView
		st, body, _ := ts.do("GET", "/api/v1/cameras/"+id, "", nil)
		last = body
		if st == 200 && jsonInto(body, &v) == nil && v.State == "online" && v.Width > 0 {
			return v
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("camera %s not online: %s", id, last)
	return cameraView{}
}
