package webrtc

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

// pionViewer is a WHEP client: recvonly video plus a "results" channel.
type pionViewer struct {
	pc       *webrtc.PeerConnection
	packets  atomic.Int64
	markers  atomic.Int64
	badTS    atomic.Int64
	results  atomic.Int64
	badRes   atomic.Int64
	lastTS   atomic.Uint32
	trackEnd chan struct{}
}

func newPionViewer(t *testing.T, e *env, codecs ...string) (*pionViewer, string) {
	t.Helper()
	return newPionViewerWith(t, e, clientAPI(t), codecs...)
}

func newPionViewerWith(t *testing.T, e *env, api *webrtc.API, codecs ...string) (*pionViewer, string) {
	t.Helper()
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	v := &pionViewer{pc: pc, trackEnd: make(chan struct{})}
	tr, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly})
	if err != nil {
		t.Fatal(err)
	}
	if len(codecs) > 0 {
		var keep []webrtc.RTPCodecParameters
		for _, c := range tr.Receiver().GetParameters().Codecs {
			for _, want := range codecs {
				if strings.EqualFold(c.MimeType, want) {
					keep = append(keep, c)
				}
			}
		}
		if err := tr.SetCodecPreferences(keep); err != nil {
			t.Fatal(err)
		}
	}
	// As the web page opens it: unordered, no retransmissions.
	unordered, noRetransmits := false, uint16(0)
	dc, err := pc.CreateDataChannel(ResultsLabel, &webrtc.DataChannelInit{Ordered: &unordered, MaxRetransmits: &noRetransmits})
	if err != nil {
		t.Fatal(err)
	}
	dc.OnMessage(func(m webrtc.DataChannelMessage) {
		var r struct {
			RTPTimestamp uint32 `json:"rtp_timestamp"`
			Width        int    `json:"width"`
			Detections   []struct {
				Label string  `json:"label"`
				Score float64 `json:"score"`
			} `json:"detections"`
		}
		if json.Unmarshal(m.Data, &r) != nil || r.Width != 320 || len(r.Detections) != 1 || r.Detections[0].Label != "person" || !e.published(r.RTPTimestamp) {
			v.badRes.Add(1)
			return
		}
		v.results.Add(1)
	})
	pc.OnTrack(func(track *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		defer close(v.trackEnd)
		for {
			p, _, err := track.ReadRTP()
			if err != nil {
				return
			}
			v.packets.Add(1)
			if !e.published(p.Timestamp) {
				v.badTS.Add(1)
			}
			if p.Marker {
				v.markers.Add(1)
			}
			v.lastTS.Store(p.Timestamp)
		}
	})
	return v, localOffer(t, pc)
}

func startFeed(t testing.TB, e *env, cam string) {
	aus := makeClip(t, 2)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	e.feed(ctx, cam, aus, &wg)
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// A pion client receives the camera's H264 with the published RTP
// timestamps, marker bits per AU, and results on the data channel; DELETE
// ends the session.
func TestWHEPPionViewer(t *testing.T) {
	e := newEnv(t, EngineConfig{})
	startFeed(t, e, "cam1")
	v, offer := newPionViewer(t, e)
	defer v.pc.Close()

	code, ans, loc := whepPost(t, e.srv.URL+"/whep/cam1", offer)
	if code != http.StatusCreated || loc == "" {
		t.Fatalf("POST: %d %q %s", code, loc, ans)
	}
	if !strings.Contains(ans, "H264") || !strings.Contains(ans, "a=candidate:") {
		t.Fatalf("answer lacks H264 or candidates:\n%s", ans)
	}
	if err := v.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: ans}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "60 AUs and 5 results", func() bool { return v.markers.Load() >= 60 && v.results.Load() >= 5 })
	if n := v.badTS.Load(); n != 0 {
		t.Fatalf("%d packets with an RTP timestamp the camera never sent", n)
	}
	if n := v.badRes.Load(); n != 0 {
		t.Fatalf("%d malformed results", n)
	}
	if got := v.pc.GetTransceivers()[0].Receiver().Track().Codec().MimeType; got != webrtc.MimeTypeH264 {
		t.Fatalf("codec %s", got)
	}
	t.Logf("received %d packets, %d AUs, %d results", v.packets.Load(), v.markers.Load(), v.results.Load())
	if e.engine.Sessions() != 1 {
		t.Fatalf("sessions = %d", e.engine.Sessions())
	}
	if c := doReq(t, http.MethodDelete, e.srv.URL+loc, "", ""); c != http.StatusOK {
		t.Fatalf("DELETE: %d", c)
	}
	if e.engine.Sessions() != 0 {
		t.Fatalf("sessions after DELETE = %d", e.engine.Sessions())
	}
	if c := doReq(t, http.MethodDelete, e.srv.URL+loc, "", ""); c != http.StatusNotFound {
		t.Fatalf("second DELETE: %d", c)
	}
	waitFor(t, 15*time.Second, "the client to see the session end", func() bool {
		st := v.pc.ConnectionState()
		return st == webrtc.PeerConnectionStateFailed || st == webrtc.PeerConnectionStateDisconnected || st == webrtc.PeerConnectionStateClosed
	})
	if d := e.engine.Drops()["cam1"]; d.Video != 0 {
		t.Logf("drops: %+v", d)
	}
}

// A viewer whose peer vanishes without DELETE is cleaned up by ICE failure.
func TestWHEPSessionEndsOnICEFailure(t *testing.T) {
	e := newEnv(t, EngineConfig{NoVideoTimeout: 10 * time.Second})
	startFeed(t, e, "cam1")
	v, offer := newPionViewer(t, e)
	code, ans, _ := whepPost(t, e.srv.URL+"/whep/cam1", offer)
	if code != http.StatusCreated {
		t.Fatalf("POST: %d %s", code, ans)
	}
	if err := v.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: ans}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "media", func() bool { return v.markers.Load() > 5 })
	_ = v.pc.Close() // closes DTLS: the server sees the peer go
	waitFor(t, 20*time.Second, "the session to end", func() bool { return e.engine.Sessions() == 0 })
}

func TestWHEPBadInput(t *testing.T) {
	e := newEnv(t, EngineConfig{NoVideoTimeout: 10 * time.Second})
	ctx := context.Background()

	for name, sdp := range map[string]string{
		"empty":   "",
		"garbage": "hello world",
		"no m=":   "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
		"broken":  "v=0\r\no=- 1\r\nm=video\r\n",
	} {
		if _, _, err := e.engine.NewViewer(ctx, "cam1", "127.0.0.1", sdp, e.hub, e.rs); !errors.Is(err, ErrBadSDP) {
			t.Errorf("%s: err = %v, want ErrBadSDP", name, err)
		}
	}
	// No camera publishing: 503 after the wait.
	nv, offer := newPionViewer(t, e)
	defer nv.pc.Close()
	start := time.Now()
	e.engine.cfg.NoVideoTimeout = 300 * time.Millisecond
	if _, _, err := e.engine.NewViewer(ctx, "nocam", "127.0.0.1", offer, e.hub, e.rs); !errors.Is(err, ErrNoVideo) {
		t.Fatalf("no video: err = %v", err)
	}
	e.engine.cfg.NoVideoTimeout = 10 * time.Second
	if time.Since(start) > 3*time.Second {
		t.Fatal("NoVideoTimeout not honoured")
	}
	if e.hub.Readers("nocam") != 0 {
		t.Fatal("reader leaked after a failed offer")
	}

	// The camera sends H264; an offer with only VP8 is refused.
	startFeed(t, e, "cam1")
	v, vp8Offer := newPionViewer(t, e, webrtc.MimeTypeVP8)
	defer v.pc.Close()
	code, body, _ := whepPost(t, e.srv.URL+"/whep/cam1", vp8Offer)
	if code != http.StatusBadRequest || !strings.Contains(body, "unsupported codec") {
		t.Fatalf("VP8-only offer: %d %s", code, body)
	}
	if code, _, _ := whepPost(t, e.srv.URL+"/whep/cam1", "nonsense"); code != http.StatusBadRequest {
		t.Fatalf("garbage offer: %d", code)
	}
	// Unknown sessions.
	if c := doReq(t, http.MethodPatch, e.srv.URL+"/whep/session/nope", "application/trickle-ice-sdpfrag", "a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n"); c != http.StatusNotFound {
		t.Fatalf("PATCH unknown: %d", c)
	}
	if c := doReq(t, http.MethodDelete, e.srv.URL+"/whep/session/nope", "", ""); c != http.StatusNotFound {
		t.Fatalf("DELETE unknown: %d", c)
	}
	if e.engine.Sessions() != 0 {
		t.Fatalf("sessions = %d after refused offers", e.engine.Sessions())
	}
}

// Trickle ICE: the client offers without candidates and PATCHes them.
func TestWHEPTrickle(t *testing.T) {
	e := newEnv(t, EngineConfig{})
	startFeed(t, e, "cam1")
	v, offer := newPionViewer(t, e)
	defer v.pc.Close()
	var cands []string
	var stripped []string
	for _, l := range strings.Split(offer, "\r\n") {
		if strings.HasPrefix(l, "a=candidate:") {
			cands = append(cands, l)
			continue
		}
		stripped = append(stripped, l)
	}
	if len(cands) == 0 {
		t.Fatal("client gathered no candidates")
	}
	code, ans, loc := whepPost(t, e.srv.URL+"/whep/cam1", strings.Join(stripped, "\r\n"))
	if code != http.StatusCreated {
		t.Fatalf("POST: %d %s", code, ans)
	}
	if err := v.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: ans}); err != nil {
		t.Fatal(err)
	}
	ufrag := ""
	for _, l := range strings.Split(offer, "\r\n") {
		if strings.HasPrefix(l, "a=ice-ufrag:") {
			ufrag = l
			break
		}
	}
	// An ICE restart (other credentials) is refused.
	if c := doReq(t, http.MethodPatch, e.srv.URL+loc, "application/trickle-ice-sdpfrag", "a=ice-ufrag:zzzz\r\na=ice-pwd:yyyyyyyyyyyyyyyyyyyyyyyy\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"+cands[0]+"\r\n"); c != http.StatusNotImplemented {
		t.Fatalf("PATCH restart: %d", c)
	}
	frag := ufrag + "\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n" + strings.Join(cands, "\r\n") + "\r\na=end-of-candidates\r\n"
	if c := doReq(t, http.MethodPatch, e.srv.URL+loc, "application/trickle-ice-sdpfrag", frag); c != http.StatusNoContent {
		t.Fatalf("PATCH: %d", c)
	}
	if c := doReq(t, http.MethodPatch, e.srv.URL+loc, "application/trickle-ice-sdpfrag", "not a fragment"); c != http.StatusBadRequest {
		t.Fatalf("PATCH garbage: %d", c)
	}
	waitFor(t, 15*time.Second, "media after trickle", func() bool { return v.markers.Load() >= 10 })
}

// Close ends every session and leaves no goroutine (TestMain checks).
func TestEngineCloseEndsSessions(t *testing.T) {
	e := newEnv(t, EngineConfig{})
	startFeed(t, e, "cam1")
	var viewers []*pionViewer
	for range 3 {
		v, offer := newPionViewer(t, e)
		defer v.pc.Close()
		code, ans, _ := whepPost(t, e.srv.URL+"/whep/cam1", offer)
		if code != http.StatusCreated {
			t.Fatalf("POST: %d %s", code, ans)
		}
		if err := v.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: ans}); err != nil {
			t.Fatal(err)
		}
		viewers = append(viewers, v)
	}
	waitFor(t, 15*time.Second, "all viewers playing", func() bool {
		for _, v := range viewers {
			if v.markers.Load() < 5 {
				return false
			}
		}
		return true
	})
	if n := e.engine.Sessions(); n != 3 {
		t.Fatalf("sessions = %d", n)
	}
	e.engine.Close()
	if n := e.engine.Sessions(); n != 0 {
		t.Fatalf("sessions after Close = %d", n)
	}
	if _, _, err := e.engine.NewViewer(context.Background(), "cam1", "127.0.0.1", "v=0", e.hub, e.rs); err == nil {
		t.Fatal("NewViewer after Close succeeded")
	}
}

// A viewer on a network that blocks UDP connects over ICE-TCP (passive
// candidates on the engine's TCP port) and gets the video.
func TestWHEPOverICETCP(t *testing.T) {
	e := newEnv(t, EngineConfig{TCPAddr: "127.0.0.1:0"})
	startFeed(t, e, "cam1")
	v, offer := newPionViewerWith(t, e, clientAPIOn(t, webrtc.NetworkTypeTCP4))
	defer v.pc.Close()
	code, ans, _ := whepPost(t, e.srv.URL+"/whep/cam1", offer)
	if code != http.StatusCreated {
		t.Fatalf("POST: %d %s", code, ans)
	}
	if !strings.Contains(ans, "tcptype passive") {
		t.Fatalf("answer has no passive TCP candidate:\n%s", ans)
	}
	if err := v.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: ans}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "30 AUs over ICE-TCP", func() bool { return v.markers.Load() >= 30 })
	if n := v.badTS.Load(); n != 0 {
		t.Fatalf("%d packets with an RTP timestamp the camera never sent", n)
	}
	pair, err := v.pc.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil || pair.Local.Protocol != webrtc.ICEProtocolTCP {
		t.Fatalf("selected pair is not TCP: %v %v", pair, err)
	}
}
