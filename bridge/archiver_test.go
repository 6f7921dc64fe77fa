package bridge

import (
	"bytes"
	"errors"
	"image"
	"image/jpeg"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"gocv.io/x/gocv"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/bus"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

const messi = "/usr/share/doc/opencv-doc/examples/data/messi5.jpg"

// bgrFrame reads a real photo into the BGR24 frame the frame source
// publishes.
func bgrFrame(t *testing.T) (*busv1.Frame, gocv.Mat) {
	t.Helper()
	img := gocv.IMRead(messi, gocv.IMReadColor)
	if img.Empty() {
		t.Skipf("%s missing (Debian package opencv-doc)", messi)
	}
	t.Cleanup(func() { img.Close() })
	return &busv1.Frame{Camera: "cam-a", Width: uint32(img.Cols()), Height: uint32(img.Rows()),
		Format: busv1.PixelFormat_PIXEL_FORMAT_BGR24, Data: img.ToBytes()}, img
}

func recvArchive(t *testing.T, ch chan *nats.Msg, d time.Duration) *busv1.ArchiveFrame {
	t.Helper()
	select {
	case msg := <-ch:
		var af busv1.ArchiveFrame
		if err := proto.Unmarshal(msg.Data, &af); err != nil {
			t.Fatal(err)
		}
		return &af
	case <-time.After(d):
		t.Fatalf("no archive frame within %v", d)
		return nil
	}
}

// meanAbsDiff compares a decoded JPEG with the BGR source, per channel.
func meanAbsDiff(t *testing.T, jpg []byte, src gocv.Mat) float64 {
	t.Helper()
	img, err := jpeg.Decode(bytes.NewReader(jpg))
	if err != nil {
		t.Fatalf("archived data is not a JPEG: %v", err)
	}
	if img.Bounds() != image.Rect(0, 0, src.Cols(), src.Rows()) {
		t.Fatalf("jpeg %v, source %dx%d", img.Bounds(), src.Cols(), src.Rows())
	}
	var sum, n float64
	for y := 0; y < src.Rows(); y += 7 {
		for x := 0; x < src.Cols(); x += 7 {
			r, g, b, _ := img.At(x, y).RGBA()
			v := src.GetVecbAt(y, x)
			sum += abs(float64(b>>8)-float64(v[0])) + abs(float64(g>>8)-float64(v[1])) + abs(float64(r>>8)-float64(v[2]))
			n += 3
		}
	}
	return sum / n
}

func abs(v float64) float64 {
	if v < 0 {
		return -v
	}
	return v
}

func TestArchiverPublishesJPEGWithLatestResult(t *testing.T) {
	b := startBus(t)
	frame, src := bgrFrame(t)
	s := b.Subjects()
	ch := make(chan *nats.Msg, 64)
	sub, err := b.Conn().ChanSubscribe(s.Archive("cam-a"), ch)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	const interval = 200 * time.Millisecond
	a := &Archiver{Conn: b.Conn(), Subjects: s, Camera: "cam-a", Interval: interval, Logger: quietLogger()}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	res := &busv1.Result{Camera: "cam-a", Pipeline: "people", Pts: 99, Width: frame.Width, Height: frame.Height,
		Detections: []*busv1.Detection{{X: 10, Y: 20, W: 30, H: 40, Label: "person", Score: 0.8}}}
	publish(t, b, s.Results("cam-a"), res)
	if err := b.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "result seen", func() bool { return a.result.Load() != nil })

	// 25 frames per second for 1.2 s: at one frame per 200 ms about 6 are
	// archived, never more than the interval allows.
	start := time.Now()
	sent := 0
	for time.Since(start) < 1200*time.Millisecond {
		frame.Pts = int64(sent)
		frame.IngestUnixNano = time.Now().UnixNano()
		publish(t, b, s.Frames("cam-a"), frame)
		sent++
		time.Sleep(40 * time.Millisecond)
	}
	elapsed := time.Since(start)
	af := recvArchive(t, ch, 5*time.Second)
	if af.Camera != "cam-a" || af.ContentType != "image/jpeg" || af.UnixNano == 0 || !proto.Equal(af.Result, res) {
		t.Fatalf("archive frame %v / result %v", af.Camera, af.Result)
	}
	if d := meanAbsDiff(t, af.Data, src); d > 6 {
		t.Fatalf("JPEG differs from the frame by %.1f per channel (colours swapped?)", d)
	}
	waitFor(t, 5*time.Second, "all frames counted", func() bool {
		return a.Counters.Archived.Load()+a.Counters.Skipped.Load() == uint64(sent)
	})
	archived := int(a.Counters.Archived.Load())
	most := int(elapsed/interval) + 1
	t.Logf("%d frames in %v, %d archived (%d KiB JPEG), %d skipped", sent, elapsed, archived, len(af.Data)>>10, a.Counters.Skipped.Load())
	if archived < 2 || archived > most {
		t.Fatalf("archived %d of %d frames in %v, want 2..%d", archived, sent, elapsed, most)
	}
	if a.Counters.Errors.Load() != 0 {
		t.Fatalf("errors: %d", a.Counters.Errors.Load())
	}
	// The ARCHIVE stream holds them for the Mirror.
	st, err := b.JetStream().Stream(t.Context(), "ARCHIVE")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "ARCHIVE stream holds every archived frame", func() bool {
		info, err := st.Info(t.Context())
		return err == nil && int(info.State.Msgs) == archived
	})
}

func TestArchiverFormatsAndBadFrames(t *testing.T) {
	b := startBus(t)
	frame, src := bgrFrame(t)
	s := b.Subjects()
	ch := make(chan *nats.Msg, 8)
	sub, err := b.Conn().ChanSubscribe(s.Archive("cam-b"), ch)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	// A tiny interval: every frame sent after the previous one was handled is due.
	a := &Archiver{Conn: b.Conn(), Subjects: s, Camera: "cam-b", Interval: time.Nanosecond, Logger: quietLogger()}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	w, h := int(frame.Width), int(frame.Height)

	// Padded rows (stride) are packed.
	const pad = 13
	padded := make([]byte, (w*3+pad)*h)
	for y := range h {
		copy(padded[y*(w*3+pad):], frame.Data[y*w*3:(y+1)*w*3])
	}
	// RGB24 is the same picture with the channels swapped.
	rgb := bytes.Clone(frame.Data)
	for i := 0; i+2 < len(rgb); i += 3 {
		rgb[i], rgb[i+2] = rgb[i+2], rgb[i]
	}
	good := []*busv1.Frame{
		{Width: uint32(w), Height: uint32(h), Stride: uint32(w*3 + pad), Format: busv1.PixelFormat_PIXEL_FORMAT_BGR24, Data: padded},
		{Width: uint32(w), Height: uint32(h), Format: busv1.PixelFormat_PIXEL_FORMAT_RGB24, Data: rgb},
	}
	for i, f := range good {
		publish(t, b, s.Frames("cam-b"), f)
		af := recvArchive(t, ch, 5*time.Second)
		if d := meanAbsDiff(t, af.Data, src); d > 6 {
			t.Fatalf("case %d: JPEG differs by %.1f", i, d)
		}
	}
	// A JPEG frame passes through untouched; gray frames encode.
	jpg := []byte{0xff, 0xd8, 0xff, 0xe0, 1, 2, 3}
	publish(t, b, s.Frames("cam-b"), &busv1.Frame{Format: busv1.PixelFormat_PIXEL_FORMAT_JPEG, Data: jpg})
	if af := recvArchive(t, ch, 5*time.Second); !bytes.Equal(af.Data, jpg) {
		t.Fatal("JPEG frame changed")
	}
	publish(t, b, s.Frames("cam-b"), &busv1.Frame{Width: 16, Height: 8, Format: busv1.PixelFormat_PIXEL_FORMAT_GRAY8, Data: make([]byte, 128)})
	if af := recvArchive(t, ch, 5*time.Second); !bytes.HasPrefix(af.Data, []byte{0xff, 0xd8}) {
		t.Fatal("gray frame not a JPEG")
	}

	// Bad frames are counted, never archived, never a panic.
	bad := [][]byte{
		{0xff, 0xff, 0xff},
		mustMarshal(t, &busv1.Frame{Width: 100, Height: 100, Format: busv1.PixelFormat_PIXEL_FORMAT_BGR24, Data: make([]byte, 10)}),
		mustMarshal(t, &busv1.Frame{Width: 100, Height: 100, Stride: 50, Format: busv1.PixelFormat_PIXEL_FORMAT_BGR24, Data: make([]byte, 30000)}),
		mustMarshal(t, &busv1.Frame{Width: 1 << 20, Height: 1, Format: busv1.PixelFormat_PIXEL_FORMAT_BGR24}),
		mustMarshal(t, &busv1.Frame{Width: 4, Height: 4, Format: busv1.PixelFormat_PIXEL_FORMAT_I420, Data: make([]byte, 24)}),
	}
	for i, raw := range bad {
		before := a.Counters.Errors.Load()
		if err := b.Conn().Publish(s.Frames("cam-b"), raw); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "error counted", func() bool { return a.Counters.Errors.Load() == before+1 })
		select {
		case <-ch:
			t.Fatalf("bad frame %d archived", i)
		default:
		}
	}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestArchiverRejectsBadConfig(t *testing.T) {
	b := startBus(t)
	for _, tc := range []struct {
		a    *Archiver
		want error
	}{
		{&Archiver{Camera: "c"}, ErrNoConn},
		{&Archiver{Conn: b.Conn(), Camera: "c.d"}, bus.ErrInvalidToken},
		{&Archiver{Conn: b.Conn(), Camera: "c", Quality: 101}, ErrQuality},
	} {
		if err := tc.a.Start(); !errors.Is(err, tc.want) {
			t.Errorf("got %v, want %v", err, tc.want)
		}
		tc.a.Close()
	}
}
