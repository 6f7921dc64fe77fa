package rtsp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/auth"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/ingest"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	"github.com/imageflowcanvas/imageflow/redact"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// freeUDPPair finds an even UDP port whose successor is free too.
func freeUDPPair(t *testing.T) int {
	t.Helper()
	for range 100 {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := c.LocalAddr().(*net.UDPAddr).Port
		c.Close()
		if p%2 != 0 || p > 65000 {
			continue
		}
		c2, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p+1))
		if err != nil {
			continue
		}
		c2.Close()
		return p
	}
	t.Fatal("no free UDP pair")
	return 0
}

// busWatch counts the access units of a camera on the bus.
type busWatch struct {
	n       atomic.Int64
	lastKey atomic.Pointer[busv1.AccessUnit]
}

func watchVideo(t *testing.T, b *bus.Bus, cam string) *busWatch {
	t.Helper()
	w := &busWatch{}
	sub, err := b.Conn().Subscribe(b.Subjects().Video(cam), func(m *nats.Msg) {
		au := &busv1.AccessUnit{}
		if proto.Unmarshal(m.Data, au) == nil {
			if au.Keyframe {
				w.lastKey.Store(au)
			}
			w.n.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return w
}

// runSource runs a source until the test ends.
func runSource(t *testing.T, cfg SourceConfig) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	src := NewSource(cfg)
	go func() { done <- src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
}

// Kill and restart the camera five times; frames resume within 2 s each
// time and the state leaves online during the downtime.
func TestSourceReconnect(t *testing.T) {
	for _, tr := range []string{TransportTCP, TransportUDP} {
		t.Run(tr, func(t *testing.T) {
			aus := smallAUs(t)
			b := startBus(t)
			up := &upstream{addr: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
			if tr == TransportUDP {
				up.udpPort = freeUDPPair(t)
			}
			up.start(t, aus)
			t.Cleanup(up.close)
			var states stateLog
			sink := ingest.NewBusSink(b.Conn(), b.Subjects(), "cam2", states.onChange)
			w := watchVideo(t, b, "cam2")
			runSource(t, SourceConfig{Camera: "cam2", URL: "rtsp://" + up.addr + "/cam", Sink: sink,
				Logger: quietLogger(), Transport: tr})

			waitFor(t, 8*time.Second, "first access unit", func() bool { return w.n.Load() > 0 })
			waitFor(t, 3*time.Second, "a keyframe", func() bool { return w.lastKey.Load() != nil })
			key := w.lastKey.Load()
			if key.Width != 640 || key.Height != 360 || len(key.Nalus) < 3 {
				t.Fatalf("keyframe %dx%d with %d NALUs", key.Width, key.Height, len(key.Nalus))
			}
			if st := sink.Status(); st.Width != 640 || st.Height != 360 || st.Codec != "h264" {
				t.Fatalf("sink track %s %dx%d", st.Codec, st.Width, st.Height)
			}
			for i := range 5 {
				mark := states.count()
				up.close()
				waitFor(t, 5*time.Second, "state to leave online", func() bool {
					st, _ := states.since(mark)
					return slices.Contains(st, ingest.StateOffline) || slices.Contains(st, ingest.StateConnecting)
				})
				before := w.n.Load()
				restart := time.Now()
				up.start(t, aus)
				waitFor(t, 5*time.Second, "frames after restart", func() bool { return w.n.Load() > before })
				took := time.Since(restart)
				t.Logf("%s restart %d: frames again after %v", tr, i+1, took.Round(time.Millisecond))
				if took > 2*time.Second {
					t.Errorf("restart %d: frames resumed after %v, want <= 2s", i+1, took)
				}
				if st := sink.Status().State; st != ingest.StateOnline {
					t.Errorf("restart %d: state %s with frames flowing", i+1, st)
				}
			}
		})
	}
}

// A camera that keeps the connection but stops sending is detected by the
// read timeout and reconnected.
func TestSourceDeadCamera(t *testing.T) {
	aus := smallAUs(t)
	b := startBus(t)
	up := &upstream{addr: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	up.start(t, aus)
	t.Cleanup(up.close)
	var states stateLog
	sink := ingest.NewBusSink(b.Conn(), b.Subjects(), "cam3", states.onChange)
	w := watchVideo(t, b, "cam3")
	runSource(t, SourceConfig{Camera: "cam3", URL: "rtsp://" + up.addr + "/cam", Sink: sink,
		Logger: quietLogger(), Transport: TransportTCP})
	waitFor(t, 8*time.Second, "first access unit", func() bool { return w.n.Load() > 0 })
	mark := states.count()
	describes := up.describe.Load()
	up.paused.Store(true)
	start := time.Now()
	waitFor(t, 6*time.Second, "dead camera detected", func() bool {
		st, _ := states.since(mark)
		return slices.Contains(st, ingest.StateOffline)
	})
	if el := time.Since(start); el < 2*time.Second {
		t.Fatalf("camera declared dead after %v, before the read timeout", el)
	}
	waitFor(t, 3*time.Second, "reconnect", func() bool { return up.describe.Load() > describes })
	before := w.n.Load()
	up.paused.Store(false)
	waitFor(t, 5*time.Second, "frames after the camera wakes up", func() bool { return w.n.Load() > before })
}

func TestSourceAuth(t *testing.T) {
	const pass = "Zq9-s3cret"
	for _, m := range []struct {
		name   string
		method auth.VerifyMethod
	}{{"basic", auth.VerifyMethodBasic}, {"digest", auth.VerifyMethodDigestMD5}} {
		t.Run(m.name, func(t *testing.T) {
			aus := smallAUs(t)
			b := startBus(t)
			up := &upstream{addr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), user: "admin", pass: pass,
				methods: []auth.VerifyMethod{m.method}}
			up.start(t, aus)
			t.Cleanup(up.close)

			t.Run("wrong", func(t *testing.T) {
				var states stateLog
				sink := ingest.NewBusSink(b.Conn(), b.Subjects(), "bad", states.onChange)
				w := watchVideo(t, b, "bad")
				runSource(t, SourceConfig{Camera: "bad", URL: "rtsp://admin:Xy7-wrongpw@" + up.addr + "/cam",
					Sink: sink, Logger: quietLogger(), Transport: TransportTCP})
				waitFor(t, 5*time.Second, "two refused attempts", func() bool {
					_, errs := states.since(0)
					n := 0
					for _, e := range errs {
						if strings.Contains(e, "401") {
							n++
						}
					}
					return n >= 2
				})
				_, errs := states.since(0)
				for _, e := range errs {
					if strings.Contains(e, "Xy7-wrongpw") {
						t.Fatalf("password in status error %q", e)
					}
				}
				if n := w.n.Load(); n != 0 {
					t.Fatalf("%d access units with wrong credentials", n)
				}
			})
			t.Run("right", func(t *testing.T) {
				sink := ingest.NewBusSink(b.Conn(), b.Subjects(), "good", nil)
				w := watchVideo(t, b, "good")
				runSource(t, SourceConfig{Camera: "good", URL: "rtsp://admin:" + pass + "@" + up.addr + "/cam",
					Sink: sink, Logger: quietLogger(), Transport: TransportAuto})
				waitFor(t, 8*time.Second, "frames with right credentials", func() bool { return w.n.Load() > 10 })
			})
		})
	}
}

// The pull source relays a camera served by our own server (camera A pushed
// by ffmpeg, pulled back in as another camera).
func TestSourceFromOwnServer(t *testing.T) {
	e := newEnv(t, publishCams("cama"))
	ffmpegPush(t, e.url("cama"))
	e.waitOnline(t, "cama", 15*time.Second)
	sink := ingest.NewBusSink(e.b.Conn(), e.b.Subjects(), "camb", nil)
	w := watchVideo(t, e.b, "camb")
	runSource(t, SourceConfig{Camera: "camb", URL: e.url("cama"), Sink: sink, Logger: quietLogger()})
	waitFor(t, 10*time.Second, "relayed keyframe", func() bool { return w.lastKey.Load() != nil })
	if k := w.lastKey.Load(); k.Width != 1920 || k.Height != 1080 {
		t.Fatalf("relayed keyframe %dx%d", k.Width, k.Height)
	}
}

func TestSourceBadConfig(t *testing.T) {
	b := startBus(t)
	for _, cfg := range []SourceConfig{
		{URL: "http://example.com/x"},
		{URL: "rtsp://h/x", Transport: "quic"},
		{URL: "rtsp://u:p@[bad/x"},
	} {
		var states stateLog
		cfg.Sink = ingest.NewBusSink(b.Conn(), b.Subjects(), "x", states.onChange)
		err := NewSource(cfg).Run(context.Background())
		if !errors.Is(err, ErrBadConfig) {
			t.Errorf("%q: err %v, want ErrBadConfig", redact.URL(cfg.URL), err)
		}
		if strings.Contains(fmt.Sprint(err), ":p@") {
			t.Errorf("password in error %v", err)
		}
	}
	if err := NewSource(SourceConfig{URL: "rtsp://h/x"}).Run(context.Background()); !errors.Is(err, ErrBadConfig) {
		t.Errorf("nil sink: %v", err)
	}
}
