package builtin

import (
	"image"
	"slices"
	"syscall"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"github.com/imageflowcanvas/imageflow/processors"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// benchFrames returns consecutive vtest.avi frames scaled to 640x360, the
// detection size a live camera is sampled at.
func benchFrames(b *testing.B, n int) []gocv.Mat {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	src := videoFrames(b, vtestPath, idx...)
	out := make([]gocv.Mat, n)
	for i, f := range src {
		out[i] = gocv.NewMat()
		gocv.Resize(f, &out[i], image.Pt(640, 360), 0, 0, gocv.InterpolationArea)
	}
	b.Cleanup(func() {
		for i := range out {
			out[i].Close()
		}
	})
	return out
}

// benchProcessor runs one processor over frames in turn and reports the
// median and 99th percentile of the per-frame time next to the mean.
func benchProcessor(b *testing.B, spec processors.Spec, params map[string]any, frames []gocv.Mat) {
	benchWithDetections(b, spec, params, frames, nil)
}

// benchWithDetections is benchProcessor with dets[i] handed to the
// processor with frames[i] (dets may be nil).
func benchWithDetections(b *testing.B, spec processors.Spec, params map[string]any, frames []gocv.Mat, dets [][]*busv1.Detection) {
	r := newRunner(b, build(b, spec, params))
	feed := func(i int) error {
		if dets != nil {
			r.in.Detections = dets[i%len(frames)]
		}
		return r.try(frames[i%len(frames)])
	}
	// Warm up: first calls size the output buffers and seed state.
	for i := 0; i < 2; i++ {
		if err := feed(i); err != nil {
			b.Fatal(err)
		}
	}
	durs := make([]time.Duration, 0, b.N)
	b.SetBytes(int64(frames[0].Total() * frames[0].Channels()))
	b.ReportAllocs()
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if err := feed(i); err != nil {
			b.Fatal(err)
		}
		durs = append(durs, time.Since(t0))
	}
	b.StopTimer()
	// CPU time of the whole process (OpenCV's worker threads included) per
	// frame: what a frame costs the machine, less swayed than wall time by
	// other work on a shared machine.
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
	slices.Sort(durs)
	pct := func(p float64) float64 {
		return float64(durs[min(len(durs)-1, int(p*float64(len(durs))))].Microseconds())
	}
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

func BenchmarkResize(b *testing.B) {
	benchProcessor(b, ResizeSpec(), map[string]any{"width": 320}, benchFrames(b, 1))
}

func BenchmarkFilter(b *testing.B) {
	frames := benchFrames(b, 1)
	for _, c := range []struct {
		name   string
		params map[string]any
	}{
		{"grayscale", map[string]any{"mode": "grayscale"}},
		{"blur", map[string]any{"mode": "blur", "kernel_size": 5}},
		{"sharpen", map[string]any{"mode": "sharpen"}},
		{"edges", map[string]any{"mode": "edges"}},
		{"threshold", map[string]any{"mode": "threshold"}},
		{"color_hsv", map[string]any{"mode": "color", "conversion": "bgr2hsv"}},
	} {
		b.Run(c.name, func(b *testing.B) { benchProcessor(b, FilterSpec(), c.params, frames) })
	}
}

func BenchmarkMotion(b *testing.B) {
	// Consecutive frames of people walking: the model sees real motion.
	benchProcessor(b, MotionSpec(), nil, benchFrames(b, 25))
}

func BenchmarkOverlay(b *testing.B) {
	benchProcessor(b, OverlaySpec(), nil, benchFrames(b, 1))
}

func BenchmarkDetectHOG(b *testing.B) {
	benchProcessor(b, DetectSpec(), map[string]any{"backend": "hog"}, benchFrames(b, 5))
}

func BenchmarkDetectBlazeFace(b *testing.B) {
	benchProcessor(b, DetectSpec(), map[string]any{"backend": "blazeface"}, benchFrames(b, 5))
}

func BenchmarkDetectHaar(b *testing.B) {
	benchProcessor(b, DetectSpec(), map[string]any{"backend": "haar"}, benchFrames(b, 5))
}

// BenchmarkDetect256 compares the face and people detectors on one
// 256x256 picture, BlazeFace's input size: Messi from head to boots
// (messi5.jpg's middle 342x342, scaled), so each finds what it looks for.
func BenchmarkDetect256(b *testing.B) {
	src := readImage(b, messiPath)
	crop := src.Region(image.Rect(103, 0, 445, 342))
	defer crop.Close()
	frame := gocv.NewMat()
	defer frame.Close()
	gocv.Resize(crop, &frame, image.Pt(256, 256), 0, 0, gocv.InterpolationArea)
	frames := []gocv.Mat{frame}
	for _, backend := range []string{"blazeface", "haar", "hog"} {
		b.Run(backend, func(b *testing.B) {
			benchProcessor(b, DetectSpec(), map[string]any{"backend": backend}, frames)
		})
	}
}

// BenchmarkDetectRegions compares full-frame HOG with HOG on motion regions
// enlarged to 256 px (the demo camera's former parameters), sized by their
// motion (its parameters now) and not enlarged: 640x480 vtest.avi frames at
// 5 fps with the motion step's regions of each (computed beforehand, not
// timed).
func BenchmarkDetectRegions(b *testing.B) {
	frames, regions := liveFrames(b, 120)
	frames, regions = frames[5:], regions[5:] // past the motion model's warm-up
	b.Run("full", func(b *testing.B) {
		benchWithDetections(b, DetectSpec(), map[string]any{"backend": "hog"}, frames, regions)
	})
	b.Run("motion", func(b *testing.B) {
		benchWithDetections(b, DetectSpec(), demoRegionParams, frames, regions)
	})
	b.Run("motion_sized", func(b *testing.B) {
		benchWithDetections(b, DetectSpec(), sizedRegionParams, frames, regions)
	})
	b.Run("motion_no_enlarge", func(b *testing.B) {
		benchWithDetections(b, DetectSpec(), map[string]any{"backend": "hog", "regions": RegionsMotion}, frames, regions)
	})
}
