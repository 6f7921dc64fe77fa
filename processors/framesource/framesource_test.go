package framesource

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/bus/hub"
	"github.com/imageflowcanvas/imageflow/ingest"
	"github.com/imageflowcanvas/imageflow/media"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// picture draws a moving square on a gradient (BGR24).
func picture(buf []byte, w, h, i int) {
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			o := (y*w + x) * 3
			buf[o], buf[o+1], buf[o+2] = byte(x+i), byte(y), byte(x^y)
		}
	}
	sx := (i * 9) % (w - 40)
	for y := 40; y < 80; y++ {
		for x := sx; x < sx+40; x++ {
			o := (y*w + x) * 3
			buf[o], buf[o+1], buf[o+2] = 255, 255, 255
		}
	}
}

type harness struct {
	b      *bus.Bus
	h      *hub.Hub
	sink   *ingest.BusSink
	mu     sync.Mutex
	frames []*busv1.Frame
	sub    *nats.Subscription
	// clock is where the next written access unit's pts starts: a second
	// write goes on from the first.
	clock int64
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	b := &bus.Bus{Config: bus.Config{DataDir: t.TempDir()}}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	hs := &harness{b: b, h: hub.New(b.Conn(), b.Subjects()), sink: ingest.NewBusSink(b.Conn(), b.Subjects(), "cam", nil)}
	sub, err := b.Conn().Subscribe(b.Subjects().Frames("cam"), func(m *nats.Msg) {
		f := &busv1.Frame{}
		if err := proto.Unmarshal(m.Data, f); err != nil {
			t.Error(err)
			return
		}
		hs.mu.Lock()
		hs.frames = append(hs.frames, f)
		hs.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	hs.sub = sub
	t.Cleanup(func() {
		_ = sub.Unsubscribe()
		hs.h.Close()
		b.Close()
	})
	return hs
}

func (hs *harness) start(t *testing.T, r *Runner) func() {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- r.Run(ctx) }()
	// The runner subscribes asynchronously: wait until its reader exists so
	// the first keyframe reaches it.
	deadline := time.Now().Add(5 * time.Second)
	for hs.h.Readers("cam") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("runner did not subscribe")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run = %v", err)
		}
	}
}

// encodeAndWrite encodes n pictures of w×h at fps and writes them through the
// bus sink, paced at speed× real time; it returns the AUs' rtp timestamps by pts.
func (hs *harness) encodeAndWrite(t *testing.T, w, h, fps, gop, n int, speed float64) map[int64]uint32 {
	t.Helper()
	return hs.encodeKeysAndWrite(t, w, h, fps, gop, n, speed, nil)
}

// encodeKeysAndWrite is encodeAndWrite with keyframes also where keys says.
func (hs *harness) encodeKeysAndWrite(t *testing.T, w, h, fps, gop, n int, speed float64, keys map[int]bool) map[int64]uint32 {
	t.Helper()
	enc, err := media.NewH264Encoder(w, h, fps, 1_000_000, gop)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	pic := make([]byte, w*h*3)
	rtps := map[int64]uint32{}
	start := time.Now()
	step := time.Second / time.Duration(fps)
	for i := 0; i < n; i++ {
		picture(pic, w, h, i)
		pts := hs.clock + int64(i)*int64(step)
		if keys[i] {
			enc.ForceKeyframe()
		}
		out, err := enc.EncodeBGR(pic, w, h, 0, pts)
		if err != nil || out == nil {
			t.Fatalf("encode %d: %v", i, err)
		}
		rtp := uint32(1_000_000 + pts*9/100000)
		rtps[pts] = rtp
		au := &busv1.AccessUnit{Codec: busv1.Codec_CODEC_H264, Pts: pts, RtpTimestamp: rtp, ClockRate: 90000, Keyframe: out.Keyframe, Nalus: out.NALUs}
		if err := hs.sink.WriteAccessUnit(au); err != nil {
			t.Fatal(err)
		}
		if wait := time.Until(start.Add(time.Duration(float64(i+1) * float64(step) / speed))); wait > 0 {
			time.Sleep(wait) // pacing the producer like a camera, not waiting for a result
		}
	}
	hs.clock += int64(n) * int64(step)
	return rtps
}

func (hs *harness) waitFrames(t *testing.T, r *Runner, published uint64) []*busv1.Frame {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		hs.mu.Lock()
		n := len(hs.frames)
		hs.mu.Unlock()
		if uint64(n) >= published {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("received %d frames, runner published %d", n, published)
		}
		time.Sleep(10 * time.Millisecond)
	}
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return append([]*busv1.Frame(nil), hs.frames...)
}

// Two seconds of 30 fps 640x360 video become ~10 frames of 320x180 at 5 fps,
// each carrying its access unit's timestamps.
func TestRunnerSamplesAndScales(t *testing.T) {
	hs := newHarness(t)
	r := &Runner{Camera: "cam", Hub: hs.h, Conn: hs.b.Conn(), Subjects: hs.b.Subjects(), Width: 320}
	stop := hs.start(t, r)
	rtps := hs.encodeAndWrite(t, 640, 360, 30, 30, 60, 1)
	// The last access units may still be in flight: wait until everything
	// written is decoded before stopping.
	deadline := time.Now().Add(5 * time.Second)
	for r.Counters.Decoded.Load()+r.Counters.Errors.Load() < 60 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	frames := hs.waitFrames(t, r, r.Counters.Published.Load())
	if len(frames) < 9 || len(frames) > 11 {
		t.Fatalf("%d frames for 2 s at 5 fps", len(frames))
	}
	for i, f := range frames {
		if f.Camera != "cam" || f.Format != busv1.PixelFormat_PIXEL_FORMAT_BGR24 || f.Width != 320 || f.Height != 180 || f.Stride != 960 || len(f.Data) != 320*180*3 {
			t.Fatalf("frame %d: %s %v %dx%d stride %d len %d", i, f.Camera, f.Format, f.Width, f.Height, f.Stride, len(f.Data))
		}
		rtp, ok := rtps[f.Pts]
		if !ok || rtp != f.RtpTimestamp || f.IngestUnixNano == 0 || f.Sequence != uint64(i+1) {
			t.Fatalf("frame %d pts %d rtp %d (AU rtp %d, %v) ingest %d seq %d", i, f.Pts, f.RtpTimestamp, rtp, ok, f.IngestUnixNano, f.Sequence)
		}
		if i > 0 {
			if d := time.Duration(f.Pts - frames[i-1].Pts); d < 190*time.Millisecond || d > 240*time.Millisecond {
				t.Fatalf("frame %d is %v after the previous one", i, d)
			}
		}
	}
	c := &r.Counters
	if c.Errors.Load() != 0 || c.Decoded.Load() != 60 || c.Skipped.Load() != 60-c.Published.Load() {
		t.Fatalf("counters decoded %d published %d skipped %d errors %d", c.Decoded.Load(), c.Published.Load(), c.Skipped.Load(), c.Errors.Load())
	}
	// The picture is not blank: the square and gradient survive the trip.
	f := frames[len(frames)-1]
	if min, max := minMax(f.Data); max-min < 100 {
		t.Fatalf("flat picture %d..%d", min, max)
	}
}

// waitHandled waits until n access units were decoded or left undecoded,
// then stops the runner.
func waitHandled(t *testing.T, r *Runner, n uint64, stop func()) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for r.Counters.Decoded.Load()+r.Counters.Skipped.Load()-r.Counters.Published.Load() < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	stop()
}

// Six seconds of 30 fps with a keyframe every second, sampled at 5 fps:
// once two GOPs were one second long, the five pictures after each GOP's
// last sample (24) are left undecoded, and the samples are the same
// pictures, 200 ms apart, as decoding everything gives.
func TestRunnerSkipsTheGOPAfterItsLastSample(t *testing.T) {
	hs := newHarness(t)
	r := &Runner{Camera: "cam", Hub: hs.h, Conn: hs.b.Conn(), Subjects: hs.b.Subjects(), Width: 320}
	stop := hs.start(t, r)
	hs.encodeAndWrite(t, 640, 360, 30, 30, 180, 2)
	waitHandled(t, r, 180, stop)
	frames := hs.waitFrames(t, r, r.Counters.Published.Load())
	c := &r.Counters
	// GOPs 1 and 2 whole, GOPs 3 to 6 up to picture 24.
	if c.Decoded.Load() != 30+30+4*25 || c.Errors.Load() != 0 {
		t.Fatalf("decoded %d pictures (want 160), errors %d", c.Decoded.Load(), c.Errors.Load())
	}
	step := int64(time.Second / 30)
	if len(frames) != 30 {
		t.Fatalf("%d frames for 6 s at 5 fps", len(frames))
	}
	for i, f := range frames {
		if want := int64(i) * 6 * step; f.Pts != want {
			t.Fatalf("frame %d is picture %.1f, want %d", i, float64(f.Pts)/float64(step), i*6)
		}
	}
}

// A keyframe later than the steady GOPs said (picture 126 instead of 120)
// costs the samples until it comes, never a damaged picture; then
// everything is decoded until two GOPs agree again.
func TestRunnerLateKeyframeAfterSkipping(t *testing.T) {
	hs := newHarness(t)
	r := &Runner{Camera: "cam", Hub: hs.h, Conn: hs.b.Conn(), Subjects: hs.b.Subjects(), Width: 320}
	stop := hs.start(t, r)
	keys := map[int]bool{0: true, 30: true, 60: true, 90: true, 126: true, 156: true, 186: true}
	hs.encodeKeysAndWrite(t, 640, 360, 30, 1000, 216, 2, keys)
	waitHandled(t, r, 216, stop)
	frames := hs.waitFrames(t, r, r.Counters.Published.Load())
	c := &r.Counters
	// GOP 90-125: 90..114 decoded, 115..125 not; GOP 126-155 (36 after 30:
	// not steady) whole; 156-185 whole (the intervals agree at 186); 186-215
	// up to 210.
	if want := uint64(30 + 30 + 25 + 25 + 30 + 30 + 25); c.Decoded.Load() != want || c.Errors.Load() != 0 {
		t.Fatalf("decoded %d pictures (want %d), errors %d", c.Decoded.Load(), want, c.Errors.Load())
	}
	step := int64(time.Second / 30)
	var got []int64
	for _, f := range frames {
		got = append(got, f.Pts/step)
	}
	want := []int64{0, 6, 12, 18, 24, 30, 36, 42, 48, 54, 60, 66, 72, 78, 84, 90, 96, 102, 108, 114,
		126, 132, 138, 144, 150, 156, 162, 168, 174, 180, 186, 192, 198, 204, 210}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("sampled pictures %v, want %v", got, want)
	}
}

// With Deliver, every frame goes to the consumer in this process, and on
// the bus only while Interest reports another subscriber.
func TestRunnerDeliversLocallyAndPublishesOnInterest(t *testing.T) {
	hs := newHarness(t)
	var delivered atomic.Uint64
	var others atomic.Bool
	r := &Runner{Camera: "cam", Hub: hs.h, Conn: hs.b.Conn(), Subjects: hs.b.Subjects(), Width: 320,
		Deliver: func(f *busv1.Frame) {
			if f.Camera == "cam" && f.Width == 320 && len(f.Data) == 320*180*3 {
				delivered.Add(1)
			}
		},
		Interest: func(subject string) bool { return subject == hs.b.Subjects().Frames("cam") && others.Load() },
	}
	stop := hs.start(t, r)
	hs.encodeAndWrite(t, 640, 360, 30, 30, 30, 1)
	waitHandled(t, r, 30, func() {})
	if n := len(hs.waitFrames(t, r, 0)); n != 0 || delivered.Load() != r.Counters.Published.Load() || delivered.Load() < 4 {
		t.Fatalf("no one else subscribed: %d frames on the bus, %d delivered of %d", n, delivered.Load(), r.Counters.Published.Load())
	}
	others.Store(true)
	before := delivered.Load()
	hs.encodeAndWrite(t, 640, 360, 30, 30, 30, 1)
	waitHandled(t, r, 60, stop)
	frames := hs.waitFrames(t, r, r.Counters.Published.Load()-before)
	if uint64(len(frames)) != delivered.Load()-before || len(frames) < 4 {
		t.Fatalf("with a subscriber: %d frames on the bus, %d delivered", len(frames), delivered.Load()-before)
	}
}

// At 1 fps with a 0.5 s GOP only keyframes are decoded.
func TestRunnerKeyframesOnly(t *testing.T) {
	hs := newHarness(t)
	r := &Runner{Camera: "cam", Hub: hs.h, Conn: hs.b.Conn(), Subjects: hs.b.Subjects(), FPS: 1, Width: 640}
	stop := hs.start(t, r)
	hs.encodeAndWrite(t, 320, 240, 30, 15, 90, 3) // 3 s of video in 1 s
	deadline := time.Now().Add(5 * time.Second)
	for r.Counters.Decoded.Load()+r.Counters.Skipped.Load() < 90 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	frames := hs.waitFrames(t, r, r.Counters.Published.Load())
	c := &r.Counters
	// 6 keyframes; the first GOP is decoded fully until the GOP length is
	// known at the second keyframe.
	if d := c.Decoded.Load(); d < 6 || d > 6+15 {
		t.Fatalf("decoded %d pictures", d)
	}
	if len(frames) != 3 {
		t.Fatalf("%d frames for 3 s at 1 fps", len(frames))
	}
	for _, f := range frames {
		if f.Width != 320 || f.Height != 240 { // never enlarged
			t.Fatalf("frame %dx%d", f.Width, f.Height)
		}
	}
}

// Damaged access units are counted, not fatal.
func TestRunnerCountsErrors(t *testing.T) {
	hs := newHarness(t)
	r := &Runner{Camera: "cam", Hub: hs.h, Conn: hs.b.Conn(), Subjects: hs.b.Subjects()}
	stop := hs.start(t, r)
	bad := &busv1.AccessUnit{Codec: busv1.Codec_CODEC_H264, Pts: 1, Keyframe: true, Nalus: [][]byte{{0x67, 0x42, 0xff}, {0x65, 0xff, 0x00, 0x13}}}
	if err := hs.sink.WriteAccessUnit(bad); err != nil {
		t.Fatal(err)
	}
	unsupported := &busv1.AccessUnit{Codec: busv1.Codec_CODEC_UNSPECIFIED, Pts: 3, Keyframe: true, Data: []byte{1, 2}}
	if err := hs.sink.WriteAccessUnit(unsupported); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.Counters.Errors.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("errors %d", r.Counters.Errors.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	if r.Counters.Published.Load() != 0 {
		t.Fatal("published a frame from garbage")
	}
}

func TestChooseSkip(t *testing.T) {
	ms := int64(time.Millisecond)
	cases := []struct {
		interval, gop, dur int64
		want               media.SkipMode
	}{
		{200 * ms, 0, 0, media.SkipNone},
		{200 * ms, 2000 * ms, 33 * ms, media.SkipNonRef},
		{2000 * ms, 2000 * ms, 33 * ms, media.SkipNonKey},
		{1000 * ms, 500 * ms, 33 * ms, media.SkipNonKey},
		{40 * ms, 1000 * ms, 33 * ms, media.SkipNone},
		{200 * ms, 1000 * ms, 0, media.SkipNone},
	}
	for _, c := range cases {
		if got := ChooseSkip(c.interval, c.gop, c.dur); got != c.want {
			t.Errorf("ChooseSkip(%d, %d, %d) = %v, want %v", c.interval, c.gop, c.dur, got, c.want)
		}
	}
}

func TestRunnerConfigErrors(t *testing.T) {
	ctx := context.Background()
	if err := (&Runner{}).Run(ctx); err != ErrNoCamera {
		t.Fatal(err)
	}
	if err := (&Runner{Camera: "c"}).Run(ctx); err != ErrNoHub {
		t.Fatal(err)
	}
	if err := (&Runner{Camera: "c", Hub: hub.New(nil, bus.Subjects{})}).Run(ctx); err != ErrNoConn {
		t.Fatal(err)
	}
}

func minMax(b []byte) (lo, hi int) {
	lo, hi = 255, 0
	for _, v := range b {
		lo, hi = min(lo, int(v)), max(hi, int(v))
	}
	return lo, hi
}

// BenchmarkRunner measures one access unit through decode, sampling and (for
// every sixth) scale and publish: 640x360 at 30 fps sampled at 5 fps.
func BenchmarkRunner(b *testing.B) {
	bs := &bus.Bus{Config: bus.Config{DataDir: b.TempDir()}}
	if err := bs.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer bs.Close()
	h := hub.New(bs.Conn(), bs.Subjects())
	defer h.Close()
	const w, ht, n = 640, 360, 60
	enc, err := media.NewH264Encoder(w, ht, 30, 1_000_000, 30)
	if err != nil {
		b.Fatal(err)
	}
	pic := make([]byte, w*ht*3)
	aus := make([]*busv1.AccessUnit, n)
	for i := range aus {
		picture(pic, w, ht, i)
		out, err := enc.EncodeBGR(pic, w, ht, 0, int64(i))
		if err != nil || out == nil {
			b.Fatal(err)
		}
		au := &busv1.AccessUnit{Codec: busv1.Codec_CODEC_H264, Keyframe: out.Keyframe}
		for _, nl := range out.NALUs {
			au.Nalus = append(au.Nalus, append([]byte(nil), nl...))
		}
		aus[i] = au
	}
	enc.Close()
	r := &Runner{Camera: "cam", Hub: h, Conn: bs.Conn(), Subjects: bs.Subjects()}
	if err := r.setup(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		if r.dec != nil {
			r.dec.Close()
		}
	}()
	subject := bs.Subjects().Frames("cam")
	step := int64(time.Second / 30)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		au := aus[i%n]
		au.Pts = int64(i) * step
		au.RtpTimestamp = uint32(au.Pts * 9 / 100000)
		r.handle(au, subject)
	}
	b.StopTimer()
	b.ReportMetric(float64(r.Counters.Published.Load())/float64(b.N), "published/op")
	if r.Counters.Errors.Load() != 0 {
		b.Fatalf("%d errors", r.Counters.Errors.Load())
	}
}
