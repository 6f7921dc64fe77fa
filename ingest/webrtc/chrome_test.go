package webrtc

import (
	"context"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/imageflowcanvas/imageflow/ingest"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }

// publishPage publishes the fake camera over WHIP like
// webapp/src/pages/Publish.tsx (sendonly, non-trickle). Only loopback
// candidates are offered so the test stays on 127.0.0.1.
const publishPage = `<!doctype html><html><body><script>
window.ifc = {status: 0, error: '', state: ''};
(async () => {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({video: {width: 320, height: 240}, audio: true});
    const pc = new RTCPeerConnection();
    pc.onconnectionstatechange = () => { ifc.state = pc.connectionState; };
    for (const track of stream.getTracks()) pc.addTransceiver(track, {direction: 'sendonly', streams: [stream]});
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((res) => {
      if (pc.iceGatheringState === 'complete') return res();
      pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') res(); };
      setTimeout(res, 3000);
    });
    const sdp = pc.localDescription.sdp.split('\r\n')
      .filter((l) => !l.startsWith('a=candidate:') || l.includes(' 127.0.0.1 ')).join('\r\n');
    const r = await fetch('/whip/phone', {method: 'POST', headers: {'Content-Type': 'application/sdp'}, body: sdp});
    ifc.status = r.status;
    const ans = await r.text();
    if (r.status !== 201) { ifc.error = ans; return; }
    await pc.setRemoteDescription({type: 'answer', sdp: ans});
  } catch (e) { ifc.error = String(e); }
})();
</script></body></html>`

// Headless Chromium with a fake camera publishes over WHIP; its access
// units reach the bus, starting on a keyframe, with the picture size.
func TestWHIPChromium(t *testing.T) {
	w := newBusWatch(t, "phone")
	pub, err := NewPublisher(PublisherConfig{API: testAPI(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	var released atomic.Int32
	srv := httptest.NewServer(whipHandler(pub, func(string) ingest.Sink { return w.sink }, &released))
	defer srv.Close()

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath("/usr/bin/chromium"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.Flag("disable-features", "WebRtcHideLocalIpsWithMdns"),
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer acancel()
	cctx, ccancel := chromedp.NewContext(actx)
	defer ccancel()
	ctx, cancel := context.WithTimeout(cctx, 45*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Navigate(srv.URL+"/page")); err != nil {
		t.Fatal(err)
	}
	type state struct {
		Status int    `json:"status"`
		Error  string `json:"error"`
		State  string `json:"state"`
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := chromedp.Run(ctx, chromedp.Evaluate[state](`ifc`))
		if err != nil {
			t.Fatal(err)
		}
		if st.Error != "" {
			t.Fatalf("page error (status %d): %s", st.Status, st.Error)
		}
		aus := w.snapshot()
		if len(aus) >= 30 && keyframesWithSPS(aus) >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no media: status=%d state=%s aus=%d", st.Status, st.State, len(aus))
		}
		time.Sleep(200 * time.Millisecond)
	}
	aus := w.snapshot()
	if !aus[0].Keyframe {
		t.Fatal("the first access unit on the bus is not a keyframe")
	}
	if aus[0].Codec != busv1.Codec_CODEC_H264 && aus[0].Codec != busv1.Codec_CODEC_VP8 {
		t.Fatalf("codec %v", aus[0].Codec)
	}
	st := w.sink.Status()
	if st.Width == 0 || st.Height == 0 {
		t.Fatalf("size unknown: %+v", st)
	}
	t.Logf("chromium published %s %dx%d; %d AUs on the bus", st.Codec, st.Width, st.Height, len(aus))
	ccancel()
	waitFor(t, 20*time.Second, "the session to end after the browser went", func() bool { return pub.Sessions() == 0 })
	if released.Load() != 1 {
		t.Fatalf("released %d times", released.Load())
	}
}
