package blazeface

import (
	"errors"
	"image"
	"math"
	"testing"

	"gocv.io/x/gocv"

	"github.com/imageflowcanvas/imageflow/processors/modelfiles"
	"github.com/imageflowcanvas/imageflow/processors/yolo"
	"github.com/imageflowcanvas/imageflow/processors/yolo/yolotest"
)

const messiPath = dataDir + "messi5.jpg"

// messiFace is Messi's face in messi5.jpg (548x342), read off a 4x crop of
// the picture written out and looked at: forehead below the hair to chin,
// ear to cheek, about x 220..262, y 88..135.
var messiFace = image.Rect(218, 86, 264, 137)

// loadDetector loads the model the setup installs (scripts/lib.sh,
// need_models).
func loadDetector(t testing.TB) *Detector {
	t.Helper()
	buf, err := modelfiles.New("").ReadFile(DefaultModel, modelfiles.MaxModelBytes)
	if err != nil {
		t.Fatalf("the installed BlazeFace model (scripts/setup-product.sh installs it): %v", err)
	}
	d, err := New(buf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func readImage(t testing.TB, path string) gocv.Mat {
	t.Helper()
	m := gocv.IMRead(path, gocv.IMReadColor)
	if m.Empty() {
		t.Fatalf("cannot read %s", path)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

var defaults = Options{MinScore: 0.5, NMSThreshold: 0.3}

func TestFindsMessisFace(t *testing.T) {
	d := loadDetector(t)
	img := readImage(t, messiPath)
	// Twice: the second call reuses every buffer and must agree.
	for range 2 {
		faces, err := d.Detect(img, defaults)
		if err != nil {
			t.Fatal(err)
		}
		if len(faces) != 1 {
			t.Fatalf("%d faces, want 1: %+v", len(faces), faces)
		}
		f := faces[0]
		box := image.Rect(int(f.X), int(f.Y), int(math.Ceil(float64(f.X+f.W))), int(math.Ceil(float64(f.Y+f.H))))
		t.Logf("face %v score %.3f keypoints %v", box, f.Score, f.Keypoints)
		if !box.In(messiFace) {
			t.Errorf("box %v not within the face %v", box, messiFace)
		}
		if a, fa := box.Dx()*box.Dy(), messiFace.Dx()*messiFace.Dy(); a*3 < fa {
			t.Errorf("box %v covers less than a third of the face %v", box, messiFace)
		}
		if f.Score < 0.5 || f.Score > 1 {
			t.Errorf("score %v", f.Score)
		}
		// The eyes, nose and mouth lie inside the face.
		for k := range 4 {
			if p := image.Pt(int(f.Keypoints[k][0]), int(f.Keypoints[k][1])); !p.In(messiFace) {
				t.Errorf("keypoint %d at %v outside the face", k, p)
			}
		}
	}
}

// TestFindsFaceInGreyPhoto: basketball1.png, a grey office photo, holds one
// face seen from the front (the man on the left with the ball, about
// x 70..100, y 95..130 of 640x480, checked by eye on the picture with the
// box drawn); the other man is seen from behind.
func TestFindsFaceInGreyPhoto(t *testing.T) {
	d := loadDetector(t)
	img := readImage(t, dataDir+"basketball1.png")
	faces, err := d.Detect(img, defaults)
	if err != nil {
		t.Fatal(err)
	}
	if len(faces) != 1 {
		t.Fatalf("%d faces %+v, want 1", len(faces), faces)
	}
	f := faces[0]
	if c := image.Pt(int(f.X+f.W/2), int(f.Y+f.H/2)); !c.In(image.Rect(70, 95, 100, 130)) || f.W < 15 || f.W > 50 {
		t.Fatalf("face %+v", f)
	}
}

const dataDir = "/usr/share/doc/opencv-doc/examples/data/"

func TestNoFace(t *testing.T) {
	d := loadDetector(t)
	messi := readImage(t, messiPath)
	grey := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(128, 128, 128, 0), 480, 640, gocv.MatTypeCV8UC3)
	defer grey.Close()
	// Messi's legs, the ball and the pitch: below the face, no one else's.
	legs := messi.Region(image.Rect(200, 180, 548, 342))
	defer legs.Close()
	pictures := map[string]gocv.Mat{"grey": grey, "legs": legs}
	// Pictures of things with eyes, round shapes and clutter, but no
	// human face.
	for _, name := range []string{"fruits.jpg", "building.jpg", "sudoku.png", "home.jpg", "baboon.jpg", "starry_night.jpg", "smarties.png", "Blender_Suzanne1.jpg"} {
		pictures[name] = readImage(t, dataDir+name)
	}
	for name, img := range pictures {
		faces, err := d.Detect(img, defaults)
		if err != nil {
			t.Fatal(err)
		}
		if len(faces) != 0 {
			t.Errorf("%s: %d faces %+v, want none", name, len(faces), faces)
		}
	}
}

// TestDecodeOneAnchor decodes the best anchor of the real network's output
// for messi5.jpg by hand, from the layout the model card gives (anchor at
// the cell centre, offsets in input pixels, sigmoid of the logit), and
// checks Decode agrees when that anchor is the only one above the
// threshold.
func TestDecodeOneAnchor(t *testing.T) {
	d := loadDetector(t)
	img := readImage(t, messiPath)
	tens, lb, err := d.Run(img)
	if err != nil {
		t.Fatal(err)
	}
	// The letterbox of 548x342 into 256: scale 256/548, 160 rows high,
	// (256-160)/2 = 48 rows of margin above.
	scale := 256.0 / 548.0
	padX, padY := 0.0, 48.0
	if math.Abs(float64(lb.Scale)-scale) > 1e-6 || lb.PadX != 0 || lb.PadY != 48 {
		t.Fatalf("letterbox %+v", lb)
	}
	layer, best := 0, 0
	for l := range 2 {
		for i, v := range tens.Scores[l] {
			if v > tens.Scores[layer][best] {
				layer, best = l, i
			}
		}
	}
	grid, per := 16, 2
	if layer == 1 {
		grid, per = 8, 6
	}
	cell := best / per
	step := 256.0 / float64(grid)
	ax, ay := (float64(cell%grid)+0.5)*step, (float64(cell/grid)+0.5)*step
	raw := tens.Boxes[layer][best*16 : best*16+16]
	cx, cy := ax+float64(raw[0]), ay+float64(raw[1])
	w, h := float64(raw[2]), float64(raw[3])
	want := struct{ x, y, w, h, score float64 }{
		x: (cx - w/2 - padX) / scale, y: (cy - h/2 - padY) / scale, w: w / scale, h: h / scale,
		score: 1 / (1 + math.Exp(-float64(tens.Scores[layer][best]))),
	}
	t.Logf("best anchor: layer %d index %d at (%.0f, %.0f), logit %.3f, raw %v", layer, best, ax, ay, tens.Scores[layer][best], raw)
	// Only that anchor above the threshold.
	var only Tensors
	for l := range 2 {
		only.Scores[l] = make([]float32, len(tens.Scores[l]))
		for i := range only.Scores[l] {
			only.Scores[l][i] = -50
		}
		only.Boxes[l] = tens.Boxes[l]
	}
	only.Scores[layer][best] = tens.Scores[layer][best]
	faces, err := Decode(nil, only, lb, Options{MinScore: 0.5, NMSThreshold: 0.3})
	if err != nil {
		t.Fatal(err)
	}
	if len(faces) != 1 {
		t.Fatalf("%d faces from one anchor", len(faces))
	}
	f := faces[0]
	for _, c := range []struct {
		name      string
		got, want float64
	}{{"x", float64(f.X), want.x}, {"y", float64(f.Y), want.y}, {"w", float64(f.W), want.w}, {"h", float64(f.H), want.h}, {"score", float64(f.Score), want.score}} {
		if math.Abs(c.got-c.want) > 1e-3*math.Max(1, math.Abs(c.want)) {
			t.Errorf("%s = %v, hand-decoded %v", c.name, c.got, c.want)
		}
	}
	for k := range Keypoints {
		kx := (ax + float64(raw[4+2*k]) - padX) / scale
		ky := (ay + float64(raw[5+2*k]) - padY) / scale
		if math.Abs(float64(f.Keypoints[k][0])-kx) > 1e-3 || math.Abs(float64(f.Keypoints[k][1])-ky) > 1e-3 {
			t.Errorf("keypoint %d = %v, hand-decoded (%v, %v)", k, f.Keypoints[k], kx, ky)
		}
	}
}

// TestDecodeBlend checks the weighted merge on two made-up anchors of one
// cell and a third far away, on a picture the size of the input.
func TestDecodeBlend(t *testing.T) {
	var tens Tensors
	for l, layer := range Layers {
		tens.Scores[l] = make([]float32, layer.Anchors())
		for i := range tens.Scores[l] {
			tens.Scores[l][i] = -20
		}
		tens.Boxes[l] = make([]float32, layer.Anchors()*ValuesPerAnchor)
	}
	set := func(l, i int, logit float32, dx, dy, w, h float32) {
		tens.Scores[l][i] = logit
		copy(tens.Boxes[l][i*16:], []float32{dx, dy, w, h})
	}
	// Layer 0, cell (3, 2): index (2*16+3)*2 = 70 and 71, centre (56, 40).
	set(0, 70, 0, 0, 0, 20, 20)                    // score 0.5
	set(0, 71, float32(math.Log(3)), 2, 0, 20, 20) // score 0.75
	// Layer 1, cell (7, 7): index (7*8+7)*6 = 378, centre (240, 240).
	set(1, 378, 2, 0, 0, 10, 10)
	lb := yolo.Letterbox{Size: 256, Width: 256, Height: 256, Scale: 1}
	faces, err := Decode(nil, tens, lb, Options{MinScore: 0.4, NMSThreshold: 0.3})
	if err != nil {
		t.Fatal(err)
	}
	if len(faces) != 2 {
		t.Fatalf("faces %+v, want 2", faces)
	}
	far := faces[0] // sigmoid(2) = 0.88 is the best
	if math.Abs(float64(far.Score)-1/(1+math.Exp(-2))) > 1e-6 || far.X != 235 || far.Y != 235 || far.W != 10 || far.H != 10 {
		t.Errorf("far face %+v", far)
	}
	// Centres 56 and 58 weighted 0.5 and 0.75: 56 + 2*0.75/1.25 = 57.2.
	near := faces[1]
	if math.Abs(float64(near.X)-(57.2-10)) > 1e-4 || math.Abs(float64(near.Y)-30) > 1e-4 || math.Abs(float64(near.W)-20) > 1e-4 || math.Abs(float64(near.Score)-0.75) > 1e-6 {
		t.Errorf("blended face %+v, want x 47.2 y 30 w 20 score 0.75", near)
	}
	// A threshold above 0.75 leaves only the far one; MaxFaces caps.
	if faces, _ := Decode(nil, tens, lb, Options{MinScore: 0.8, NMSThreshold: 0.3}); len(faces) != 1 {
		t.Errorf("min score 0.8: %+v", faces)
	}
	if faces, _ := Decode(nil, tens, lb, Options{MinScore: 0.4, NMSThreshold: 0.3, MaxFaces: 1}); len(faces) != 1 {
		t.Errorf("max 1: %+v", faces)
	}
	// NaN and short tensors are refused or skipped, never a panic.
	tens.Boxes[0][70*16] = float32(math.NaN())
	if faces, err := Decode(nil, tens, lb, Options{MinScore: 0.4, NMSThreshold: 0.3}); err != nil || len(faces) != 2 {
		t.Errorf("NaN box: %+v, %v", faces, err)
	}
	tens.Scores[1] = tens.Scores[1][:10]
	if _, err := Decode(nil, tens, lb, Options{MinScore: 0.4}); err == nil {
		t.Error("short tensor accepted")
	}
}

func TestRefusesOtherModels(t *testing.T) {
	yoloModel, err := yolotest.Model(32, make([]float32, 12), []int64{1, 6, 2})
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"garbage": []byte("not a model"), "yolo": yoloModel} {
		if d, err := New(b); !errors.Is(err, ErrModel) {
			if d != nil {
				d.Close()
			}
			t.Errorf("%s: %v, want ErrModel", name, err)
		}
	}
}

func TestBadPictures(t *testing.T) {
	d := loadDetector(t)
	grey := gocv.NewMatWithSize(10, 10, gocv.MatTypeCV8UC1)
	defer grey.Close()
	for name, img := range map[string]gocv.Mat{"empty": gocv.NewMat(), "grey": grey} {
		if _, err := d.Detect(img, defaults); err == nil {
			t.Errorf("%s picture accepted", name)
		}
	}
	// A 1x1 and a very wide picture letterbox without trouble.
	for _, sz := range []image.Point{{1, 1}, {4000, 3}} {
		m := gocv.NewMatWithSize(sz.Y, sz.X, gocv.MatTypeCV8UC3)
		if _, err := d.Detect(m, defaults); err != nil {
			t.Errorf("%v: %v", sz, err)
		}
		m.Close()
	}
	d.Close()
	d.Close()
	if _, err := d.Detect(grey, defaults); err == nil {
		t.Error("closed detector ran")
	}
}
