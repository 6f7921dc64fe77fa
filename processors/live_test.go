package processors_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"gocv.io/x/gocv"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/processors"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

func startBus(t *testing.T) *bus.Bus {
	t.Helper()
	b := &bus.Bus{Config: bus.Config{DataDir: t.TempDir()}}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// bgrFrame wraps a BGR Mat as a raw frame with a row stride padded by pad
// bytes, like a decoder's aligned output.
func bgrFrame(t *testing.T, m gocv.Mat, seq uint64, pad int) *busv1.Frame {
	t.Helper()
	b, err := m.DataPtrUint8()
	if err != nil {
		t.Fatal(err)
	}
	row := m.Cols() * 3
	stride := row + pad
	data := make([]byte, stride*m.Rows())
	for y := 0; y < m.Rows(); y++ {
		copy(data[y*stride:], b[y*row:(y+1)*row])
	}
	return &busv1.Frame{
		Camera: "cam1", Pts: int64(seq) * 40_000_000, RtpTimestamp: uint32(1000 + seq*3600),
		Width: uint32(m.Cols()), Height: uint32(m.Rows()), Format: busv1.PixelFormat_PIXEL_FORMAT_BGR24,
		Stride: uint32(stride), Data: data, Sequence: seq,
	}
}

func nextResult(t *testing.T, sub *nats.Subscription) *busv1.Result {
	t.Helper()
	m, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no result: %v", err)
	}
	var r busv1.Result
	if err := proto.Unmarshal(m.Data, &r); err != nil {
		t.Fatal(err)
	}
	return &r
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLiveRunnerPublishesResults(t *testing.T) {
	b := startBus(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	frames := vtestFrames(t, 10, 50, 100)
	reg := builtins()
	m := processors.NewMetrics(prometheus.NewRegistry())
	r := &processors.LiveRunner{
		Camera: "cam1",
		// Full size: HOG's 64x128 window misses vtest's people once the
		// frame is scaled down (the engine tests cover the mapping).
		Pipeline: pipe("people",
			st(t, "gray", "filter", map[string]any{"mode": "grayscale"}),
			st(t, "people", "detect", map[string]any{"backend": "hog"}, "gray"),
		),
		Registry: reg, Conn: b.Conn(), Subjects: b.Subjects(), Metrics: m,
	}
	results, err := b.Conn().SubscribeSync(b.Subjects().Results("cam1"))
	if err != nil {
		t.Fatal(err)
	}
	defer results.Unsubscribe()
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	people := 0
	for i, f := range frames {
		seq := uint64(i + 1)
		fr := bgrFrame(t, f, seq, 16*(i%2))
		if i == 2 {
			// The last frame travels as JPEG.
			buf, err := gocv.IMEncode(gocv.JPEGFileExt, f)
			if err != nil {
				t.Fatal(err)
			}
			fr.Format, fr.Data, fr.Stride = busv1.PixelFormat_PIXEL_FORMAT_JPEG, append([]byte(nil), buf.GetBytes()...), 0
			buf.Close()
		}
		if i < 2 {
			// Its access unit entered the server a moment ago; the JPEG
			// frame carries no ingest time and is not measured from it.
			fr.IngestUnixNano = time.Now().Add(-5 * time.Millisecond).UnixNano()
		}
		if err := bus.Publish(b.Conn(), b.Subjects().Frames("cam1"), fr); err != nil {
			t.Fatal(err)
		}
		res := nextResult(t, results)
		if res.RtpTimestamp != fr.RtpTimestamp || res.Pts != fr.Pts || res.Sequence != seq ||
			res.Width != uint32(f.Cols()) || res.Height != uint32(f.Rows()) || res.Camera != "cam1" || res.Pipeline != "people" {
			t.Fatalf("result %v does not match frame rtp=%d pts=%d seq=%d %dx%d", res, fr.RtpTimestamp, fr.Pts, seq, f.Cols(), f.Rows())
		}
		t.Logf("frame %d: %d people", i, len(res.Detections))
		people += len(res.Detections)
		if res.LatencyNs <= 0 {
			t.Fatalf("frame %d: latency %d", i, res.LatencyNs)
		}
		for _, d := range res.Detections {
			if d.Label != "person" || d.X < 0 || d.X+d.W > float32(f.Cols())+1 || d.Y+d.H > float32(f.Rows())+1 {
				t.Fatalf("detection %v outside the %dx%d frame", d, f.Cols(), f.Rows())
			}
		}
	}
	// Several people walk through every frame of vtest.avi.
	if people < len(frames) {
		t.Fatalf("%d people in %d frames", people, len(frames))
	}
	// A frame that is not a picture is counted and dropped, the runner lives on.
	bad := &busv1.Frame{Camera: "cam1", Width: 10, Height: 10, Format: busv1.PixelFormat_PIXEL_FORMAT_BGR24, Data: []byte{1, 2, 3}}
	if err := bus.Publish(b.Conn(), b.Subjects().Frames("cam1"), bad); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the bad frame to be counted", func() bool { return r.Failed() == 1 })
	if r.Processed() != 3 || counterValue(m.Results.WithLabelValues("cam1", "people")) != 3 {
		t.Fatalf("processed %d", r.Processed())
	}
	// Ingest -> result is measured for the two frames with an ingest time,
	// and it includes the 5 ms before they reached the bus.
	var ingest dto.Metric
	if err := m.IngestLatency.WithLabelValues("cam1", "people").(prometheus.Metric).Write(&ingest); err != nil {
		t.Fatal(err)
	}
	if h := ingest.GetHistogram(); h.GetSampleCount() != 2 || h.GetSampleSum() < 0.010 {
		t.Fatalf("ingest latency: %d samples, sum %.4f s; want 2 of at least 5 ms each", h.GetSampleCount(), h.GetSampleSum())
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r.Wait()
	r.Close()
}

// blockSpec is a processor that announces each call and waits for release.
func blockSpec(started chan<- uint64, release <-chan struct{}) processors.Spec {
	return processors.Spec{Name: "block", Outputs: []string{"values"}, New: func(processors.Params) (processors.Processor, error) {
		n := uint64(0)
		return procFunc(func(ctx context.Context, in *processors.Input, out *processors.Output) error {
			n++
			started <- n
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}), nil
	}}
}

// TestLiveRunnerSkipsWhileBusy: frames arriving while the pipeline is busy
// replace each other, the newest is processed next; the same whether they
// come over the bus or from Offer (a frame source in this process, which
// reuses its frame: Offer copies it).
func TestLiveRunnerSkipsWhileBusy(t *testing.T) {
	for _, local := range []bool{false, true} {
		name := "bus"
		if local {
			name = "offer"
		}
		t.Run(name, func(t *testing.T) { testLiveRunnerSkipsWhileBusy(t, local) })
	}
}

func testLiveRunnerSkipsWhileBusy(t *testing.T, local bool) {
	b := startBus(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	reg := builtins()
	started := make(chan uint64, 10)
	release := make(chan struct{})
	reg.Register(blockSpec(started, release))
	m := processors.NewMetrics(prometheus.NewRegistry())
	r := &processors.LiveRunner{
		Camera: "cam2", Pipeline: pipe("slow", st(t, "b", "block", nil)),
		Registry: reg, Conn: b.Conn(), Subjects: b.Subjects(), Metrics: m, Local: local,
	}
	results, err := b.Conn().SubscribeSync(b.Subjects().Results("cam2"))
	if err != nil {
		t.Fatal(err)
	}
	defer results.Unsubscribe()
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	img := gocv.NewMatWithSize(48, 64, gocv.MatTypeCV8UC3)
	defer img.Close()
	reused := bgrFrame(t, img, 0, 0)
	publish := func(seq uint64) {
		fr := bgrFrame(t, img, seq, 0)
		fr.Camera = "cam2"
		if local {
			// One frame reused for every offer, as the frame source does.
			reused.Sequence, reused.RtpTimestamp, reused.Camera = fr.Sequence, fr.RtpTimestamp, fr.Camera
			r.Offer(reused)
			return
		}
		if err := bus.Publish(b.Conn(), b.Subjects().Frames("cam2"), fr); err != nil {
			t.Fatal(err)
		}
	}
	publish(1)
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("pipeline never started on frame 1")
	}
	// Frames 2..5 arrive while frame 1 is in the pipeline: 2, 3 and 4 are
	// replaced by their successors, 5 waits.
	for seq := uint64(2); seq <= 5; seq++ {
		publish(seq)
	}
	waitFor(t, "three skipped frames", func() bool { return r.Skipped() == 3 })
	if v := counterValue(m.FramesSkipped.WithLabelValues("cam2")); v != 3 {
		t.Fatalf("skipped metric %v", v)
	}
	close(release)
	if res := nextResult(t, results); res.Sequence != 1 {
		t.Fatalf("first result for frame %d", res.Sequence)
	}
	if res := nextResult(t, results); res.Sequence != 5 || res.RtpTimestamp != 1000+5*3600 {
		t.Fatalf("second result for frame %d rtp %d, want the newest, 5", res.Sequence, res.RtpTimestamp)
	}
	waitFor(t, "two processed frames", func() bool { return r.Processed() == 2 })
	if n, _, _ := results.Pending(); n != 0 || r.Skipped() != 3 {
		t.Fatalf("%d more results, %d skipped", n, r.Skipped())
	}
}

func TestLiveRunnerCloseCancelsInFlight(t *testing.T) {
	b := startBus(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	reg := builtins()
	started := make(chan uint64, 10)
	reg.Register(blockSpec(started, make(chan struct{})))
	r := &processors.LiveRunner{Camera: "cam3", Pipeline: pipe("slow", st(t, "b", "block", nil)), Registry: reg, Conn: b.Conn()}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	img := gocv.NewMatWithSize(48, 64, gocv.MatTypeCV8UC3)
	defer img.Close()
	fr := bgrFrame(t, img, 1, 0)
	if err := bus.Publish(b.Conn(), b.Subjects().Frames("cam3"), fr); err != nil {
		t.Fatal(err)
	}
	<-started
	// The processor blocks until its context ends: Close must cancel it.
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestLiveRunnerConfigErrors(t *testing.T) {
	b := startBus(t)
	for _, r := range []*processors.LiveRunner{
		{Camera: "a.b", Pipeline: pipe("p", st(t, "r", "resize", nil)), Registry: builtins(), Conn: b.Conn()},
		{Camera: "cam", Registry: builtins(), Conn: b.Conn()},
	} {
		if err := r.Start(); !errors.Is(err, processors.ErrLiveConfig) {
			t.Fatalf("start: %v, want ErrLiveConfig", err)
		}
		r.Close()
	}
	r := &processors.LiveRunner{Camera: "cam", Pipeline: pipe("p", st(t, "r", "nope", nil)), Registry: builtins(), Conn: b.Conn()}
	if err := r.Start(); !errors.Is(err, processors.ErrUnknownProcessor) {
		t.Fatalf("start: %v", err)
	}
}

// TestLiveRunnersInOneQueueShareFrames runs one camera's pipeline in two
// runners of one queue group, as while a shared camera moves between
// nodes: every frame gets exactly one result, named by the runner's node.
func TestLiveRunnersInOneQueueShareFrames(t *testing.T) {
	b := startBus(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	frames := vtestFrames(t, 1, 50, 100)
	reg := builtins()
	var runners []*processors.LiveRunner
	for _, node := range []string{"ingest1", "gpu1"} {
		r := &processors.LiveRunner{Camera: "cam1", Registry: reg, Conn: b.Conn(), Subjects: b.Subjects(),
			Pipeline: pipe("gray", st(t, "gray", "filter", map[string]any{"mode": "grayscale"})),
			Queue:    "ifc-live", Node: node}
		if err := r.Start(); err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		runners = append(runners, r)
	}
	results, err := b.Conn().SubscribeSync(b.Subjects().Results("cam1"))
	if err != nil {
		t.Fatal(err)
	}
	defer results.Unsubscribe()
	const n = 40
	byNode := map[string]int{}
	for i := 1; i <= n; i++ {
		if err := bus.Publish(b.Conn(), b.Subjects().Frames("cam1"), bgrFrame(t, frames[0], uint64(i), 0)); err != nil {
			t.Fatal(err)
		}
		res := nextResult(t, results)
		if res.Sequence != uint64(i) || (res.Node != "ingest1" && res.Node != "gpu1") {
			t.Fatalf("frame %d: result seq %d from node %q", i, res.Sequence, res.Node)
		}
		byNode[res.Node]++
	}
	if m, err := results.NextMsg(300 * time.Millisecond); err == nil {
		t.Fatalf("a frame got a second result: %d bytes", len(m.Data))
	}
	if got := runners[0].Processed() + runners[1].Processed(); got != n {
		t.Fatalf("%d results for %d frames", got, n)
	}
	t.Logf("%d frames, one result each; by node: %v", n, byNode)
}
