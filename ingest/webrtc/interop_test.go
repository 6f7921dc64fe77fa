package webrtc

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"
)

// strictWHEPServer answers WHEP the way mediamtx does: one UDP port for
// every session, a media engine holding only the codecs it sends (H264 and,
// when its stream has no audio, a silent PCMU track that browsers need), so
// an offer lacking either codec is refused with 400.
type strictWHEPServer struct {
	api  *webrtc.API
	clip [][][]byte
	stop chan struct{}
	wg   sync.WaitGroup
}

func newStrictWHEPServer(t *testing.T) *strictWHEPServer {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	mux := webrtc.NewICEUDPMux(nil, conn)
	se := webrtc.SettingEngine{}
	se.SetICEUDPMux(mux)
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	me := &webrtc.MediaEngine{}
	for _, c := range []struct {
		kind  webrtc.RTPCodecType
		codec webrtc.RTPCodecParameters
	}{
		{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecParameters{PayloadType: 96, RTPCodecCapability: webrtc.RTPCodecCapability{
			MimeType: webrtc.MimeTypeH264, ClockRate: 90000, SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"}}},
		{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecParameters{PayloadType: 97, RTPCodecCapability: webrtc.RTPCodecCapability{
			MimeType: webrtc.MimeTypePCMU, ClockRate: 8000}}},
	} {
		if err := me.RegisterCodec(c.codec, c.kind); err != nil {
			t.Fatal(err)
		}
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, ir); err != nil {
		t.Fatal(err)
	}
	s := &strictWHEPServer{api: webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se)),
		clip: makeClip(t, 2), stop: make(chan struct{})}
	t.Cleanup(func() {
		close(s.stop)
		s.wg.Wait()
		_ = mux.Close()
	})
	return s
}

func (s *strictWHEPServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodDelete {
		return
	}
	offer, _ := io.ReadAll(r.Body)
	pc, err := s.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	video, _ := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000}, "video", "strict")
	audio, _ := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMU, ClockRate: 8000}, "audio", "strict")
	for _, tr := range []webrtc.TrackLocal{video, audio} {
		if _, err := pc.AddTrack(tr); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
	}
	ans, err := answer(r.Context(), pc, string(offer), nil, nil)
	if err != nil {
		// mediamtx's words for pion's ErrSenderWithNoCodecs.
		_ = pc.Close()
		http.Error(w, "codecs not supported by client: "+err.Error(), http.StatusBadRequest)
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer pc.Close()
		playClip(video, s.clip, s.stop)
	}()
	w.Header().Set("Location", "/session/"+NewSessionID())
	w.Header().Set("Content-Type", "application/sdp")
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, ans)
}

// Two cameras pulled from one mediamtx-like WHEP server through the
// engine's client API both play at the clip's rate: the offer carries the
// server's placeholder audio codec (it refused Opus-only audio with 400),
// and each session has its own port (sessions sharing the server's single
// port from ours shared one 5-tuple and lost frames to each other).
func TestWHEPSourcesFromStrictSinglePortServer(t *testing.T) {
	eng, err := NewEngine(EngineConfig{UDPAddr: "127.0.0.1:0", RemoteIPFilter: isLoopback})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	hs := httptest.NewServer(newStrictWHEPServer(t))
	defer hs.Close()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	var watches []*busWatch
	for _, cam := range []string{"a", "b"} {
		w := newBusWatch(t, cam)
		watches = append(watches, w)
		src, err := NewWHEPSource(WHEPSourceConfig{URL: strings.Replace(hs.URL, "http://", "whep://", 1) + "/" + cam + "/whep",
			Camera: cam, Sink: w.sink, API: eng.ClientAPI(), Configuration: eng.Configuration(), PLIInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = src.Run(ctx) }()
	}
	waitFor(t, 15*time.Second, "both cameras online", func() bool {
		return watches[0].sink.Status().State == "online" && watches[1].sink.Status().State == "online"
	})
	n0, n1 := len(watches[0].snapshot()), len(watches[1].snapshot())
	time.Sleep(3 * time.Second)
	// 90 frames were sent to each in 3 s; a shared 5-tuple lost a third to
	// a half of them (a lost packet drops AUs up to the next keyframe).
	for i, n := range []int{len(watches[0].snapshot()) - n0, len(watches[1].snapshot()) - n1} {
		if n < 70 {
			t.Errorf("camera %d got %d access units in 3 s, want about 90", i, n)
		}
	}
}
