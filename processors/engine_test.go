package processors_test

import (
	"context"
	"errors"
	"fmt"
	"image"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"gocv.io/x/gocv"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/processors/builtin"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

const vtestPath = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"

// st builds a step; params may be nil.
func st(tb testing.TB, id, proc string, params map[string]any, inputs ...string) *busv1.Step {
	tb.Helper()
	s := &busv1.Step{Id: id, Processor: proc, Inputs: inputs}
	if params != nil {
		ps, err := structpb.NewStruct(params)
		if err != nil {
			tb.Fatal(err)
		}
		s.Params = ps
	}
	return s
}

func pipe(id string, steps ...*busv1.Step) *busv1.Pipeline {
	return &busv1.Pipeline{Id: id, Steps: steps}
}

func builtins() *processors.Registry {
	reg := processors.NewRegistry()
	builtin.Register(reg)
	return reg
}

// vtestFrames reads frames of vtest.avi at the given indexes.
func vtestFrames(tb testing.TB, idx ...int) []gocv.Mat {
	tb.Helper()
	vc, err := gocv.VideoCaptureFile(vtestPath)
	if err != nil {
		tb.Fatalf("open %s (install opencv-doc): %v", vtestPath, err)
	}
	defer vc.Close()
	m := gocv.NewMat()
	defer m.Close()
	var out []gocv.Mat
	for i := 0; len(out) < len(idx); i++ {
		if !vc.Read(&m) || m.Empty() {
			tb.Fatalf("frame %d unreadable", i)
		}
		if i == idx[len(out)] {
			out = append(out, m.Clone())
		}
	}
	tb.Cleanup(func() {
		for i := range out {
			out[i].Close()
		}
	})
	return out
}

func compile(tb testing.TB, reg *processors.Registry, p *busv1.Pipeline, opts ...processors.Option) *processors.Pipeline {
	tb.Helper()
	pl, err := processors.Compile(reg, p, opts...)
	if err != nil {
		tb.Fatalf("compile: %v", err)
	}
	tb.Cleanup(func() { pl.Close() })
	return pl
}

// TestEngineTwoBranches runs a DAG with a detection branch on a downscaled
// copy and a motion branch on a gray copy, and checks the person boxes come
// back in source pixels and are drawn where the overlay's picture has them.
func TestEngineTwoBranches(t *testing.T) {
	frames := vtestFrames(t, 0, 10)
	src := frames[1]
	W, H := src.Cols(), src.Rows() // 768x576
	reg := builtins()
	m := processors.NewMetrics(prometheus.NewRegistry())
	pl := compile(t, reg, pipe("two-branches",
		st(t, "small", "resize", map[string]any{"width": W / 2, "interpolation": "area"}),
		st(t, "people", "detect", map[string]any{"backend": "hog"}, "small"),
		st(t, "draw", "overlay", map[string]any{"color": "red", "show_score": false}, "small", "people"),
		st(t, "gray", "filter", map[string]any{"mode": "grayscale"}),
		st(t, "moving", "motion", nil, "gray"),
	), processors.WithMetrics(m))

	// What detect finds on the half-size picture, computed independently.
	half := gocv.NewMat()
	defer half.Close()
	gocv.Resize(src, &half, image.Pt(W/2, H/2), 0, 0, gocv.InterpolationArea)
	spec, _ := reg.Lookup("detect")
	params, _ := spec.Resolve(map[string]any{"backend": "hog"})
	det, err := spec.New(params)
	if err != nil {
		t.Fatal(err)
	}
	defer det.Close()
	var want processors.Output
	if err := det.Process(context.Background(), &processors.Input{Image: half}, &want); err != nil {
		t.Fatal(err)
	}
	if len(want.Detections) == 0 {
		t.Fatal("HOG finds nobody on the half-size frame; the test cannot check mapping")
	}

	if _, err := pl.Run(context.Background(), frames[0]); err != nil {
		t.Fatal(err)
	}
	res, err := pl.Run(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	if res.Width != W || res.Height != H {
		t.Fatalf("result size %dx%d, want %dx%d", res.Width, res.Height, W, H)
	}
	var people, motion []*busv1.Detection
	for _, d := range res.Detections {
		switch d.Label {
		case "person":
			people = append(people, d)
		case "motion":
			motion = append(motion, d)
		default:
			t.Fatalf("unexpected detection %v", d)
		}
	}
	if len(people) != len(want.Detections) {
		t.Fatalf("%d people in the result, detect alone finds %d", len(people), len(want.Detections))
	}
	for i, d := range people {
		w := want.Detections[i]
		if d.X != 2*w.X || d.Y != 2*w.Y || d.W != 2*w.W || d.H != 2*w.H {
			t.Fatalf("person %d at %v, want the half-size box %v doubled", i, d, w)
		}
	}
	if len(motion) == 0 || res.Values["motion"] != "true" {
		t.Fatalf("motion branch: %d regions, motion=%q", len(motion), res.Values["motion"])
	}
	// The overlay drew on the half-size picture: boxes mapped back into it.
	if res.Image == nil || res.Image.Cols() != W/2 || res.Image.Rows() != H/2 {
		t.Fatalf("final image %v, want the overlay's %dx%d", res.Image, W/2, H/2)
	}
	for _, w := range want.Detections {
		p := res.Image.GetVecbAt(int(w.Y), int(w.X+w.W/2))
		if p[0] != 0 || p[1] != 0 || p[2] != 255 {
			t.Fatalf("no red box edge at (%v,%v) of the overlay: %v", w.X+w.W/2, w.Y, p)
		}
	}
	if len(res.Steps) != 5 {
		t.Fatalf("%d step results", len(res.Steps))
	}
	for _, s := range res.Steps {
		if s.Err != nil || s.Duration <= 0 {
			t.Fatalf("step %+v", s)
		}
	}
	if n := collectCount(m.StepDuration); n != 5 {
		t.Fatalf("%d step histograms, want 5", n)
	}
}

// TestEngineDetectionsAfterResizeUp checks the mapping when a step sees a
// picture larger than the source.
func TestEngineDetectionsAfterResizeUp(t *testing.T) {
	reg := builtins()
	reg.Register(boxSpec("box", image.Rect(40, 20, 60, 60)))
	pl := compile(t, reg, pipe("up",
		st(t, "big", "resize", map[string]any{"width": 400, "height": 300, "keep_aspect": false}),
		st(t, "b", "box", nil, "big"),
	))
	img := gocv.NewMatWithSize(150, 100, gocv.MatTypeCV8UC3) // 100x150 source
	defer img.Close()
	res, err := pl.Run(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Detections) != 1 {
		t.Fatalf("%d detections", len(res.Detections))
	}
	d := res.Detections[0]
	// x scales by 100/400, y by 150/300.
	if d.X != 10 || d.Y != 10 || d.W != 5 || d.H != 20 {
		t.Fatalf("box %v, want x=10 y=10 w=5 h=20", d)
	}
}

// boxSpec is a test processor reporting one fixed box in its input's pixels.
func boxSpec(name string, r image.Rectangle) processors.Spec {
	return processors.Spec{Name: name, Outputs: []string{"detections"}, New: func(processors.Params) (processors.Processor, error) {
		return procFunc(func(_ context.Context, in *processors.Input, out *processors.Output) error {
			out.Detections = append(out.Detections, &busv1.Detection{X: float32(r.Min.X), Y: float32(r.Min.Y), W: float32(r.Dx()), H: float32(r.Dy()), Label: name, Score: 0.5})
			return nil
		}), nil
	}}
}

type procFunc func(ctx context.Context, in *processors.Input, out *processors.Output) error

func (f procFunc) Process(ctx context.Context, in *processors.Input, out *processors.Output) error {
	return f(ctx, in, out)
}
func (f procFunc) Close() error { return nil }

func TestEngineDiamondDeduplicates(t *testing.T) {
	reg := builtins()
	reg.Register(boxSpec("box", image.Rect(1, 2, 11, 22)))
	reg.Register(boxSpec("box2", image.Rect(1, 2, 11, 22)))
	pl := compile(t, reg, pipe("diamond",
		st(t, "a", "box", nil),
		st(t, "left", "overlay", nil, "a"),
		st(t, "right", "overlay", nil, "a"),
		st(t, "join", "overlay", nil, "left", "right"),
		st(t, "other", "box", nil),  // same label and box: merged
		st(t, "third", "box2", nil), // another label: kept
	))
	img := gocv.NewMatWithSize(40, 40, gocv.MatTypeCV8UC3)
	defer img.Close()
	res, err := pl.Run(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Detections) != 2 {
		t.Fatalf("detections %v, want one box and one box2", res.Detections)
	}
}

func TestEngineStepErrors(t *testing.T) {
	reg := builtins()
	boom := errors.New("boom")
	reg.Register(processors.Spec{Name: "fail", Outputs: []string{"detections"}, New: func(processors.Params) (processors.Processor, error) {
		return procFunc(func(context.Context, *processors.Input, *processors.Output) error { return boom }), nil
	}})
	reg.Register(processors.Spec{Name: "panic", Outputs: []string{"detections"}, New: func(processors.Params) (processors.Processor, error) {
		return procFunc(func(context.Context, *processors.Input, *processors.Output) error { panic("oops") }), nil
	}})
	m := processors.NewMetrics(prometheus.NewRegistry())
	pl := compile(t, reg, pipe("errs",
		st(t, "bad", "fail", nil),
		st(t, "after", "overlay", nil, "bad"),
		st(t, "crash", "panic", nil),
		st(t, "fine", "filter", nil),
	), processors.WithMetrics(m))
	img := gocv.NewMatWithSize(40, 40, gocv.MatTypeCV8UC3)
	defer img.Close()
	for run := 1; run <= 2; run++ {
		res, err := pl.Run(context.Background(), img)
		var se *processors.StepError
		if !errors.As(err, &se) || se.Step != "bad" || !errors.Is(err, boom) {
			t.Fatalf("run error %v, want step bad: boom", err)
		}
		byID := map[string]error{}
		for _, s := range res.Steps {
			byID[s.ID] = s.Err
		}
		if !errors.Is(byID["after"], processors.ErrInputFailed) || !errors.Is(byID["crash"], processors.ErrPanic) || byID["fine"] != nil {
			t.Fatalf("step errors %v", byID)
		}
		if res.Image == nil || res.Image.Cols() != 40 {
			t.Fatal("the healthy branch's image is missing")
		}
		if got := counterValue(m.StepErrors.WithLabelValues("errs", "bad")); got != float64(run) {
			t.Fatalf("bad errors %v after %d runs", got, run)
		}
		if got := counterValue(m.StepErrors.WithLabelValues("errs", "crash")); got != float64(run) {
			t.Fatalf("crash errors %v after %d runs", got, run)
		}
	}
	if got := counterValue(m.StepErrors.WithLabelValues("errs", "after")); got != 0 {
		t.Fatalf("a skipped step counted %v errors", got)
	}
	empty := gocv.NewMat()
	defer empty.Close()
	if _, err := pl.Run(context.Background(), empty); !errors.Is(err, processors.ErrEmptyImage) {
		t.Fatalf("empty image: %v", err)
	}
	pl.Close()
	if _, err := pl.Run(context.Background(), img); !errors.Is(err, processors.ErrClosed) {
		t.Fatalf("after close: %v", err)
	}
}

func TestEngineCompileErrors(t *testing.T) {
	reg := builtins()
	_, err := processors.Compile(reg, pipe("r", st(t, "far", "grpc://127.0.0.1:5000", map[string]any{"x": 1})))
	var se *processors.StepError
	if !errors.As(err, &se) || se.Step != "far" || !errors.Is(err, processors.ErrNoRemote) {
		t.Fatalf("remote without factory: %v", err)
	}
	_, err = processors.Compile(reg, pipe("r", st(t, "r", "resize", map[string]any{"width": 0, "height": 0})))
	if !errors.As(err, &se) || se.Step != "r" || !errors.Is(err, builtin.ErrConfig) {
		t.Fatalf("resize without size: %v", err)
	}
	_, err = processors.Compile(reg, pipe("h", st(t, "faces", "detect", map[string]any{"backend": "haar", "cascade": "/nonexistent.xml"})))
	if !errors.As(err, &se) || se.Step != "faces" {
		t.Fatalf("missing cascade: %v", err)
	}
}

// remoteProc stands for a gRPC processor: it returns a new Mat every call,
// which the engine must adopt and free.
type remoteProc struct {
	calls  int
	closed bool
}

func (r *remoteProc) Process(_ context.Context, in *processors.Input, out *processors.Output) error {
	r.calls++
	out.Image = gocv.NewMatWithSize(in.Image.Rows()/2, in.Image.Cols()/2, gocv.MatTypeCV8UC3)
	out.Detections = append(out.Detections, &busv1.Detection{X: 5, Y: 5, W: 5, H: 5, Label: "remote"})
	return nil
}
func (r *remoteProc) Close() error { r.closed = true; return nil }

func TestEngineRemoteFactory(t *testing.T) {
	var gotAddr string
	var gotParams map[string]any
	rp := &remoteProc{}
	factory := func(addr string, params map[string]any) (processors.Processor, error) {
		gotAddr, gotParams = addr, params
		return rp, nil
	}
	pl, err := processors.Compile(builtins(), pipe("r",
		st(t, "far", "grpc://127.0.0.1:5000", map[string]any{"model": "x"}),
		st(t, "draw", "overlay", nil, "far"),
	), processors.WithRemote(factory))
	if err != nil {
		t.Fatal(err)
	}
	if gotAddr != "127.0.0.1:5000" || gotParams["model"] != "x" {
		t.Fatalf("factory got %q %v", gotAddr, gotParams)
	}
	img := gocv.NewMatWithSize(40, 60, gocv.MatTypeCV8UC3)
	defer img.Close()
	for range 3 {
		res, err := pl.Run(context.Background(), img)
		if err != nil {
			t.Fatal(err)
		}
		if res.Image.Cols() != 30 || len(res.Detections) != 1 || res.Detections[0].X != 5 {
			t.Fatalf("image %dx%d, detections %v", res.Image.Cols(), res.Image.Rows(), res.Detections)
		}
	}
	pl.Close()
	if rp.calls != 3 || !rp.closed {
		t.Fatalf("remote processor calls %d closed %v", rp.calls, rp.closed)
	}
}

func TestEngineReusesPictures(t *testing.T) {
	pl := compile(t, builtins(), pipe("reuse", st(t, "r", "resize", map[string]any{"width": 50})))
	img := gocv.NewMatWithSize(100, 100, gocv.MatTypeCV8UC3)
	defer img.Close()
	var first *uint8
	for i := range 3 {
		res, err := pl.Run(context.Background(), img)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := res.Image.DataPtrUint8()
		if i == 0 {
			first = &b[0]
		} else if &b[0] != first {
			t.Fatal("the resize output buffer was reallocated between runs")
		}
	}
}

func TestPoolConcurrent(t *testing.T) {
	pool, err := processors.NewPool(builtins(), pipe("pool",
		st(t, "r", "resize", map[string]any{"width": 64}),
		st(t, "g", "filter", map[string]any{"mode": "blur"}, "r"),
	), 2)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			img := gocv.NewMatWithSize(100+i, 200, gocv.MatTypeCV8UC3)
			defer img.Close()
			errs <- pool.Run(context.Background(), img, func(res *processors.Result, err error) error {
				if err != nil {
					return err
				}
				if res.Image.Cols() != 64 || res.Height != 100+i {
					return fmt.Errorf("run %d: image %dx%d source height %d", i, res.Image.Cols(), res.Image.Rows(), res.Height)
				}
				return nil
			})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	pool.Close()
	img := gocv.NewMatWithSize(10, 10, gocv.MatTypeCV8UC3)
	defer img.Close()
	if err := pool.Run(context.Background(), img, nil); !errors.Is(err, processors.ErrClosed) {
		t.Fatalf("after close: %v", err)
	}
}

// counterValue reads a counter (testutil would need a module go.sum lacks).
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// collectCount counts the series a collector exports.
func collectCount(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 64)
	go func() { c.Collect(ch); close(ch) }()
	n := 0
	for range ch {
		n++
	}
	return n
}

// benchPipeline runs a pipeline over frames and reports p50/p99 per frame.
func benchPipeline(b *testing.B, p *busv1.Pipeline, frames []gocv.Mat) {
	pl := compile(b, builtins(), p)
	for i := 0; i < 2; i++ {
		if _, err := pl.Run(context.Background(), frames[i%len(frames)]); err != nil {
			b.Fatal(err)
		}
	}
	durs := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := pl.Run(context.Background(), frames[i%len(frames)]); err != nil {
			b.Fatal(err)
		}
		durs = append(durs, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(durs)
	b.ReportMetric(float64(durs[len(durs)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(durs[min(len(durs)-1, len(durs)*99/100)].Microseconds()), "p99-µs")
}

// BenchmarkEngineImageSteps measures the engine's own cost around cheap
// steps: three image steps on a 768x576 frame.
func BenchmarkEngineImageSteps(b *testing.B) {
	benchPipeline(b, pipe("cheap",
		st(b, "small", "resize", map[string]any{"width": 640, "height": 360, "keep_aspect": false}),
		st(b, "gray", "filter", map[string]any{"mode": "grayscale"}, "small"),
		st(b, "draw", "overlay", nil, "gray"),
	), vtestFrames(b, 0))
}

// BenchmarkEngineLiveDetection is the default live pipeline: downscale,
// motion, motion-gated HOG, overlay, over consecutive frames of people
// walking.
func BenchmarkEngineLiveDetection(b *testing.B) {
	idx := make([]int, 25)
	for i := range idx {
		idx[i] = i
	}
	benchPipeline(b, pipe("live",
		st(b, "small", "resize", map[string]any{"width": 640, "height": 360, "keep_aspect": false}),
		st(b, "moving", "motion", nil, "small"),
		st(b, "people", "detect", map[string]any{"backend": "hog", "gate": "only_if_motion"}, "small", "moving"),
		st(b, "draw", "overlay", nil, "small", "people"),
	), vtestFrames(b, idx...))
}

// TestEngineMotionGatedDetection: detection runs only on frames where the
// motion step saw something.
func TestEngineMotionGatedDetection(t *testing.T) {
	frames := vtestFrames(t, 0, 10)
	pl := compile(t, builtins(), pipe("gated",
		st(t, "moving", "motion", nil),
		st(t, "people", "detect", map[string]any{"backend": "hog", "gate": "only_if_motion"}, "moving"),
	))
	count := func(res *processors.Result, label string) int {
		n := 0
		for _, d := range res.Detections {
			if d.Label == label {
				n++
			}
		}
		return n
	}
	for i, f := range []gocv.Mat{frames[0], frames[0]} {
		res, err := pl.Run(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		if res.Values["motion"] != "false" || count(res, "person") != 0 {
			t.Fatalf("still run %d: motion=%q, %d people", i, res.Values["motion"], count(res, "person"))
		}
	}
	res, err := pl.Run(context.Background(), frames[1])
	if err != nil {
		t.Fatal(err)
	}
	if res.Values["motion"] != "true" || count(res, "person") == 0 || count(res, "motion") == 0 {
		t.Fatalf("moving frame: motion=%q, %d people, %d motion regions", res.Values["motion"], count(res, "person"), count(res, "motion"))
	}
}

// replaceSpec is a test processor that reports one box labelled name,
// replacing its inputs' detections, and remembers the labels it was given.
func replaceSpec(name string, seen *[]string) processors.Spec {
	return processors.Spec{Name: name, Outputs: []string{"detections"}, New: func(processors.Params) (processors.Processor, error) {
		return procFunc(func(_ context.Context, in *processors.Input, out *processors.Output) error {
			*seen = (*seen)[:0]
			for _, d := range in.Detections {
				*seen = append(*seen, d.Label)
			}
			out.Detections = append(out.Detections, &busv1.Detection{X: 30, Y: 30, W: 10, H: 10, Label: name, Score: 0.9})
			out.ReplaceDetections = true
			return nil
		}), nil
	}}
}

// TestEngineReplaceDetections: a step that sets ReplaceDetections passes on
// only its own boxes; a sibling branch still passes the replaced ones on; the
// flag does not stick to the next run of a step that stops setting it.
func TestEngineReplaceDetections(t *testing.T) {
	reg := builtins()
	var seenB, seenC []string
	reg.Register(boxSpec("a", image.Rect(1, 2, 11, 22)))
	reg.Register(replaceSpec("b", &seenB))
	reg.Register(replaceSpec("c", &seenC))
	record := func(seen *[]string) processors.Spec {
		return processors.Spec{Name: "record", Outputs: []string{"detections"}, New: func(processors.Params) (processors.Processor, error) {
			return procFunc(func(_ context.Context, in *processors.Input, out *processors.Output) error {
				*seen = (*seen)[:0]
				for _, d := range in.Detections {
					*seen = append(*seen, d.Label)
				}
				return nil
			}), nil
		}}
	}
	var seenSink []string
	reg.Register(record(&seenSink))
	labels := func(res *processors.Result) []string {
		var ls []string
		for _, d := range res.Detections {
			ls = append(ls, d.Label)
		}
		slices.Sort(ls)
		return ls
	}
	img := gocv.NewMatWithSize(60, 60, gocv.MatTypeCV8UC3)
	defer img.Close()

	// a -> b (replaces) -> sink: only b reaches the sink.
	pl := compile(t, reg, pipe("chain",
		st(t, "a", "a", nil),
		st(t, "b", "b", nil, "a"),
		st(t, "sink", "record", nil, "b"),
	))
	res, err := pl.Run(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seenB, []string{"a"}) || !slices.Equal(seenSink, []string{"b"}) || !slices.Equal(labels(res), []string{"b"}) {
		t.Fatalf("b saw %v, sink saw %v, result %v", seenB, seenSink, labels(res))
	}

	// a feeds b (replaces) and a plain sink: a still reaches the result by
	// the other path, once.
	pl = compile(t, reg, pipe("branches",
		st(t, "a", "a", nil),
		st(t, "b", "b", nil, "a"),
		st(t, "other", "overlay", nil, "a"),
	))
	res, err = pl.Run(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(labels(res), []string{"a", "b"}) {
		t.Fatalf("result %v, want a and b", labels(res))
	}

	// A step downstream of a replacing one adds to what it got unless it
	// replaces too; boxes found at a smaller size still map back.
	pl = compile(t, reg, pipe("resized",
		st(t, "a", "a", nil),
		st(t, "small", "resize", map[string]any{"width": 30, "height": 30, "keep_aspect": false}),
		st(t, "b", "b", nil, "small", "a"),
		st(t, "c", "c", nil, "b"),
		st(t, "keep", "overlay", nil, "b"),
	))
	res, err = pl.Run(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seenC, []string{"b"}) || !slices.Equal(labels(res), []string{"b", "c"}) {
		t.Fatalf("c saw %v, result %v", seenC, labels(res))
	}
	for _, d := range res.Detections {
		if d.Label == "b" && (d.X != 60 || d.W != 20) {
			t.Fatalf("b's box %v not mapped from 30x30 to 60x60", d)
		}
	}

	// A step that replaced last run and not this run adds again.
	runs := 0
	reg.Register(processors.Spec{Name: "toggle", Outputs: []string{"detections"}, New: func(processors.Params) (processors.Processor, error) {
		return procFunc(func(_ context.Context, in *processors.Input, out *processors.Output) error {
			runs++
			if runs == 1 {
				out.ReplaceDetections = true
			}
			return nil
		}), nil
	}})
	pl = compile(t, reg, pipe("toggle", st(t, "a", "a", nil), st(t, "t", "toggle", nil, "a")))
	for i, want := range [][]string{nil, {"a"}} {
		res, err = pl.Run(context.Background(), img)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(labels(res), want) {
			t.Fatalf("run %d: result %v, want %v", i, labels(res), want)
		}
	}
}

// TestEngineDetectReplacesMotion is the demo pipeline: motion, then HOG on
// the motion regions with keep_input_detections=false: people come out, the
// motion boxes do not.
func TestEngineDetectReplacesMotion(t *testing.T) {
	frames := vtestFrames(t, 0, 10)
	for _, keep := range []bool{true, false} {
		pl := compile(t, builtins(), pipe("people",
			st(t, "moving", "motion", map[string]any{"min_area": 300}),
			st(t, "people", "detect", map[string]any{"backend": "hog", "gate": "only_if_motion", "regions": "motion",
				"region_min_height": 256, "keep_input_detections": keep}, "moving"),
		))
		var res *processors.Result
		for _, f := range frames {
			var err error
			if res, err = pl.Run(context.Background(), f); err != nil {
				t.Fatal(err)
			}
		}
		n := map[string]int{}
		for _, d := range res.Detections {
			n[d.Label]++
		}
		if res.Values["motion"] != "true" || n["person"] == 0 || (n["motion"] > 0) != keep {
			t.Fatalf("keep_input_detections=%v: motion=%q, labels %v", keep, res.Values["motion"], n)
		}
	}
}
