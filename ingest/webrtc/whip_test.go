package webrtc

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/imageflowcanvas/imageflow/ingest"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// whipHandler is a tiny WHIP endpoint over a Publisher, mapping errors the
// way the server's routes should.
func whipHandler(p *Publisher, sinkFor func(cam string) ingest.Sink, released *atomic.Int32) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /whip/{cam}", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		ans, id, err := p.Offer(r.Context(), r.PathValue("cam"), r.RemoteAddr, string(body), sinkFor(r.PathValue("cam")), func() { released.Add(1) })
		if err != nil {
			code := http.StatusInternalServerError
			if errors.Is(err, ErrBadSDP) || errors.Is(err, ErrCodecNotSupported) {
				code = http.StatusBadRequest
			}
			http.Error(w, err.Error(), code)
			return
		}
		w.Header().Set("Location", "/whip/session/"+id)
		w.Header().Set("Content-Type", "application/sdp")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, ans)
	})
	mux.HandleFunc("DELETE /whip/session/{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := p.Delete(r.PathValue("id")); err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
		}
	})
	mux.HandleFunc("GET /page", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, publishPage)
	})
	return mux
}

// pionPublisher offers an H264 track fed from the clip at 30 fps.
type pionPublisher struct {
	pc     *webrtc.PeerConnection
	track  *webrtc.TrackLocalStaticSample
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newPionPublisher(t *testing.T, mime string) (*pionPublisher, string) {
	t.Helper()
	pc, err := clientAPI(t).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	track, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: mime, ClockRate: 90000, SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"}, "video", "pub")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := pc.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		t.Fatal(err)
	}
	// Offer only the track's codec, as a camera with one encoder does.
	var keep []webrtc.RTPCodecParameters
	for _, c := range tr.Sender().GetParameters().Codecs {
		if c.MimeType == mime {
			keep = append(keep, c)
		}
	}
	if err := tr.SetCodecPreferences(keep); err != nil {
		t.Fatal(err)
	}
	return &pionPublisher{pc: pc, track: track}, localOffer(t, pc)
}

func (p *pionPublisher) play(aus [][][]byte) {
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		playClip(p.track, aus, ctx.Done())
	}()
}

func (p *pionPublisher) close() {
	if p.cancel != nil {
		p.cancel()
	}
	p.wg.Wait()
	_ = p.pc.Close()
}

// A pion client publishes the H264 clip over WHIP: access units reach
// ifc.video.<cam> with keyframes carrying SPS/PPS, 90 kHz timestamps, and
// the sink learns codec and size; DELETE ends the session and releases.
func TestWHIPPionPublish(t *testing.T) {
	w := newBusWatch(t, "cam1")
	pub, err := NewPublisher(PublisherConfig{API: testAPI(t), PLIInterval: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	var released atomic.Int32
	srv := httptest.NewServer(whipHandler(pub, func(string) ingest.Sink { return w.sink }, &released))
	defer srv.Close()

	pp, offer := newPionPublisher(t, webrtc.MimeTypeH264)
	defer pp.close()
	code, ans, loc := post(t, srv.URL+"/whip/cam1", offer)
	if code != http.StatusCreated {
		t.Fatalf("POST %d: %s", code, ans)
	}
	if err := pp.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: ans}); err != nil {
		t.Fatal(err)
	}
	pp.play(makeClip(t, 2))
	waitFor(t, 15*time.Second, "45 AUs with 2 keyframes", func() bool {
		aus := w.snapshot()
		return len(aus) >= 45 && keyframesWithSPS(aus) >= 2
	})
	aus := w.snapshot()
	for i := 1; i < len(aus); i++ {
		// The sample writer rounds 1/30 s to 2999 or 3000 ticks.
		if d := aus[i].RtpTimestamp - aus[i-1].RtpTimestamp; d < 2999 || d > 3001 {
			t.Fatalf("AU %d: timestamp step %d, want 3000", i, d)
		}
	}
	if aus[0].Codec != busv1.Codec_CODEC_H264 || !aus[0].Keyframe {
		t.Fatalf("first AU: codec %v keyframe %v", aus[0].Codec, aus[0].Keyframe)
	}
	st := w.sink.Status()
	if st.Codec != "h264" || st.Width != 320 || st.Height != 240 || st.State != ingest.StateOnline {
		t.Fatalf("status %+v", st)
	}
	if pub.Sessions() != 1 || pub.Camera(loc[len("/whip/session/"):]) != "cam1" {
		t.Fatal("session not listed")
	}
	req, _ := http.NewRequest(http.MethodDelete, srv.URL+loc, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE: %v %v", err, resp)
	}
	resp.Body.Close()
	if pub.Sessions() != 0 || released.Load() != 1 || w.sink.Status().State != ingest.StateOffline {
		t.Fatalf("after DELETE: sessions %d released %d state %s", pub.Sessions(), released.Load(), w.sink.Status().State)
	}
	if err := pub.Delete(loc[len("/whip/session/"):]); !errors.Is(err, ErrSessionNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

// A publisher that vanishes without DELETE is cleaned up, and Close ends
// the rest.
func TestWHIPPeerGoneAndClose(t *testing.T) {
	w := newBusWatch(t, "cam1")
	pub, _ := NewPublisher(PublisherConfig{API: testAPI(t)})
	var released atomic.Int32
	clip := makeClip(t, 1)
	var pubs []*pionPublisher
	for range 2 {
		pp, offer := newPionPublisher(t, webrtc.MimeTypeH264)
		defer pp.close()
		ans, _, err := pub.Offer(context.Background(), "cam1", "127.0.0.1", offer, w.sink, func() { released.Add(1) })
		if err != nil {
			t.Fatal(err)
		}
		if err := pp.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: ans}); err != nil {
			t.Fatal(err)
		}
		pp.play(clip)
		pubs = append(pubs, pp)
	}
	waitFor(t, 10*time.Second, "media", func() bool { return len(w.snapshot()) > 10 })
	pubs[0].close()
	waitFor(t, 15*time.Second, "the gone publisher's session to end", func() bool { return pub.Sessions() == 1 })
	pub.Close()
	if pub.Sessions() != 0 || released.Load() != 2 {
		t.Fatalf("after Close: sessions %d released %d", pub.Sessions(), released.Load())
	}
	if _, _, err := pub.Offer(context.Background(), "cam1", "127.0.0.1", "v=0", w.sink, nil); err == nil {
		t.Fatal("offer after Close accepted")
	}
}

func TestWHIPBadInput(t *testing.T) {
	w := newBusWatch(t, "cam1")
	pub, _ := NewPublisher(PublisherConfig{API: testAPI(t)})
	defer pub.Close()
	ctx := context.Background()
	for _, bad := range []string{"", "nonsense", "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"} {
		if _, _, err := pub.Offer(ctx, "cam1", "127.0.0.1", bad, w.sink, nil); !errors.Is(err, ErrBadSDP) {
			t.Errorf("offer %q: %v, want ErrBadSDP", bad, err)
		}
	}
	// AV1 only: no codec the ingest can depacketize.
	pp, offer := newPionPublisher(t, webrtc.MimeTypeAV1)
	defer pp.close()
	if _, _, err := pub.Offer(ctx, "cam1", "127.0.0.1", offer, w.sink, nil); !errors.Is(err, ErrCodecNotSupported) {
		t.Fatalf("AV1 offer: %v", err)
	}
	if err := pub.Patch("nope", "a=candidate:1 1 udp 1 127.0.0.1 9 typ host"); !errors.Is(err, ErrSessionNotFound) {
		t.Fatalf("patch unknown: %v", err)
	}
	if err := pub.Delete("nope"); !errors.Is(err, ErrSessionNotFound) {
		t.Fatalf("delete unknown: %v", err)
	}
	if pub.Sessions() != 0 {
		t.Fatal("refused offers left sessions")
	}
}

func post(t testing.TB, url, body string) (int, string, string) {
	t.Helper()
	resp, err := http.Post(url, "application/sdp", stringsReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header.Get("Location")
}
