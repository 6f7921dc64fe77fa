package webrtc

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/pion/webrtc/v4"

	"github.com/imageflowcanvas/imageflow/internal/testkit"
)

// Headless Chromium joins a camera with an 8 s GOP at the same moment as
// 49 pion viewers, a moment after a keyframe, and presents its first frame
// from the kept GOP. Prints the time from Chromium's answer to its first
// presented frame (the figure a user feels; 300 ms is aimed at) and the
// pion viewers' answer times; it never fails on them.
func TestWHEPChromiumFirstFrameAmidJoin(t *testing.T) {
	const pionViewers = 49
	e := newEnv(t, EngineConfig{NoVideoTimeout: 15 * time.Second})
	clip := testkit.H264ClipGOP(t, 8, 240)
	keys := watchKeyframes(t, e, "cam1")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	e.feed(ctx, "cam1", clip, &wg)
	t.Cleanup(func() { cancel(); wg.Wait() })

	api := clientAPI(t)
	offers := make([]string, pionViewers)
	pcs := make([]*webrtc.PeerConnection, pionViewers)
	for i := range offers {
		pc, err := api.NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = pc.Close() })
		if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
		pc.OnTrack(func(track *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
			buf := make([]byte, 1500)
			for {
				if _, _, err := track.Read(buf); err != nil {
					return
				}
			}
		})
		offers[i], pcs[i] = localOffer(t, pc), pc
	}

	cctx, stop := chromeCtx(t)
	defer stop()
	if _, err := chromedp.Run(cctx, chromedp.Navigate(e.srv.URL+"/whep/session/none")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the camera's first keyframe", func() bool { return keys.count() >= 1 })
	time.Sleep(300 * time.Millisecond)

	// The pion viewers POST while the page makes its offer and POSTs it.
	start := time.Now()
	answers := make([]time.Duration, pionViewers)
	errs := make(chan string, pionViewers)
	var posts sync.WaitGroup
	for i, offer := range offers {
		posts.Add(1)
		go func() {
			defer posts.Done()
			resp, err := http.Post(e.srv.URL+"/whep/cam1", "application/sdp", strings.NewReader(offer))
			if err != nil {
				errs <- err.Error()
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			answers[i] = time.Since(start)
			if resp.StatusCode != http.StatusCreated {
				errs <- string(body)
				return
			}
			if err := pcs[i].SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
				errs <- err.Error()
			}
		}()
	}
	if _, err := chromedp.Run(cctx, chromedp.Evaluate[bool](joinScript)); err != nil {
		t.Fatal(err)
	}
	posts.Wait()
	close(errs)
	for msg := range errs {
		t.Fatalf("pion viewer: %s", msg)
	}
	st := waitFirstPresented(t, cctx)
	if !e.published(st.FirstRTP) {
		t.Fatalf("first frame's rtpTimestamp %d was never published", st.FirstRTP)
	}
	// From the GOP kept at the join unless a newer keyframe came before it.
	kept := true
	keys.mu.Lock()
	for i, at := range keys.times {
		if at.After(start) {
			kept = int32(st.FirstRTP-keys.ts[i]) < 0
			break
		}
	}
	keys.mu.Unlock()
	t.Logf("chromium amid %d pion viewers joining: answer %v after its POST; first frame presented %v after the answer (from the GOP kept at the join: %v); pion answers p50 %v p99 %v",
		pionViewers, ms(st.AnswerAt-st.PostAt), ms(st.FirstAt-st.AnswerAt), kept,
		percentile(answers, 0.5).Round(time.Millisecond), percentile(answers, 0.99).Round(time.Millisecond))
}
