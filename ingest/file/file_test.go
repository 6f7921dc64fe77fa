package file

import (
	"context"
	"os"
	"os/exec"
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
	"github.com/imageflowcanvas/imageflow/media/h26x"
	"github.com/imageflowcanvas/imageflow/media/mediabus"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// Every source goroutine (and the bus's) must be gone after the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const vtest = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"

func startBus(t *testing.T) *bus.Bus {
	t.Helper()
	b := &bus.Bus{Config: bus.Config{DataDir: t.TempDir()}}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// collect subscribes to the camera's video subject and returns the first n
// access units with their arrival times.
func collect(t *testing.T, b *bus.Bus, cam string, n int) (func(time.Duration) ([]*busv1.AccessUnit, []time.Time), func()) {
	t.Helper()
	var mu sync.Mutex
	var aus []*busv1.AccessUnit
	var at []time.Time
	done := make(chan struct{})
	sub, err := b.Conn().Subscribe(b.Subjects().Video(cam), func(m *nats.Msg) {
		au := &busv1.AccessUnit{}
		if err := proto.Unmarshal(m.Data, au); err != nil {
			t.Errorf("unmarshal: %v", err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if len(aus) < n {
			aus = append(aus, au)
			at = append(at, time.Now())
			if len(aus) == n {
				close(done)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	wait := func(d time.Duration) ([]*busv1.AccessUnit, []time.Time) {
		select {
		case <-done:
		case <-time.After(d):
			mu.Lock()
			t.Fatalf("got %d of %d access units in %v", len(aus), n, d)
			mu.Unlock()
		}
		mu.Lock()
		defer mu.Unlock()
		return aus, at
	}
	return wait, func() { _ = sub.Unsubscribe() }
}

// run starts the source and returns a stop function that waits for Run.
func run(t *testing.T, s *Source) func() {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	return func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Run = %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
	}
}

// checkStream decodes the units and checks what the bus contract promises.
func checkStream(t *testing.T, aus []*busv1.AccessUnit, w, h int) {
	t.Helper()
	dec, err := media.NewDecoder(media.CodecH264, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	if !aus[0].Keyframe {
		t.Fatal("first access unit is not a keyframe")
	}
	decoded := 0
	for i, au := range aus {
		if au.Camera != "cam" || au.Codec != busv1.Codec_CODEC_H264 || au.ClockRate != 90000 || au.IngestUnixNano == 0 {
			t.Fatalf("AU %d header %v %v %d %d", i, au.Camera, au.Codec, au.ClockRate, au.IngestUnixNano)
		}
		if i > 0 && (au.Sequence != aus[i-1].Sequence+1 || au.Pts <= aus[i-1].Pts || int32(au.RtpTimestamp-aus[i-1].RtpTimestamp) <= 0) {
			t.Fatalf("AU %d: seq %d pts %d rtp %d after seq %d pts %d rtp %d", i, au.Sequence, au.Pts, au.RtpTimestamp, aus[i-1].Sequence, aus[i-1].Pts, aus[i-1].RtpTimestamp)
		}
		if au.Keyframe {
			if !paramSetsFirst(au.Nalus) {
				t.Fatalf("keyframe AU %d: no SPS and PPS before the IDR", i)
			}
			if au.Width != uint32(w) || au.Height != uint32(h) {
				t.Fatalf("keyframe AU %d size %dx%d", i, au.Width, au.Height)
			}
		}
		n, err := mediabus.DecodeAU(dec, au)
		if err != nil {
			t.Fatalf("decode AU %d: %v", i, err)
		}
		decoded += n
	}
	if decoded < len(aus)-2 { // B-frame reorder delay
		t.Fatalf("decoded %d of %d", decoded, len(aus))
	}
	if p, _ := dec.Picture(); p.Width != w || p.Height != h {
		t.Fatalf("picture %dx%d", p.Width, p.Height)
	}
}

// paramSetsFirst reports whether SPS and PPS come before the first IDR slice.
func paramSetsFirst(nalus [][]byte) bool {
	sps, pps := false, false
	for _, n := range nalus {
		switch h26x.H264NALUType(n) {
		case h26x.H264NALUTypeSPS:
			sps = true
		case h26x.H264NALUTypePPS:
			pps = true
		case h26x.H264NALUTypeIDR:
			return sps && pps
		}
	}
	return false
}

// vtest.avi (MS-MPEG4 v3, 768x576, 10 fps) is re-encoded in real time.
func TestFileTranscodeRealtime(t *testing.T) {
	if _, err := os.Stat(vtest); err != nil {
		t.Skipf("opencv-doc not installed: %v", err)
	}
	b := startBus(t)
	sink := ingest.NewBusSink(b.Conn(), b.Subjects(), "cam", nil)
	s, err := NewSource(Config{Camera: "cam", Path: "file://" + vtest, Sink: sink})
	if err != nil {
		t.Fatal(err)
	}
	wait, unsub := collect(t, b, "cam", 15)
	defer unsub()
	stop := run(t, s)
	aus, at := wait(10 * time.Second)
	if st := sink.Status(); st.State != ingest.StateOnline || st.Codec != "h264" || st.Width != 768 || st.Height != 576 {
		t.Fatalf("status %v", st)
	}
	stop()
	if st := sink.Status(); st.State != ingest.StateOffline {
		t.Fatalf("state after stop %q", st.State)
	}
	checkStream(t, aus, 768, 576)
	// Real time: 14 intervals of 100 ms.
	if el := at[len(at)-1].Sub(at[0]); el < 1200*time.Millisecond || el > 2500*time.Millisecond {
		t.Fatalf("15 units of a 10 fps file arrived over %v", el)
	}
	if d := aus[14].Pts - aus[0].Pts; d != int64(1400*time.Millisecond) {
		t.Fatalf("pts span %v", time.Duration(d))
	}
}

// An H264 mp4 passes through and loops with continuous timestamps.
func TestFilePassthroughLoop(t *testing.T) {
	path := filepath.Join(t.TempDir(), "short.mp4")
	out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
		"-frames:v", "10", "-c:v", "libx264", "-preset", "ultrafast", "-g", "5", "-bf", "0", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	b := startBus(t)
	sink := ingest.NewBusSink(b.Conn(), b.Subjects(), "cam", nil)
	s, err := NewSource(Config{Camera: "cam", Path: path, Sink: sink})
	if err != nil {
		t.Fatal(err)
	}
	wait, unsub := collect(t, b, "cam", 25)
	defer unsub()
	stop := run(t, s)
	aus, _ := wait(10 * time.Second)
	stop()
	checkStream(t, aus, 320, 240)
	for i := 1; i < len(aus); i++ {
		if d := aus[i].Pts - aus[i-1].Pts; d != int64(40*time.Millisecond) {
			t.Fatalf("pts step %v at %d (loop at 10, 20)", time.Duration(d), i)
		}
		if want := i%5 == 0; aus[i].Keyframe != want {
			t.Fatalf("AU %d keyframe %v", i, aus[i].Keyframe)
		}
	}
	if s.Stats().Loops.Load() < 2 || s.Stats().Transcoded.Load() {
		t.Fatalf("loops %d transcoded %v", s.Stats().Loops.Load(), s.Stats().Transcoded.Load())
	}
}

// A missing file is retried with backoff and reported offline with the error.
func TestFileMissingRetries(t *testing.T) {
	b := startBus(t)
	sink := ingest.NewBusSink(b.Conn(), b.Subjects(), "cam", nil)
	path := filepath.Join(t.TempDir(), "later.mp4")
	s, err := NewSource(Config{Camera: "cam", Path: path, Sink: sink})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, s)
	deadline := time.Now().Add(5 * time.Second)
	for sink.Status().LastError == "" {
		if time.Now().After(deadline) {
			t.Fatal("no error reported for a missing file")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := sink.Status().State; st == ingest.StateOnline {
		t.Fatalf("state %q", st)
	}
	// The file appears: the source picks it up on a retry.
	out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25",
		"-frames:v", "25", "-c:v", "libx264", "-preset", "ultrafast", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	for sink.Status().State != ingest.StateOnline {
		if time.Now().After(deadline.Add(5 * time.Second)) {
			t.Fatalf("source did not come online: %v", sink.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
}

func TestNewSourceErrors(t *testing.T) {
	if _, err := NewSource(Config{Path: "x.mp4"}); err != ErrNoSink {
		t.Fatalf("no sink: %v", err)
	}
	sink := ingest.NewBusSink(nil, bus.Subjects{Prefix: "ifc"}, "cam", nil)
	if _, err := NewSource(Config{Sink: sink}); err != ErrNoPath {
		t.Fatalf("no path: %v", err)
	}
	for in, want := range map[string]string{
		"file:///data/a.mp4":     "/data/a.mp4",
		"file://data/a.mp4":      "data/a.mp4",
		"/abs/b.avi":             "/abs/b.avi",
		"file://localhost/c.mp4": "/c.mp4",
	} {
		if got, err := PathFromURL(in); err != nil || got != want {
			t.Errorf("PathFromURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
