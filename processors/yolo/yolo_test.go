package yolo

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"

	"gocv.io/x/gocv"

	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/processors/modelfiles"
	"github.com/imageflowcanvas/imageflow/processors/yolo/yolotest"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// testBoxes are raw predictions in model-input pixels (640x640) for a
// 1280x720 image: scale 0.5, no horizontal pad, 140 px of pad top and bottom.
var testBoxes = []yolotest.Box{
	{CX: 200, CY: 300, W: 100, H: 80, Class: 0, Score: 0.9}, // kept
	{CX: 205, CY: 305, W: 100, H: 80, Class: 0, Score: 0.8}, // same class, IoU ~0.84: suppressed
	{CX: 205, CY: 305, W: 100, H: 80, Class: 1, Score: 0.7}, // other class: kept
	{CX: 500, CY: 400, W: 50, H: 50, Class: 2, Score: 0.1},  // below threshold
	{CX: 10, CY: 150, W: 40, H: 40, Class: 2, Score: 0.6},   // clipped at the top-left corner
	{CX: 400, CY: 300, W: 0, H: 40, Class: 1, Score: 0.95},  // zero width: dropped
}

// wantDets are testBoxes mapped by hand: x = (cx - w/2 - padX) / scale,
// y = (cy - h/2 - padY) / scale, clipped to 1280x720.
var wantDets = []*busv1.Detection{
	{X: 300, Y: 240, W: 200, H: 160, Label: "person", Score: 0.9, ClassId: 0},
	{X: 310, Y: 250, W: 200, H: 160, Label: "bike", Score: 0.7, ClassId: 1},
	{X: 0, Y: 0, W: 60, H: 60, Label: "car", Score: 0.6, ClassId: 2},
}

var testClasses = []string{"person", "bike", "car"}

func writeModel(t testing.TB, v5 bool) string {
	t.Helper()
	out, shape := yolotest.V8Output(len(testClasses), testBoxes)
	if v5 {
		out, shape = yolotest.V5Output(len(testClasses), testBoxes)
	}
	b, err := yolotest.Model(640, out, shape)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "model.onnx")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func sameDets(t *testing.T, got, want []*busv1.Detection) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d detections %v, want %d %v", len(got), got, len(want), want)
	}
	for i := range want {
		g, w := got[i], want[i]
		near := func(a, b float32) bool { return math.Abs(float64(a-b)) < 1e-3 }
		if !near(g.X, w.X) || !near(g.Y, w.Y) || !near(g.W, w.W) || !near(g.H, w.H) ||
			!near(g.Score, w.Score) || g.Label != w.Label || g.ClassId != w.ClassId {
			t.Errorf("detection %d = %v, want %v", i, g, w)
		}
	}
}

func TestONNXDetects(t *testing.T) {
	for _, tc := range []struct {
		name   string
		v5     bool
		layout string
	}{{"v8", false, "auto"}, {"v5", true, "auto"}, {"v8-explicit", false, "v8"}, {"v5-explicit", true, "v5"}} {
		t.Run(tc.name, func(t *testing.T) {
			spec := processors.Spec{Name: "yolo", Params: ParamSpecs()}
			model := writeModel(t, tc.v5)
			params, err := spec.Resolve(map[string]any{"model": model, "classes": "person, bike,car", "layout": tc.layout})
			if err != nil {
				t.Fatal(err)
			}
			p, err := NewONNX(params, modelfiles.New(filepath.Dir(model)))
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			img := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(40, 80, 120, 0), 720, 1280, gocv.MatTypeCV8UC3)
			defer img.Close()
			for i := 0; i < 2; i++ { // twice: buffers are reused
				var out processors.Output
				if err := p.Process(context.Background(), &processors.Input{Image: img}, &out); err != nil {
					t.Fatal(err)
				}
				sameDets(t, out.Detections, wantDets)
			}
		})
	}
}

func TestONNXErrors(t *testing.T) {
	spec := processors.Spec{Name: "yolo", Params: ParamSpecs()}
	params, _ := spec.Resolve(nil)
	if _, err := NewONNX(params, nil); !errors.Is(err, processors.ErrBadParam) {
		t.Errorf("no model: %v, want ErrBadParam", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.onnx")
	os.WriteFile(bad, []byte("not a model"), 0o644)
	params, _ = spec.Resolve(map[string]any{"model": bad})
	if _, err := NewONNX(params, modelfiles.New(filepath.Dir(bad))); !errors.Is(err, ErrModel) {
		t.Errorf("garbage model: %v, want ErrModel", err)
	}
	model := writeModel(t, false)
	files := modelfiles.New(filepath.Dir(model))
	params, _ = spec.Resolve(map[string]any{"model": model, "timeout": "soon"})
	if _, err := NewONNX(params, files); !errors.Is(err, processors.ErrBadParam) {
		t.Errorf("bad timeout: %v, want ErrBadParam", err)
	}
	params, _ = spec.Resolve(map[string]any{"model": model})
	p, err := NewONNX(params, files)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	gray := gocv.NewMatWithSize(10, 10, gocv.MatTypeCV8U)
	defer gray.Close()
	var out processors.Output
	if err := p.Process(context.Background(), &processors.Input{Image: gray}, &out); err == nil {
		t.Error("grey image accepted")
	}
	if err := p.Process(context.Background(), &processors.Input{Image: gocv.NewMat()}, &out); err == nil {
		t.Error("empty image accepted")
	}
}

func TestLetterbox(t *testing.T) {
	for _, tc := range []struct {
		w, h, size int
		scale      float32
		px, py     int
	}{
		{640, 480, 640, 1, 0, 80},
		{1280, 720, 640, 0.5, 0, 140},
		{480, 640, 640, 1, 80, 0},
		{100, 100, 640, 6.4, 0, 0},
	} {
		lb := NewLetterbox(tc.w, tc.h, tc.size)
		if lb.Scale != tc.scale || lb.PadX != tc.px || lb.PadY != tc.py {
			t.Errorf("%dx%d→%d: %+v", tc.w, tc.h, tc.size, lb)
		}
	}
	lb := NewLetterbox(640, 480, 640)
	x, y, w, h := lb.ToImage(320, 320, 100, 100)
	if x != 270 || y != 190 || w != 100 || h != 100 {
		t.Errorf("ToImage = %v %v %v %v", x, y, w, h)
	}
}

func TestPreprocessPixels(t *testing.T) {
	img := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(10, 20, 30, 0), 240, 320, gocv.MatTypeCV8UC3)
	defer img.Close()
	lb, dst := Preprocess(img, 64, nil)
	// 320x240 → 64x48, 8 rows of pad above and below.
	if lb.Scale != 0.2 || lb.PadY != 8 || lb.PadX != 0 || len(dst) != 3*64*64 {
		t.Fatalf("lb %+v len %d", lb, len(dst))
	}
	plane := 64 * 64
	at := func(c, x, y int) float32 { return dst[c*plane+y*64+x] }
	const eps = 1e-6
	for _, c := range []int{0, 1, 2} {
		if math.Abs(float64(at(c, 5, 0)-114.0/255)) > eps || math.Abs(float64(at(c, 5, 63)-114.0/255)) > eps {
			t.Errorf("channel %d pad = %v %v", c, at(c, 5, 0), at(c, 5, 63))
		}
	}
	// Planes are R, G, B; the image is B=10 G=20 R=30.
	if math.Abs(float64(at(0, 32, 32)-30.0/255)) > eps || math.Abs(float64(at(1, 32, 32)-20.0/255)) > eps ||
		math.Abs(float64(at(2, 32, 32)-10.0/255)) > eps {
		t.Errorf("centre = %v %v %v", at(0, 32, 32), at(1, 32, 32), at(2, 32, 32))
	}
	// Reuse: same backing array.
	_, dst2 := Preprocess(img, 64, dst)
	if &dst2[0] != &dst[0] {
		t.Error("dst not reused")
	}
	if _, d := Preprocess(gocv.NewMat(), 64, nil); len(d) != 0 {
		t.Error("empty image gave a tensor")
	}
}

func TestNMS(t *testing.T) {
	box := func(x, y, w, h, s float32, c int) candidate { return candidate{x, y, w, h, s, c} }
	for _, tc := range []struct {
		name   string
		in     []candidate
		thresh float32
		want   []float32 // kept scores in order
	}{
		{"overlap same class", []candidate{box(0, 0, 10, 10, 0.5, 0), box(1, 1, 10, 10, 0.9, 0)}, 0.45, []float32{0.9}},
		{"overlap other class", []candidate{box(0, 0, 10, 10, 0.5, 0), box(1, 1, 10, 10, 0.9, 1)}, 0.45, []float32{0.9, 0.5}},
		{"apart", []candidate{box(0, 0, 10, 10, 0.5, 0), box(20, 20, 10, 10, 0.9, 0)}, 0.45, []float32{0.9, 0.5}},
		// IoU of these two is 25/175 ≈ 0.143.
		{"below threshold", []candidate{box(0, 0, 10, 10, 0.5, 0), box(5, 5, 10, 10, 0.6, 0)}, 0.2, []float32{0.6, 0.5}},
		{"above threshold", []candidate{box(0, 0, 10, 10, 0.5, 0), box(5, 5, 10, 10, 0.6, 0)}, 0.1, []float32{0.6}},
		{"chain", []candidate{box(0, 0, 10, 10, 0.9, 0), box(1, 0, 10, 10, 0.8, 0), box(30, 0, 10, 10, 0.7, 0)}, 0.5, []float32{0.9, 0.7}},
	} {
		got := nms(tc.in, tc.thresh)
		if len(got) != len(tc.want) {
			t.Errorf("%s: kept %v", tc.name, got)
			continue
		}
		for i := range got {
			if got[i].score != tc.want[i] {
				t.Errorf("%s: kept %v", tc.name, got)
			}
		}
	}
}

func TestDecodeBadShapes(t *testing.T) {
	lb := NewLetterbox(640, 640, 640)
	for _, shape := range [][]int64{{}, {1}, {1, 0, 5}, {1, 3, 2}, {2, 2, 2, 2}, {1, 10, 100}} {
		if _, err := DecodeErr(make([]float32, 6), shape, lb, DecodeOptions{}); err == nil {
			t.Errorf("shape %v accepted for 6 values", shape)
		}
	}
}

func TestParseClasses(t *testing.T) {
	c, _ := ParseClasses("", nil)
	if len(c) != 80 || c[0] != "person" || c[79] != "toothbrush" {
		t.Errorf("default classes %d %v", len(c), c[:2])
	}
	c, _ = ParseClasses(" a, b ,c", nil)
	if len(c) != 3 || c[1] != "b" {
		t.Errorf("comma list %q", c)
	}
	path := filepath.Join(t.TempDir(), "names.txt")
	os.WriteFile(path, []byte("cat\n\ndog\n"), 0o644)
	c, err := ParseClasses(path, modelfiles.New(filepath.Dir(path)))
	if err != nil || len(c) != 2 || c[1] != "dog" {
		t.Errorf("file %q %v", c, err)
	}
	const coco = "/usr/share/doc/opencv-doc/examples/data/dnn/object_detection_classes_coco.txt"
	if _, err := os.Stat(coco); err == nil {
		c, err := ParseClasses(coco, modelfiles.New(filepath.Dir(coco)))
		if err != nil || len(c) < 80 || c[0] != "person" {
			t.Errorf("opencv coco file: %d %v", len(c), err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 200, 210, 220, 230}, uint8(1), uint8(6), uint8(2), uint8(0))
	f.Add([]byte{0, 0, 0, 0}, uint8(1), uint8(5), uint8(1), uint8(1))
	f.Add([]byte{255, 255, 127, 127}, uint8(1), uint8(2), uint8(6), uint8(2))
	f.Fuzz(func(t *testing.T, raw []byte, b, a, n, layout uint8) {
		vals := make([]float32, len(raw))
		for i, v := range raw {
			vals[i] = float32(v)/64 - 1
		}
		if len(raw) > 8 {
			vals[0] = float32(math.NaN())
		}
		lb := NewLetterbox(100, 50, 64)
		opts := DecodeOptions{Layout: Layout(layout % 4), ConfThreshold: 0.1, NMSThreshold: 0.5, Classes: []string{"x"}}
		dets := Decode(vals, []int64{int64(b), int64(a), int64(n)}, lb, opts)
		for _, d := range dets {
			if d.X < 0 || d.Y < 0 || d.X+d.W > 100.01 || d.Y+d.H > 50.01 {
				t.Fatalf("box outside the image: %v", d)
			}
		}
	})
}
