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
	"github.com/imageflowcanvas/imageflow/internal/testkit"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }

// publishPage publishes the fake camera over WHIP like
// webapp/src/pages/Publish.tsx (sendonly, non-trickle).
const publishPage = `<!doctype html><html><body><script>` + testkit.NegotiateJS + `
window.ifc = {status: 0, error: '', state: ''};
(async () => {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({video: {width: 320, height: 240}, audio: true});
    const pc = new RTCPeerConnection();
    pc.onconnectionstatechange = () => { ifc.state = pc.connectionState; };
    for (const track of stream.getTracks()) pc.addTransceiver(track, {direction: 'sendonly', streams: [stream]});
    const r = await negotiate(pc, '/whip/phone');
    ifc.status = r.status;
    if (r.status !== 201) ifc.error = r.body;
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

	bctx, stop := testkit.Chromium(t)
	defer stop()
	ctx, cancel := context.WithTimeout(bctx, 45*time.Second)
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
	stop()
	waitFor(t, 20*time.Second, "the session to end after the browser went", func() bool { return pub.Sessions() == 0 })
	if released.Load() != 1 {
		t.Fatalf("released %d times", released.Load())
	}
}
