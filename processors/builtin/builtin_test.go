package builtin

import (
	"context"
	"errors"
	"image"
	"os"
	"path/filepath"
	"testing"

	"gocv.io/x/gocv"

	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/processors/modelfiles"
)

const (
	vtestPath = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
	messiPath = "/usr/share/doc/opencv-doc/examples/data/messi5.jpg"
)

// videoFrames reads the frames at the given indexes of a video, in order.
func videoFrames(tb testing.TB, path string, idx ...int) []gocv.Mat {
	tb.Helper()
	if _, err := os.Stat(path); err != nil {
		tb.Fatalf("test media missing (install opencv-doc): %v", err)
	}
	vc, err := gocv.VideoCaptureFile(path)
	if err != nil {
		tb.Fatalf("open %s: %v", path, err)
	}
	defer vc.Close()
	var out []gocv.Mat
	m := gocv.NewMat()
	defer m.Close()
	for i := 0; len(out) < len(idx); i++ {
		if !vc.Read(&m) || m.Empty() {
			tb.Fatalf("%s: frame %d unreadable", path, i)
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

func readImage(tb testing.TB, path string) gocv.Mat {
	tb.Helper()
	m := gocv.IMRead(path, gocv.IMReadColor)
	if m.Empty() {
		tb.Fatalf("cannot read %s (install opencv-doc)", path)
	}
	tb.Cleanup(func() { m.Close() })
	return m
}

// build resolves params against the spec like pipeline validation does and
// builds the processor.
func build(tb testing.TB, spec processors.Spec, raw map[string]any) processors.Processor {
	tb.Helper()
	params, err := spec.Resolve(raw)
	if err != nil {
		tb.Fatalf("%s params %v: %v", spec.Name, raw, err)
	}
	p, err := spec.New(params)
	if err != nil {
		tb.Fatalf("%s: %v", spec.Name, err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

// runner feeds one processor like the engine does: the same output Mat every
// call.
type runner struct {
	p   processors.Processor
	in  processors.Input
	out processors.Output
}

func newRunner(tb testing.TB, p processors.Processor) *runner {
	r := &runner{p: p, out: processors.Output{Image: gocv.NewMat(), Values: map[string]string{}}}
	tb.Cleanup(func() { r.out.Image.Close() })
	return r
}

func (r *runner) run(tb testing.TB, img gocv.Mat) *processors.Output {
	tb.Helper()
	if err := r.try(img); err != nil {
		tb.Fatal(err)
	}
	return &r.out
}

func (r *runner) try(img gocv.Mat) error {
	r.in.Image = img
	r.out.Detections = r.out.Detections[:0]
	clear(r.out.Values)
	return r.p.Process(context.Background(), &r.in, &r.out)
}

// TestResizeRefusesHugeOutput: a 1-pixel-wide picture (allowed by the
// decoder's cap) scaled to width 8192 would be 8192x536862720; OpenCV's
// failed allocation aborted the process.
func TestResizeRefusesHugeOutput(t *testing.T) {
	thin := gocv.NewMatWithSize(65535, 1, gocv.MatTypeCV8UC3)
	defer thin.Close()
	r := newRunner(t, build(t, ResizeSpec(), map[string]any{"width": 8192}))
	if err := r.try(thin); !errors.Is(err, ErrBadImage) {
		t.Fatalf("%v, want ErrBadImage", err)
	}
}

func TestResizeSizes(t *testing.T) {
	src := readImage(t, messiPath) // 548x342
	w, h := src.Cols(), src.Rows()
	cases := []struct {
		name   string
		params map[string]any
		w, h   int
	}{
		{"width only", map[string]any{"width": 274, "height": 0}, 274, (h*274 + w/2) / w},
		{"height only", map[string]any{"width": 0, "height": 171}, (w*171 + h/2) / h, 171},
		{"stretch", map[string]any{"width": 320, "height": 240, "keep_aspect": false, "interpolation": "linear"}, 320, 240},
		{"fit box", map[string]any{"width": 320, "height": 320, "keep_aspect": true, "interpolation": "cubic"}, 320, (h*320 + w/2) / w},
		{"enlarge", map[string]any{"width": 1096, "height": 684, "keep_aspect": false, "interpolation": "nearest"}, 1096, 684},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRunner(t, build(t, ResizeSpec(), c.params))
			out := r.run(t, src)
			if out.Image.Cols() != c.w || out.Image.Rows() != c.h || out.Image.Type() != gocv.MatTypeCV8UC3 {
				t.Fatalf("got %dx%d type %v, want %dx%d BGR", out.Image.Cols(), out.Image.Rows(), out.Image.Type(), c.w, c.h)
			}
		})
	}
	// Resizing a picture twice in a row reuses the output buffer.
	r := newRunner(t, build(t, ResizeSpec(), map[string]any{"width": 320, "height": 200, "keep_aspect": false}))
	p1 := r.run(t, src).Image.DataPtrUint8
	b1, _ := p1()
	b2, _ := r.run(t, src).Image.DataPtrUint8()
	if &b1[0] != &b2[0] {
		t.Fatal("second resize reallocated the output Mat")
	}
	if _, err := ResizeSpec().New(processors.Params{"width": int64(0), "height": int64(0)}); !errors.Is(err, ErrConfig) {
		t.Fatalf("resize without size: %v, want ErrConfig", err)
	}
}

// meanAbsDiff compares two same-sized pictures.
func meanAbsDiff(t *testing.T, a, b gocv.Mat) float64 {
	t.Helper()
	d := gocv.NewMat()
	defer d.Close()
	gocv.AbsDiff(a, b, &d)
	s := d.Mean()
	return (s.Val1 + s.Val2 + s.Val3) / 3
}

func TestFilterModes(t *testing.T) {
	src := readImage(t, messiPath)
	pix := func(m gocv.Mat) []byte { b, _ := m.DataPtrUint8(); return b }
	gradient := func(m gocv.Mat) float64 {
		// Mean absolute Laplacian: how much fine detail the picture has.
		g, l := gocv.NewMat(), gocv.NewMat()
		defer g.Close()
		defer l.Close()
		gocv.CvtColor(m, &g, gocv.ColorBGRToGray)
		gocv.Laplacian(g, &l, gocv.MatTypeCV16S, 1, 1, 0, gocv.BorderDefault)
		gocv.ConvertScaleAbs(l, &g, 1, 0)
		return g.Mean().Val1
	}
	srcDetail := gradient(src)
	cases := []struct {
		mode  string
		extra map[string]any
		check func(t *testing.T, out gocv.Mat)
	}{
		{"grayscale", nil, func(t *testing.T, out gocv.Mat) {
			b := pix(out)
			for i := 0; i < len(b); i += 3 {
				if b[i] != b[i+1] || b[i] != b[i+2] {
					t.Fatalf("pixel %d not gray: %v", i/3, b[i:i+3])
				}
			}
			if meanAbsDiff(t, src, out) < 1 {
				t.Fatal("grayscale left the colour picture unchanged")
			}
		}},
		{"blur", map[string]any{"kernel_size": 9}, func(t *testing.T, out gocv.Mat) {
			if d := gradient(out); d > srcDetail*0.6 {
				t.Fatalf("blur kept detail %.2f of %.2f", d, srcDetail)
			}
		}},
		{"sharpen", nil, func(t *testing.T, out gocv.Mat) {
			if d := gradient(out); d < srcDetail*1.3 {
				t.Fatalf("sharpen raised detail only to %.2f from %.2f", d, srcDetail)
			}
		}},
		{"edges", nil, func(t *testing.T, out gocv.Mat) {
			b := pix(out)
			white := 0
			for i := 0; i < len(b); i += 3 {
				if b[i] != 0 && b[i] != 255 || b[i] != b[i+1] || b[i] != b[i+2] {
					t.Fatalf("edge pixel %d is %v, want black or white", i/3, b[i:i+3])
				}
				if b[i] == 255 {
					white++
				}
			}
			if n := len(b) / 3; white < n/100 || white > n/2 {
				t.Fatalf("%d edge pixels of %d", white, n)
			}
		}},
		{"threshold", map[string]any{"threshold": 100}, func(t *testing.T, out gocv.Mat) {
			g := gocv.NewMat()
			defer g.Close()
			gocv.CvtColor(src, &g, gocv.ColorBGRToGray)
			gb, b := pix(g), pix(out)
			for i := range gb {
				want := byte(0)
				if gb[i] > 100 {
					want = 255
				}
				if b[3*i] != want || b[3*i+1] != want || b[3*i+2] != want {
					t.Fatalf("pixel %d gray %d became %v, want %d", i, gb[i], b[3*i:3*i+3], want)
				}
			}
		}},
		{"color", map[string]any{"conversion": "bgr2rgb"}, func(t *testing.T, out gocv.Mat) {
			s, o := pix(src), pix(out)
			for i := 0; i < len(s); i += 3 {
				if o[i] != s[i+2] || o[i+1] != s[i+1] || o[i+2] != s[i] {
					t.Fatalf("pixel %d: %v is not %v swapped", i/3, o[i:i+3], s[i:i+3])
				}
			}
		}},
		{"color", map[string]any{"conversion": "bgr2hsv"}, func(t *testing.T, out gocv.Mat) {
			// The pitch is green: hue near 60 in OpenCV's 0..180 scale.
			p := out.GetVecbAt(320, 60)
			if p[0] < 35 || p[0] > 85 {
				t.Fatalf("grass hue %d, want green (35..85)", p[0])
			}
		}},
		{"color", map[string]any{"conversion": "bgr2gray"}, func(t *testing.T, out gocv.Mat) {
			b := pix(out)
			for i := 0; i < len(b); i += 3 {
				if b[i] != b[i+1] || b[i] != b[i+2] {
					t.Fatalf("pixel %d not gray: %v", i/3, b[i:i+3])
				}
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.mode, func(t *testing.T) {
			params := map[string]any{"mode": c.mode}
			for k, v := range c.extra {
				params[k] = v
			}
			out := newRunner(t, build(t, FilterSpec(), params)).run(t, src)
			if out.Image.Cols() != src.Cols() || out.Image.Rows() != src.Rows() || out.Image.Type() != gocv.MatTypeCV8UC3 {
				t.Fatalf("output %dx%d type %v, want %dx%d BGR", out.Image.Cols(), out.Image.Rows(), out.Image.Type(), src.Cols(), src.Rows())
			}
			c.check(t, out.Image)
		})
	}
}

func TestFilterRejectsBadImage(t *testing.T) {
	r := newRunner(t, build(t, FilterSpec(), nil))
	gray := gocv.NewMatWithSize(10, 10, gocv.MatTypeCV8U)
	defer gray.Close()
	if err := r.try(gray); !errors.Is(err, ErrBadImage) {
		t.Fatalf("gray input: %v, want ErrBadImage", err)
	}
	empty := gocv.NewMat()
	defer empty.Close()
	if err := r.try(empty); !errors.Is(err, ErrBadImage) {
		t.Fatalf("empty input: %v, want ErrBadImage", err)
	}
}

func TestMotion(t *testing.T) {
	frames := videoFrames(t, vtestPath, 0, 10)
	t.Run("equal frames", func(t *testing.T) {
		r := newRunner(t, build(t, MotionSpec(), nil))
		for i := 0; i < 3; i++ {
			out := r.run(t, frames[0])
			if len(out.Detections) != 0 || out.Values["motion"] != "false" {
				t.Fatalf("run %d on a still picture: %d regions, motion=%q", i, len(out.Detections), out.Values["motion"])
			}
		}
	})
	t.Run("different frames", func(t *testing.T) {
		r := newRunner(t, build(t, MotionSpec(), map[string]any{"min_area": 300}))
		r.run(t, frames[0])
		out := r.run(t, frames[1])
		if len(out.Detections) == 0 || out.Values["motion"] != "true" {
			t.Fatalf("people walked between frames 0 and 10: %d regions, motion=%q", len(out.Detections), out.Values["motion"])
		}
		w, h := float32(frames[1].Cols()), float32(frames[1].Rows())
		for _, d := range out.Detections {
			if d.Label != "motion" || d.W*d.H < 300 || d.X < 0 || d.Y < 0 || d.X+d.W > w || d.Y+d.H > h {
				t.Fatalf("bad region %v", d)
			}
			if d.W*d.H > w*h/2 {
				t.Fatalf("region %v covers half the frame: the background model did not hold", d)
			}
		}
		t.Logf("%d motion regions, largest %v", len(out.Detections), out.Detections[0])
	})
}

// rectsOf returns the detections as rectangles for readable failures.
func rectsOf(out *processors.Output) []image.Rectangle {
	var rs []image.Rectangle
	for _, d := range out.Detections {
		rs = append(rs, image.Rect(int(d.X), int(d.Y), int(d.X+d.W), int(d.Y+d.H)))
	}
	return rs
}

func TestHOGFindsPeople(t *testing.T) {
	frames := videoFrames(t, vtestPath, 0, 100, 200)
	r := newRunner(t, build(t, DetectSpec(), map[string]any{"backend": "hog"}))
	total := 0
	for i, f := range frames {
		out := r.run(t, f)
		for _, d := range out.Detections {
			// min_score 0.3 on the SVM margin: at least 1/(1+e^-0.3).
			if d.Label != "person" || d.Score < 0.574 || d.Score > 1 {
				t.Fatalf("frame %d: detection %v", i, d)
			}
			// A standing person is taller than wide.
			if d.H < d.W {
				t.Fatalf("frame %d: person box %v wider than tall", i, d)
			}
		}
		// NMS leaves no two boxes overlapping more than the threshold.
		rs := rectsOf(out)
		for a := range rs {
			for b := a + 1; b < len(rs); b++ {
				if iou(rs[a], rs[b]) > 0.4 {
					t.Fatalf("frame %d: boxes %v and %v overlap %.2f after NMS", i, rs[a], rs[b], iou(rs[a], rs[b]))
				}
			}
		}
		t.Logf("frame %d: %d people %v", i, len(rs), rs)
		total += len(rs)
	}
	// vtest.avi shows several people walking in every frame.
	if total < len(frames) {
		t.Fatalf("%d people in %d frames of vtest.avi", total, len(frames))
	}
}

func iou(a, b image.Rectangle) float64 {
	return float64(processors.IoU(float32(a.Min.X), float32(a.Min.Y), float32(a.Dx()), float32(a.Dy()),
		float32(b.Min.X), float32(b.Min.Y), float32(b.Dx()), float32(b.Dy())))
}

func TestHaarFindsMessisFace(t *testing.T) {
	img := readImage(t, messiPath)
	out := newRunner(t, build(t, DetectSpec(), map[string]any{"backend": "haar"})).run(t, img)
	rs := rectsOf(out)
	t.Logf("faces %v", rs)
	// Looking at the picture (548x342) with the boxes drawn: Messi's face
	// (below the hair, above the collar) spans about x 225..260, y 95..130.
	face := image.Rect(215, 85, 275, 140)
	found := false
	for i, r := range rs {
		if out.Detections[i].Label != "face" {
			t.Fatalf("label %q", out.Detections[i].Label)
		}
		c := image.Pt((r.Min.X+r.Max.X)/2, (r.Min.Y+r.Max.Y)/2)
		if c.In(face) && r.Dx() >= 20 && r.Dx() <= 80 {
			found = true
		}
	}
	if !found {
		t.Fatalf("no face box centred in %v: %v", face, rs)
	}
}

func TestDetectBadCascade(t *testing.T) {
	// The picture's directory is the models directory, so the second case
	// is a readable file that is no cascade.
	spec := DetectSpecIn(modelfiles.New(filepath.Dir(messiPath)))
	for _, path := range []string{"/nonexistent/cascade.xml", messiPath} {
		params, err := spec.Resolve(map[string]any{"backend": "haar", "cascade": path})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := spec.New(params); !errors.Is(err, ErrConfig) {
			t.Fatalf("cascade %s: %v, want ErrConfig", path, err)
		}
	}
}

func TestDetectGate(t *testing.T) {
	frames := videoFrames(t, vtestPath, 0)
	r := newRunner(t, build(t, DetectSpec(), map[string]any{"backend": "hog", "gate": GateOnlyIfMotion}))
	r.in.Values = map[string]string{"motion": "false"}
	if out := r.run(t, frames[0]); len(out.Detections) != 0 {
		t.Fatalf("gated detect ran without motion: %v", rectsOf(out))
	}
	r.in.Values["motion"] = "true"
	if out := r.run(t, frames[0]); len(out.Detections) == 0 {
		t.Fatal("gated detect found nobody with motion=true")
	}
}

func TestOverlayDraws(t *testing.T) {
	img := readImage(t, messiPath)
	r := newRunner(t, build(t, OverlaySpec(), map[string]any{"color": "red", "thickness": 3}))
	r.in.Detections = append(r.in.Detections, newDetection(100, 100, 80, 60, "face", 0.9))
	out := r.run(t, img)
	// The box's top edge is red (BGR 0,0,255) and the source is untouched.
	if p := out.Image.GetVecbAt(100, 140); p[0] != 0 || p[1] != 0 || p[2] != 255 {
		t.Fatalf("box edge pixel %v, want red", p)
	}
	if p := img.GetVecbAt(100, 140); p[0] == 0 && p[1] == 0 && p[2] == 255 {
		t.Fatal("overlay drew on its input")
	}
	if meanAbsDiff(t, img, out.Image) == 0 {
		t.Fatal("overlay changed nothing")
	}
}

func TestRegisterSpecs(t *testing.T) {
	reg := processors.NewRegistry()
	Register(reg)
	want := []string{"detect", "filter", "motion", "overlay", "resize"}
	specs := reg.Specs()
	if len(specs) != len(want) {
		t.Fatalf("%d specs, want %v", len(specs), want)
	}
	for i, s := range specs {
		if s.Name != want[i] || s.Description == "" || s.New == nil || len(s.Outputs) == 0 {
			t.Fatalf("spec %d: %+v", i, s)
		}
		// Every default passes the spec's own validation.
		if _, err := s.Resolve(nil); err != nil {
			t.Fatalf("%s defaults: %v", s.Name, err)
		}
		for _, p := range s.Params {
			if p.Description == "" {
				t.Fatalf("%s.%s undocumented", s.Name, p.Name)
			}
		}
	}
}
