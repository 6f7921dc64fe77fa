package usb

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/ingest"
	"github.com/imageflowcanvas/imageflow/media"
	"github.com/imageflowcanvas/imageflow/media/mediabus"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// This machine has no camera: the same capture path runs on libavdevice's
// lavfi input, which delivers raw pictures like a YUYV webcam does. Each
// 0.5 s graph ends, so the source also reopens, and timestamps must go on.
func TestCaptureEncodePath(t *testing.T) {
	b := &bus.Bus{Config: bus.Config{DataDir: t.TempDir()}}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	sink := ingest.NewBusSink(b.Conn(), b.Subjects(), "cam", nil)
	s, err := NewSource(Config{Camera: "cam", Format: "lavfi", Device: "testsrc2=size=320x240:rate=30:duration=0.5", Sink: sink})
	if err != nil {
		t.Fatal(err)
	}
	const want = 40
	var mu sync.Mutex
	var aus []*busv1.AccessUnit
	done := make(chan struct{})
	sub, err := b.Conn().Subscribe(b.Subjects().Video("cam"), func(m *nats.Msg) {
		au := &busv1.AccessUnit{}
		if err := proto.Unmarshal(m.Data, au); err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if len(aus) < want {
			aus = append(aus, au)
			if len(aus) == want {
				close(done)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatalf("got %d access units", len(aus))
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if st := sink.Status(); st.Codec != "h264" || st.Width != 320 || st.Height != 240 || st.State != ingest.StateOffline {
		t.Fatalf("status %v", st)
	}
	mu.Lock()
	defer mu.Unlock()
	dec, _ := media.NewDecoder(media.CodecH264, 1)
	defer dec.Close()
	decoded := 0
	for i, au := range aus {
		if i > 0 && au.Pts <= aus[i-1].Pts {
			t.Fatalf("pts not increasing at %d (reopen after 15 pictures)", i)
		}
		if i > 0 {
			if step := time.Duration(au.Pts - aus[i-1].Pts); step < time.Second/30-time.Microsecond || step > time.Second/30+time.Microsecond {
				t.Fatalf("pts step %v at %d", step, i)
			}
		}
		if (i%15 == 0) != au.Keyframe {
			t.Fatalf("AU %d keyframe %v (each reopen starts on an IDR)", i, au.Keyframe)
		}
		n, err := mediabus.DecodeAU(dec, au)
		if err != nil {
			t.Fatal(err)
		}
		decoded += n
	}
	if decoded != want {
		t.Fatalf("decoded %d of %d", decoded, want)
	}
	if s.Stats().Transcoded.Load() != true {
		t.Fatal("raw input not transcoded")
	}
}

func TestListDevices(t *testing.T) {
	devs, err := ListDevices()
	if err != nil {
		t.Fatal(err)
	}
	if devs == nil {
		t.Fatal("nil list")
	}
	for _, d := range devs {
		if d.Path == "" || len(d.Formats) == 0 {
			t.Errorf("device %+v", d)
		}
	}
	t.Logf("%d devices: %+v", len(devs), devs)

	// Nodes that are not V4L2 devices are left out, without an error.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "video0"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	old := devGlob
	devGlob = filepath.Join(dir, "video*")
	defer func() { devGlob = old }()
	devs, err = ListDevices()
	if err != nil || devs == nil || len(devs) != 0 {
		t.Fatalf("fake node: %v %v", devs, err)
	}
}

func TestConfigErrors(t *testing.T) {
	sink := ingest.NewBusSink(nil, bus.Subjects{Prefix: "ifc"}, "cam", nil)
	for _, c := range []Config{
		{Device: "/dev/video0"},
		{Sink: sink},
		{Sink: sink, Device: "/dev/video0", Width: 640},
		{Sink: sink, Device: "/dev/video0", FPS: -1},
	} {
		if _, err := NewSource(c); err == nil {
			t.Errorf("config %+v accepted", c)
		}
	}
	s, err := NewSource(Config{Sink: sink, Device: "usb:///dev/video3", InputFormat: "MJPG", Width: 1280, Height: 720, FPS: 30})
	if err != nil {
		t.Fatal(err)
	}
	o := s.capture.Demux
	if s.capture.URL != "/dev/video3" || o.Format != "video4linux2" || o.Options["input_format"] != "mjpeg" || o.Options["video_size"] != "1280x720" || o.Options["framerate"] != "30" {
		t.Fatalf("capture config %+v %+v", s.capture.URL, o)
	}
	if FourCC(0x47504a4d) != "MJPG" {
		t.Fatalf("FourCC = %q", FourCC(0x47504a4d))
	}
}
