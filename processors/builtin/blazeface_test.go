package builtin

import (
	"errors"
	"image"
	"os"
	"path/filepath"
	"testing"

	"gocv.io/x/gocv"

	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/processors/modelfiles"
)

// TestBlazeFaceFindsMessisFace runs the detect step with its default
// blazeface model, the one the setup installs.
func TestBlazeFaceFindsMessisFace(t *testing.T) {
	img := readImage(t, messiPath)
	r := newRunner(t, build(t, DetectSpec(), map[string]any{"backend": "blazeface"}))
	// The same face as TestHaarFindsMessisFace's, read off the picture.
	face := image.Rect(215, 85, 275, 140)
	for range 2 {
		out := r.run(t, img)
		rs := rectsOf(out)
		t.Logf("faces %v", rs)
		if len(rs) != 1 {
			t.Fatalf("%d faces %v, want 1", len(rs), rs)
		}
		d := out.Detections[0]
		if d.Label != "face" || d.Score < 0.5 || d.Score > 1 {
			t.Fatalf("detection %v", d)
		}
		if !rs[0].In(face) || rs[0].Dx() < 25 {
			t.Fatalf("box %v not a face-sized box within %v", rs[0], face)
		}
	}
}

func TestBlazeFaceNoFace(t *testing.T) {
	grey := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(90, 120, 150, 0), 360, 640, gocv.MatTypeCV8UC3)
	defer grey.Close()
	r := newRunner(t, build(t, DetectSpec(), map[string]any{"backend": "blazeface"}))
	if out := r.run(t, grey); len(out.Detections) != 0 {
		t.Fatalf("faces on a plain picture: %v", rectsOf(out))
	}
}

// TestBlazeFaceModelsDir: another model file comes from models_dir, a file
// that is no BlazeFace model is refused when the step is built, a name
// outside the directories when the pipeline is saved.
func TestBlazeFaceModelsDir(t *testing.T) {
	installed, err := os.ReadFile(filepath.Join(modelfiles.Installed, DefaultBlazeFaceModel))
	if err != nil {
		t.Fatalf("the installed model (scripts/setup-product.sh installs it): %v", err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "my-face.onnx"), installed, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "not-a-model.onnx"), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := DetectSpecIn(modelfiles.New(dir))
	img := readImage(t, messiPath)
	out := newRunner(t, build(t, spec, map[string]any{"backend": "blazeface", "model": "my-face.onnx"})).run(t, img)
	if len(out.Detections) != 1 {
		t.Fatalf("model from models_dir: %v", rectsOf(out))
	}
	params, err := spec.Resolve(map[string]any{"backend": "blazeface", "model": "not-a-model.onnx"})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := spec.New(params); !errors.Is(err, ErrConfig) {
		if p != nil {
			p.Close()
		}
		t.Fatalf("garbage model: %v, want ErrConfig", err)
	}
	for _, bad := range []string{"/etc/passwd", "../x.onnx", "missing.onnx"} {
		params, err := spec.Resolve(map[string]any{"backend": "blazeface", "model": bad})
		if err == nil {
			err = spec.Check(params)
		}
		if !errors.Is(err, processors.ErrBadParam) {
			t.Errorf("model %q: %v, want ErrBadParam", bad, err)
		}
	}
	params, err = spec.Resolve(map[string]any{"backend": "blazeface", "regions": RegionsMotion})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := spec.New(params); !errors.Is(err, ErrConfig) {
		if p != nil {
			p.Close()
		}
		t.Fatalf("regions=motion: %v, want ErrConfig", err)
	}
}
