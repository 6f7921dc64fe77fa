package webrtc

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/imageflowcanvas/imageflow/internal/testkit"
)

// viewerPage plays /whep/cam1 like webapp/src/pages/CameraLive.tsx does:
// recvonly video (and audio) plus a "results" channel, non-trickle.
const viewerPage = `<!doctype html><html><body>
<video id="v" muted autoplay playsinline></video>
<script>` + testkit.NegotiateJS + `
window.ifc = {rtps: [], results: [], status: 0, error: '', state: ''};
(async () => {
  try {
    const pc = new RTCPeerConnection();
    pc.addTransceiver('video', {direction: 'recvonly'});
    pc.addTransceiver('audio', {direction: 'recvonly'});
    const dc = pc.createDataChannel('results');
    dc.onmessage = (e) => { try { ifc.results.push(JSON.parse(e.data)); } catch (err) { ifc.error = 'bad result ' + e.data; } };
    pc.onconnectionstatechange = () => { ifc.state = pc.connectionState; };
    const v = document.getElementById('v');
    pc.ontrack = (e) => {
      if (e.track.kind !== 'video') return;
      v.srcObject = new MediaStream([e.track]);
      v.play().catch(() => {});
    };
    const onFrame = (now, meta) => {
      if (typeof meta.rtpTimestamp === 'number') ifc.rtps.push(meta.rtpTimestamp >>> 0);
      v.requestVideoFrameCallback(onFrame);
    };
    v.requestVideoFrameCallback(onFrame);
    const r = await negotiate(pc, '/whep/cam1');
    ifc.status = r.status;
    if (r.status !== 201) ifc.error = r.body;
  } catch (e) { ifc.error = String(e); }
})();
</script></body></html>`

// chromeCtx starts headless Chromium (a fresh profile) for one test.
func chromeCtx(t *testing.T) (context.Context, context.CancelFunc) {
	t.Helper()
	bctx, stop := testkit.Chromium(t)
	ctx, cancel := context.WithTimeout(bctx, 45*time.Second)
	return ctx, func() { cancel(); stop() }
}

// Headless Chromium decodes the passed-through H264, its
// requestVideoFrameCallback rtpTimestamp equals a published AU timestamp,
// and results arrive on the data channel.
func TestWHEPChromium(t *testing.T) {
	e := newEnv(t, EngineConfig{})
	startFeed(t, e, "cam1")
	ctx, cancel := chromeCtx(t)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Navigate(e.srv.URL+"/page")); err != nil {
		t.Fatal(err)
	}
	type state struct {
		Rtps    []uint32 `json:"rtps"`
		Results []struct {
			RTPTimestamp uint32 `json:"rtp_timestamp"`
			Detections   []struct {
				Label string `json:"label"`
			} `json:"detections"`
		} `json:"results"`
		Status int    `json:"status"`
		Error  string `json:"error"`
		State  string `json:"state"`
		Frames int    `json:"frames"`
	}
	var st state
	deadline := time.Now().Add(30 * time.Second)
	for {
		var err error
		st, err = chromedp.Run(ctx, chromedp.Evaluate[state](`({...ifc, rtps: ifc.rtps.slice(-50), results: ifc.results.slice(-20),
			frames: document.getElementById('v').getVideoPlaybackQuality().totalVideoFrames})`))
		if err != nil {
			t.Fatal(err)
		}
		if st.Error != "" {
			t.Fatalf("page error (status %d): %s", st.Status, st.Error)
		}
		if st.Frames >= 30 && len(st.Rtps) >= 10 && len(st.Results) >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no playback: status=%d state=%s frames=%d rtps=%d results=%d", st.Status, st.State, st.Frames, len(st.Rtps), len(st.Results))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if st.Status != http.StatusCreated {
		t.Fatalf("status %d", st.Status)
	}
	for _, ts := range st.Rtps {
		if !e.published(ts) {
			t.Fatalf("frame rtpTimestamp %d was never published", ts)
		}
	}
	for _, r := range st.Results {
		if !e.published(r.RTPTimestamp) || len(r.Detections) != 1 || r.Detections[0].Label != "person" {
			t.Fatalf("bad result %+v", r)
		}
	}
	t.Logf("chromium decoded %d frames; last rtpTimestamp %d; %d results", st.Frames, st.Rtps[len(st.Rtps)-1], len(st.Results))
	cancel()
	waitFor(t, 20*time.Second, "the session to end after the browser went", func() bool { return e.engine.Sessions() == 0 })
}
