package webrtc

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/bus/hub"
	"github.com/imageflowcanvas/imageflow/ingest"
	"github.com/imageflowcanvas/imageflow/internal/testkit"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Process-wide pools that outlive any one test.
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*Server).logRejectedTLSConns"),
		goleak.IgnoreAnyFunction("github.com/chromedp/chromedp.(*Browser).run"),
	)
}

func isLoopback(ip net.IP) bool { return ip.IsLoopback() }

// testAPI is a server-side API shaped like an Engine's, reduced to loopback:
// one UDP mux on 127.0.0.1, default codecs and interceptors, short ICE
// timeouts.
func testAPI(t testing.TB) *webrtc.API {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	mux := webrtc.NewICEUDPMux(nil, conn)
	t.Cleanup(func() { _ = mux.Close() })
	se := loopbackSettings(webrtc.NetworkTypeUDP4)
	se.SetICEUDPMux(mux)
	se.SetICETimeouts(2*time.Second, 4*time.Second, time.Second)
	return defaultCodecsAPI(t, se)
}

// loopbackSettings gather and connect only on loopback, over the given
// network types, without mDNS.
func loopbackSettings(types ...webrtc.NetworkType) webrtc.SettingEngine {
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(isLoopback)
	se.SetRemoteIPFilter(isLoopback)
	se.SetNetworkTypes(types)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	return se
}

// defaultCodecsAPI is a pion API with pion's default codecs and
// interceptors, as a third-party peer has.
func defaultCodecsAPI(t testing.TB, se webrtc.SettingEngine) *webrtc.API {
	t.Helper()
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, ir); err != nil {
		t.Fatal(err)
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se))
}

// clientAPI is a loopback-only pion API without a mux (a remote peer).
func clientAPI(t testing.TB) *webrtc.API {
	t.Helper()
	return clientAPIOn(t, webrtc.NetworkTypeUDP4)
}

// localOffer creates pc's offer and waits for its candidates, as a
// non-trickle WHIP/WHEP client sends it.
func localOffer(t testing.TB, pc *webrtc.PeerConnection) string {
	t.Helper()
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	g := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-g
	return pc.LocalDescription().SDP
}

// playClip writes the clip's access units to track at 30 fps, looping,
// until stop is closed or the track fails.
func playClip(track *webrtc.TrackLocalStaticSample, clip [][][]byte, stop <-chan struct{}) {
	tick := time.NewTicker(time.Second / 30)
	defer tick.Stop()
	for i := 0; ; i++ {
		if track.WriteSample(media.Sample{Data: annexB(clip[i%len(clip)]), Duration: time.Second / 30}) != nil {
			return
		}
		select {
		case <-stop:
			return
		case <-tick.C:
		}
	}
}

// makeClip is the shared ffmpeg clip (320x240, baseline, GOP 30) as access
// units of NALUs without start codes.
func makeClip(t testing.TB, seconds int) [][][]byte { return testkit.H264Clip(t, seconds) }

func annexB(nalus [][]byte) []byte {
	var b []byte
	for _, n := range nalus {
		b = append(b, 0, 0, 0, 1)
		b = append(b, n...)
	}
	return b
}

// busWatch starts a bus and records the access units published on a
// camera's video subject, as a viewer or decoder would see them.
type busWatch struct {
	b    *bus.Bus
	mu   sync.Mutex
	aus  []*busv1.AccessUnit
	sub  *nats.Subscription
	sink *ingest.BusSink
}

func newBusWatch(t *testing.T, cam string) *busWatch {
	t.Helper()
	b := &bus.Bus{Config: bus.Config{DataDir: t.TempDir()}}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	w := &busWatch{b: b, sink: ingest.NewBusSink(b.Conn(), b.Subjects(), cam, nil)}
	sub, err := b.Conn().Subscribe(b.Subjects().Video(cam), func(m *nats.Msg) {
		au := &busv1.AccessUnit{}
		if proto.Unmarshal(m.Data, au) == nil {
			w.mu.Lock()
			w.aus = append(w.aus, au)
			w.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	w.sub = sub
	t.Cleanup(func() { _ = sub.Unsubscribe(); b.Close() })
	return w
}

func (w *busWatch) snapshot() []*busv1.AccessUnit {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*busv1.AccessUnit(nil), w.aus...)
}

// keyframesWithSPS counts keyframes that can start a decoder on their own.
func keyframesWithSPS(aus []*busv1.AccessUnit) int {
	n := 0
	for _, au := range aus {
		if !au.Keyframe {
			continue
		}
		if au.Codec != busv1.Codec_CODEC_H264 {
			n++
			continue
		}
		sps, pps := false, false
		for _, x := range au.Nalus {
			switch x[0] & 0x1f {
			case 7:
				sps = true
			case 8:
				pps = true
			}
		}
		if sps && pps {
			n++
		}
	}
	return n
}

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, d, what, cond)
}

// env is a running bus, hub, engine and WHEP HTTP endpoint.
type env struct {
	t      testing.TB
	bus    *bus.Bus
	hub    *hub.Hub
	engine *Engine
	srv    *httptest.Server
	rs     BusResults

	mu  sync.Mutex
	ts  map[uint32]bool // RTP timestamps published
	res int             // results published
}

func newEnv(t testing.TB, cfg EngineConfig) *env {
	t.Helper()
	ctx := context.Background()
	b := &bus.Bus{Config: bus.Config{DataDir: t.TempDir()}}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if cfg.UDPAddr == "" {
		cfg.UDPAddr = "127.0.0.1:0"
	}
	cfg.RemoteIPFilter = isLoopback
	eng, err := NewEngine(cfg)
	if err != nil {
		b.Close()
		t.Fatal(err)
	}
	e := &env{t: t, bus: b, hub: hub.New(b.Conn(), b.Subjects()), engine: eng, ts: map[uint32]bool{}}
	e.rs = BusResults{Conn: b.Conn(), Subjects: b.Subjects()}
	e.srv = httptest.NewServer(e.handler())
	t.Cleanup(func() {
		e.srv.Close()
		eng.Close()
		e.hub.Close()
		b.Close()
	})
	return e
}

// handler is a tiny WHEP endpoint over the engine, mapping errors the way
// the server's routes should.
func (e *env) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /whep/{cam}", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		ans, id, err := e.engine.NewViewer(r.Context(), r.PathValue("cam"), r.RemoteAddr, string(body), e.hub, e.rs)
		if err != nil {
			http.Error(w, err.Error(), statusOf(err))
			return
		}
		w.Header().Set("Content-Type", "application/sdp")
		w.Header().Set("Location", "/whep/session/"+id)
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, ans)
	})
	mux.HandleFunc("PATCH /whep/session/{id}", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err := e.engine.PatchViewer(r.PathValue("id"), string(body)); err != nil {
			http.Error(w, err.Error(), statusOf(err))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("DELETE /whep/session/{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := e.engine.CloseSession(r.PathValue("id")); err != nil {
			http.Error(w, err.Error(), statusOf(err))
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	mux.HandleFunc("GET /page", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, viewerPage)
	})
	return mux
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrBadSDP), errors.Is(err, ErrCodecNotSupported):
		return http.StatusBadRequest
	case errors.Is(err, ErrSessionNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrNotSupported):
		return http.StatusNotImplemented
	case errors.Is(err, ErrNoVideo), errors.Is(err, ErrClosed):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// feed publishes the clip's AUs for cam at 30 fps through a BusSink, and a
// result for every 3rd AU, until ctx ends. RTP timestamps start at a large
// odd value so a receiver that re-bases them would be caught.
func (e *env) feed(ctx context.Context, cam string, aus [][][]byte, wg *sync.WaitGroup) {
	sink := ingest.NewBusSink(e.bus.Conn(), e.bus.Subjects(), cam, nil)
	sink.SetTrack(busv1.Codec_CODEC_H264, 320, 240)
	// Ingested here, as the server's camera supervisor does.
	release := e.hub.Keep(cam)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer release()
		tick := time.NewTicker(time.Second / 30)
		defer tick.Stop()
		ts := uint32(4_000_000_123)
		for i := 0; ; i++ {
			nalus := aus[i%len(aus)]
			key := false
			for _, n := range nalus {
				if n[0]&0x1f == 5 {
					key = true
				}
			}
			au := &busv1.AccessUnit{Codec: busv1.Codec_CODEC_H264, RtpTimestamp: ts, ClockRate: 90000,
				Keyframe: key, Nalus: nalus, Pts: int64(i) * int64(time.Second) / 30}
			e.mu.Lock()
			e.ts[ts] = true
			e.mu.Unlock()
			_ = sink.WriteAccessUnit(au)
			if i%3 == 0 {
				r := &busv1.Result{Camera: cam, RtpTimestamp: ts, Pts: au.Pts, Width: 320, Height: 240,
					Detections: []*busv1.Detection{{X: 10, Y: 20, W: 30, H: 40, Label: "person", Score: 0.9, TrackId: int64(i)}}}
				_ = bus.Publish(e.bus.Conn(), e.bus.Subjects().Results(cam), r)
				e.mu.Lock()
				e.res++
				e.mu.Unlock()
			}
			ts += 3000 // wraps past 2^32 within the test: must still match
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}

func (e *env) published(ts uint32) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ts[ts]
}

// clientAPIOn builds a client that gathers and connects only over the given
// network types (TCP4 alone plays a network that blocks UDP).
func clientAPIOn(t testing.TB, types ...webrtc.NetworkType) *webrtc.API {
	t.Helper()
	return defaultCodecsAPI(t, loopbackSettings(types...))
}

// whepPost sends an offer and returns status, body and Location.
func whepPost(t testing.TB, url, offer string) (int, string, string) {
	t.Helper()
	resp, err := http.Post(url, "application/sdp", strings.NewReader(offer))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header.Get("Location")
}

func doReq(t testing.TB, method, url, ctype, body string) int {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// offeringPC is a client peer connection (closed with the test) with one
// transceiver of each kind in dir, ready for localOffer.
func offeringPC(t testing.TB, api *webrtc.API, dir webrtc.RTPTransceiverDirection, kinds ...webrtc.RTPCodecType) *webrtc.PeerConnection {
	t.Helper()
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	for _, kind := range kinds {
		if _, err := pc.AddTransceiverFromKind(kind, webrtc.RTPTransceiverInit{Direction: dir}); err != nil {
			t.Fatal(err)
		}
	}
	return pc
}
