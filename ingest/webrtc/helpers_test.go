package webrtc

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	mch264 "github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/nats-io/nats.go"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/ingest"
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
	se := webrtc.SettingEngine{}
	se.SetICEUDPMux(mux)
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(isLoopback)
	se.SetRemoteIPFilter(isLoopback)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetICETimeouts(2*time.Second, 4*time.Second, time.Second)
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

// makeClip encodes a real H264 clip with ffmpeg and splits it into access
// units of NALUs without start codes.
func makeClip(t testing.TB, seconds int) [][][]byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "clip.h264")
	cmd := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi",
		"-i", "testsrc=size=320x240:rate=30", "-t", fmt.Sprint(seconds),
		"-c:v", "libx264", "-profile:v", "baseline", "-bf", "0", "-g", "30", "-pix_fmt", "yuv420p", "-f", "h264", path)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, out)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ab mch264.AnnexB
	if err := ab.Unmarshal(raw); err != nil {
		t.Fatal(err)
	}
	var aus [][][]byte
	var cur [][]byte
	hasSlice := false
	for _, n := range ab {
		typ := n[0] & 0x1f
		start := false
		switch typ {
		case 6, 7, 8, 9:
			start = hasSlice
		case 1, 5:
			start = hasSlice && len(n) > 1 && n[1]&0x80 != 0
		}
		if start {
			aus = append(aus, cur)
			cur, hasSlice = nil, false
		}
		cur = append(cur, n)
		if typ == 1 || typ == 5 {
			hasSlice = true
		}
	}
	return append(aus, cur)
}

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
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
