package webrtc

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"
	"github.com/pion/webrtc/v4"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/internal/testkit"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// keyframeClock records when a camera's keyframes reach the bus and their
// RTP timestamps.
type keyframeClock struct {
	mu    sync.Mutex
	times []time.Time
	ts    []uint32
}

func watchKeyframes(t *testing.T, e *env, cam string) *keyframeClock {
	t.Helper()
	k := &keyframeClock{}
	sub, err := e.bus.Conn().Subscribe(e.bus.Subjects().Video(cam), func(m *nats.Msg) {
		au := &busv1.AccessUnit{}
		if proto.Unmarshal(m.Data, au) == nil && au.Keyframe {
			k.mu.Lock()
			k.times = append(k.times, time.Now())
			k.ts = append(k.ts, au.RtpTimestamp)
			k.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return k
}

func (k *keyframeClock) count() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.times)
}

// after is the first keyframe that reached the bus after t, if any.
func (k *keyframeClock) after(t time.Time) (time.Time, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, at := range k.times {
		if at.After(t) {
			return at, true
		}
	}
	return time.Time{}, false
}

func (k *keyframeClock) isKeyframe(ts uint32) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Contains(k.ts, ts)
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(p * float64(len(s)-1))
	return s[i]
}

// Fifty pion viewers join a camera with an 8 s GOP at once, a moment after
// a keyframe. Each WHEP answer comes back without waiting for media — all
// of them before the camera's next keyframe, which the old engine waited
// for — and each viewer's video starts on the kept keyframe. Prints the
// answer times and the time from answer to first video packet.
func TestWHEPJoinDoesNotWaitForKeyframe(t *testing.T) {
	const viewers = 50
	// Long enough for an engine that waits for the next keyframe to answer.
	e := newEnv(t, EngineConfig{NoVideoTimeout: 15 * time.Second})
	clip := testkit.H264ClipGOP(t, 8, 240)
	keys := watchKeyframes(t, e, "cam1")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	e.feed(ctx, "cam1", clip, &wg)
	t.Cleanup(func() { cancel(); wg.Wait() })

	api := clientAPI(t)
	type peer struct {
		pc      *webrtc.PeerConnection
		offer   string
		first   atomic.Uint32
		gotAt   atomic.Int64
		markers atomic.Uint64
	}
	peers := make([]*peer, viewers)
	for i := range peers {
		pc, err := api.NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = pc.Close() })
		if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
		p := &peer{pc: pc}
		pc.OnTrack(func(track *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
			for {
				pkt, _, err := track.ReadRTP()
				if err != nil {
					return
				}
				if p.gotAt.Load() == 0 {
					p.first.Store(pkt.Timestamp)
					p.gotAt.Store(time.Now().UnixNano())
				}
				if pkt.Marker {
					p.markers.Add(1)
				}
			}
		})
		p.offer = localOffer(t, pc)
		peers[i] = p
	}

	// Join a little after a keyframe, so the next one is seconds away.
	waitFor(t, 20*time.Second, "the camera's first keyframe", func() bool { return keys.count() >= 1 })
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	answered := make([]time.Time, viewers)
	fingerprints := make([]string, viewers)
	errs := make(chan string, viewers)
	var posts sync.WaitGroup
	for i, p := range peers {
		posts.Add(1)
		go func() {
			defer posts.Done()
			resp, err := http.Post(e.srv.URL+"/whep/cam1", "application/sdp", strings.NewReader(p.offer))
			if err != nil {
				errs <- err.Error()
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			answered[i] = time.Now()
			if resp.StatusCode != http.StatusCreated {
				errs <- string(body)
				return
			}
			for _, l := range strings.Split(string(body), "\n") {
				if strings.HasPrefix(l, "a=fingerprint:") {
					fingerprints[i] = strings.TrimSpace(l)
				}
			}
			if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
				errs <- err.Error()
			}
		}()
	}
	posts.Wait()
	close(errs)
	for msg := range errs {
		t.Fatalf("viewer: %s", msg)
	}
	// One DTLS certificate serves every viewer (no key made per answer).
	if fp := fingerprints[0]; fp == "" || slices.ContainsFunc(fingerprints, func(f string) bool { return f != fp }) {
		t.Fatalf("answers do not share one DTLS certificate: %q", fingerprints)
	}
	last := slices.MaxFunc(answered, func(a, b time.Time) int { return a.Compare(b) })
	if next, ok := keys.after(start); ok && next.Before(last) {
		t.Fatalf("answers waited for media: the last came %v after the join, after the next keyframe (%v after the join)",
			last.Sub(start), next.Sub(start))
	}

	waitFor(t, 60*time.Second, "every viewer to receive 30 access units", func() bool {
		for _, p := range peers {
			if p.markers.Load() < 30 {
				return false
			}
		}
		return true
	})
	answers := make([]time.Duration, viewers)
	firsts := make([]time.Duration, viewers)
	for i, p := range peers {
		answers[i] = answered[i].Sub(start)
		firsts[i] = time.Unix(0, p.gotAt.Load()).Sub(answered[i])
		if !keys.isKeyframe(p.first.Load()) {
			t.Fatalf("viewer %d started on rtp timestamp %d, not a keyframe", i, p.first.Load())
		}
	}
	t.Logf("%d viewers joining at once: answer p50 %v p99 %v; answer to first video packet p50 %v p99 %v",
		viewers, percentile(answers, 0.5).Round(time.Millisecond), percentile(answers, 0.99).Round(time.Millisecond),
		percentile(firsts, 0.5).Round(time.Millisecond), percentile(firsts, 0.99).Round(time.Millisecond))
}

// joinScript joins /whep/cam1 from a page of the test server and records,
// in performance.now() milliseconds, when the POST went out, when its answer
// came back and when the first frame was presented, with that frame's RTP
// timestamp and the latest one.
const joinScript = testkit.NegotiateJS + `
window.ifc = {error: '', status: 0, startAt: performance.now(), postAt: 0, answerAt: 0, firstAt: 0, firstRTP: 0, lastRTP: 0, frames: 0};
(async () => {
  try {
    const plainFetch = window.fetch;
    window.fetch = async (...args) => {
      ifc.postAt = performance.now();
      const r = await plainFetch(...args);
      ifc.answerAt = performance.now();
      return r;
    };
    const pc = new RTCPeerConnection();
    pc.addTransceiver('video', {direction: 'recvonly'});
    const v = document.createElement('video');
    v.muted = true; v.autoplay = true; v.playsInline = true;
    document.body.appendChild(v);
    pc.ontrack = (e) => { v.srcObject = new MediaStream([e.track]); v.play().catch(() => {}); };
    const onFrame = (now, meta) => {
      if (!ifc.firstAt) { ifc.firstAt = performance.now(); ifc.firstRTP = meta.rtpTimestamp >>> 0; }
      ifc.lastRTP = meta.rtpTimestamp >>> 0;
      ifc.frames++;
      v.requestVideoFrameCallback(onFrame);
    };
    v.requestVideoFrameCallback(onFrame);
    const r = await negotiate(pc, '/whep/cam1');
    ifc.status = r.status;
    if (r.status !== 201) ifc.error = r.body;
  } catch (e) { ifc.error = String(e); }
})();
true`

// joinState is what joinScript records (window.ifc), in performance.now()
// milliseconds.
type joinState struct {
	Error    string  `json:"error"`
	Status   int     `json:"status"`
	StartAt  float64 `json:"startAt"`
	PostAt   float64 `json:"postAt"`
	AnswerAt float64 `json:"answerAt"`
	FirstAt  float64 `json:"firstAt"`
	FirstRTP uint32  `json:"firstRTP"`
	LastRTP  uint32  `json:"lastRTP"`
	Frames   int     `json:"frames"`
}

// waitFirstPresented waits for joinScript's page to present its first
// frame and returns what it recorded; a page error fails the test.
func waitFirstPresented(t *testing.T, cctx context.Context) joinState {
	t.Helper()
	var st joinState
	waitFor(t, 30*time.Second, "the first presented frame", func() bool {
		var err error
		if st, err = chromedp.Run(cctx, chromedp.Evaluate[joinState](`ifc`)); err != nil {
			t.Fatal(err)
		}
		if st.Error != "" {
			t.Fatalf("page error (status %d): %s", st.Status, st.Error)
		}
		return st.FirstAt > 0
	})
	return st
}

// ms turns a page's milliseconds into a duration.
func ms(f float64) time.Duration {
	return time.Duration(f * float64(time.Millisecond)).Round(time.Millisecond)
}

// Headless Chromium joins a camera with an 8 s GOP a moment after a
// keyframe and presents its first frame from the kept GOP, long before the
// next keyframe. Prints the answer time and the time from answer to first
// presented frame.
func TestWHEPChromiumFirstFrameFromKeptGOP(t *testing.T) {
	e := newEnv(t, EngineConfig{NoVideoTimeout: 15 * time.Second})
	clip := testkit.H264ClipGOP(t, 8, 240)
	keys := watchKeyframes(t, e, "cam1")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	e.feed(ctx, "cam1", clip, &wg)
	t.Cleanup(func() { cancel(); wg.Wait() })

	cctx, stop := chromeCtx(t)
	defer stop()
	// Any page of the server's origin will do for fetch.
	if _, err := chromedp.Run(cctx, chromedp.Navigate(e.srv.URL+"/whep/session/none")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the camera's first keyframe", func() bool { return keys.count() >= 1 })
	time.Sleep(300 * time.Millisecond)
	joined := time.Now()
	if _, err := chromedp.Run(cctx, chromedp.Evaluate[bool](joinScript)); err != nil {
		t.Fatal(err)
	}
	st := waitFirstPresented(t, cctx)
	firstSeen := time.Now()
	if !e.published(st.FirstRTP) {
		t.Fatalf("first frame's rtpTimestamp %d was never published", st.FirstRTP)
	}
	// The answer did not wait for media: it came before the camera's next
	// keyframe (the script started after joined, so this errs late).
	answered := joined.Add(ms(st.AnswerAt - st.StartAt))
	if next, ok := keys.after(joined); ok && next.Before(answered) {
		t.Fatalf("the answer waited for media: it came %v after the join, the next keyframe %v after it",
			answered.Sub(joined), next.Sub(joined))
	}
	// The first frame belongs to the GOP kept when the viewer joined: its
	// timestamp is before the next keyframe's (when that came before the
	// frame at all). A browser that took seconds to connect on a loaded
	// machine may rightly start on a newer keyframe.
	quick := st.FirstAt-st.AnswerAt < 3000
	if next, ok := keys.after(joined); ok && quick && next.Before(firstSeen) {
		keys.mu.Lock()
		var nextTS uint32
		for i, at := range keys.times {
			if at.Equal(next) {
				nextTS = keys.ts[i]
			}
		}
		keys.mu.Unlock()
		if int32(st.FirstRTP-nextTS) >= 0 {
			t.Fatalf("first frame %d waited for the next keyframe %d", st.FirstRTP, nextTS)
		}
	}
	t.Logf("chromium: answer %v after POST; first frame presented %v after the answer (rtp %d, %d frames so far)",
		ms(st.AnswerAt-st.PostAt), ms(st.FirstAt-st.AnswerAt), st.FirstRTP, st.Frames)

	// How far behind live the view is once the kept GOP has played out.
	time.Sleep(2 * time.Second)
	st, err := chromedp.Run(cctx, chromedp.Evaluate[joinState](`ifc`))
	if err != nil {
		t.Fatal(err)
	}
	e.mu.Lock()
	var newest uint32
	for ts := range e.ts {
		if newest == 0 || int32(ts-newest) > 0 {
			newest = ts
		}
	}
	e.mu.Unlock()
	t.Logf("chromium: 2 s later the presented frame is %v behind the newest published one (%d frames presented)",
		time.Duration(int64(int32(newest-st.LastRTP))*int64(time.Second)/90000).Round(time.Millisecond), st.Frames)
}
