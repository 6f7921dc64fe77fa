package server

import (
	"context"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"

	iwebrtc "github.com/imageflowcanvas/imageflow/ingest/webrtc"
	"github.com/imageflowcanvas/imageflow/internal/testkit"
)

// A client that posts WHEP offers and never connects gets ten sessions and
// then 429s, a second client gets the rest of the total budget and then
// 503s; goroutines stay bounded, and once the connect timeout closed the
// abandoned sessions, offers are accepted again.
func TestWHEPAbandonedOffersBounded(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.RTSPAddr = "127.0.0.1:0"
	cfg.WebRTCMaxPending = 15
	cfg.WebRTCConnectTimeout = 4 * time.Second
	ts := startServer(t, cfg)
	pushClip(t, ts, "cam")

	offer := abandonedOffer(t, webrtc.RTPTransceiverDirectionRecvonly)
	url := ts.base + "/api/v1/cameras/cam/whep"
	settle := func() int {
		runtime.GC()
		time.Sleep(300 * time.Millisecond)
		return runtime.NumGoroutine()
	}
	before := settle()

	// 200 offers from 127.0.0.1, 20 at a time.
	codes := flood(t, http.DefaultClient, url, offer, 200, 20)
	if codes[201] != iwebrtc.DefaultMaxPendingPerClient || codes[429] != 200-iwebrtc.DefaultMaxPendingPerClient {
		t.Fatalf("one client's flood: %v, want %d×201 and the rest 429", codes, iwebrtc.DefaultMaxPendingPerClient)
	}
	// Another client (127.0.0.2) gets what is left of the total.
	other := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext}}
	codes = flood(t, other, url, offer, 50, 10)
	if codes[201] != 5 || codes[503] != 45 {
		t.Fatalf("second client's flood: %v, want 5×201 and 45×503", codes)
	}
	other.CloseIdleConnections()
	during := runtime.NumGoroutine()
	t.Logf("goroutines: %d before, %d with 15 abandoned sessions after 250 offers", before, during)
	// Each unconnected session costs about a dozen goroutines; 250 of them
	// took thousands.
	if during-before > 400 {
		t.Fatalf("goroutines grew from %d to %d", before, during)
	}

	// The connect timeout closes them and frees their places.
	testkit.WaitFor(t, 15*time.Second, "abandoned sessions to time out", func() bool {
		return ts.srv.webrtc.Sessions() == 0 && ts.srv.webrtc.Pending() == 0
	})
	// The flood's keep-alive connections hold goroutines on both sides.
	http.DefaultClient.CloseIdleConnections()
	after := 0
	testkit.WaitFor(t, 10*time.Second, "goroutines to return", func() bool { after = settle(); return after <= before+50 })
	t.Logf("goroutines after the timeout: %d", after)
	if st, body := postSDP(t, http.DefaultClient, url, offer); st != 201 {
		t.Fatalf("offer after the timeout: %d %s", st, body)
	}
}

// An abandoned WHIP offer holds its camera only until the connect timeout
// (it held it ~15 s, until ICE failed, and every other publisher got 409).
func TestWHIPAbandonedOfferFreesCamera(t *testing.T) {
	ts := startServer(t, testConfig(t.TempDir()))
	if st, body, _ := ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": "phone", "source": "publish"}); st != 201 {
		t.Fatalf("camera: %d %s", st, body)
	}
	url := ts.base + "/api/v1/cameras/phone/whip"
	if st, body := postSDP(t, http.DefaultClient, url, abandonedOffer(t, webrtc.RTPTransceiverDirectionSendonly)); st != 201 {
		t.Fatalf("abandoned offer: %d %s", st, body)
	}
	start := time.Now()
	pub := newWHIPPublisher(t)
	var ans string
	for {
		st, body := postSDP(t, http.DefaultClient, url, pub.offer)
		if st == 201 {
			ans = body
			break
		}
		if st != 409 {
			t.Fatalf("publisher: %d %s", st, body)
		}
		if time.Since(start) > iwebrtc.DefaultConnectTimeout+3*time.Second {
			t.Fatalf("the camera is still busy %v after an abandoned offer", time.Since(start))
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("publisher accepted %v after the abandoned offer", time.Since(start).Round(100*time.Millisecond))
	if err := pub.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: ans}); err != nil {
		t.Fatal(err)
	}
	pub.play(t, testkit.H264Clip(t, 2))
	cam := waitCameraOnline(t, ts, "phone")
	if cam.Codec != "h264" || cam.Width != 320 {
		t.Fatalf("camera after publishing: %+v", cam)
	}
}

// pushClip makes a publish camera and pushes a looping clip to it over RTSP
// with ffmpeg.
func pushClip(t *testing.T, ts *testServer, id string) {
	t.Helper()
	if st, body, _ := ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": id, "source": "publish"}); st != 201 {
		t.Fatalf("camera: %d %s", st, body)
	}
	clip := testkit.H264File(t, "320x240", "baseline", 2)
	testkit.StartProcess(t, "ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", clip,
		"-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp", "rtsp://"+ts.srv.Addrs().RTSP+"/"+id)
	waitCameraOnline(t, ts, id)
}

// abandonedOffer is a real pion offer (H264 video, recvonly for WHEP or
// sendonly for WHIP) whose peer connection is closed at once: it never
// answers ICE checks.
func abandonedOffer(t *testing.T, dir webrtc.RTPTransceiverDirection) string {
	t.Helper()
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if dir == webrtc.RTPTransceiverDirectionSendonly {
		track, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000}, "video", "gone")
		if err != nil {
			t.Fatal(err)
		}
		_, err = pc.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: dir})
		if err != nil {
			t.Fatal(err)
		}
	} else if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: dir}); err != nil {
		t.Fatal(err)
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	return offer.SDP
}

// flood posts offer n times, conc at once, and counts the statuses.
func flood(t *testing.T, client *http.Client, url, offer string, n, conc int) map[int]int {
	t.Helper()
	var mu sync.Mutex
	codes := map[int]int{}
	var next atomic.Int32
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int32(n) {
				st, _ := postSDP(t, client, url, offer)
				mu.Lock()
				codes[st]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return codes
}

func postSDP(t *testing.T, client *http.Client, url, sdp string) (int, string) {
	req, err := http.NewRequest("POST", url, strings.NewReader(sdp))
	if err != nil {
		t.Error(err)
		return 0, ""
	}
	req.Header.Set("Content-Type", "application/sdp")
	resp, err := client.Do(req)
	if err != nil {
		t.Error(err)
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if (resp.StatusCode == 429 || resp.StatusCode == 503) && strings.Contains(string(b), "waiting to connect") && resp.Header.Get("Retry-After") == "" {
		t.Errorf("%d without Retry-After", resp.StatusCode)
	}
	return resp.StatusCode, string(b)
}

// whipPublisher is a pion WHIP client with an H264 track, on loopback.
type whipPublisher struct {
	pc    *webrtc.PeerConnection
	track *webrtc.TrackLocalStaticSample
	offer string
}

func newWHIPPublisher(t *testing.T) *whipPublisher {
	t.Helper()
	loopback := func(ip net.IP) bool { return ip.IsLoopback() }
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(loopback)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	pc, err := webrtc.NewAPI(webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	track, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"}, "video", "pub")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		t.Fatal(err)
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	p := &whipPublisher{pc: pc, track: track, offer: pc.LocalDescription().SDP}
	t.Cleanup(func() { _ = pc.Close() })
	return p
}

// play sends the clip's access units at 30 fps until the test ends.
func (p *whipPublisher) play(t *testing.T, aus [][][]byte) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second / 30)
		defer tick.Stop()
		for i := 0; ; i++ {
			var b []byte
			for _, n := range aus[i%len(aus)] {
				b = append(append(b, 0, 0, 0, 1), n...)
			}
			_ = p.track.WriteSample(media.Sample{Data: b, Duration: time.Second / 30})
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}
