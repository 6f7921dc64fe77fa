package builtin

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gocv.io/x/gocv"

	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/processors/modelfiles"
	"github.com/imageflowcanvas/imageflow/processors/yolo/yolotest"
)

// TestDetectONNXBackend runs the detect step with backend=onnx on a tiny
// real ONNX model whose output is a known YOLOv8 head: one box per class.
func TestDetectONNXBackend(t *testing.T) {
	out, shape := yolotest.V8Output(2, []yolotest.Box{
		{CX: 320, CY: 320, W: 100, H: 200, Class: 0, Score: 0.9},
		{CX: 100, CY: 100, W: 40, H: 40, Class: 1, Score: 0.8},
	})
	b, err := yolotest.Model(640, out, shape)
	if err != nil {
		t.Fatal(err)
	}
	model := filepath.Join(t.TempDir(), "m.onnx")
	if err := os.WriteFile(model, b, 0o644); err != nil {
		t.Fatal(err)
	}
	img := gocv.NewMatWithSize(640, 640, gocv.MatTypeCV8UC3)
	defer img.Close()

	spec := DetectSpecIn(modelfiles.New(filepath.Dir(model)))
	r := newRunner(t, build(t, spec, map[string]any{"backend": "onnx", "model": model, "classes": "walker,dog", "layout": "v8"}))
	got := r.run(t, img)
	if len(got.Detections) != 2 {
		t.Fatalf("detections %v", got.Detections)
	}
	d := got.Detections[0]
	if d.Label != "walker" || d.X != 270 || d.Y != 220 || d.W != 100 || d.H != 200 {
		t.Fatalf("first detection %v, want walker at 270,220 100x200", d)
	}

	// label overrides the class names, max_detections keeps the first, the
	// gate skips the model without motion.
	r = newRunner(t, build(t, spec, map[string]any{"backend": "onnx", "model": model, "label": "thing", "max_detections": 1, "gate": GateOnlyIfMotion, "layout": "v8"}))
	r.in.Values = map[string]string{"motion": "true"}
	got = r.run(t, img)
	if len(got.Detections) != 1 || got.Detections[0].Label != "thing" {
		t.Fatalf("detections %v, want one labelled thing", got.Detections)
	}
	r.in.Values["motion"] = "false"
	if got = r.run(t, img); len(got.Detections) != 0 {
		t.Fatalf("gated onnx ran: %v", got.Detections)
	}

	missing := t.TempDir()
	spec = DetectSpecIn(modelfiles.New(missing))
	params, _ := spec.Resolve(map[string]any{"backend": "onnx", "model": filepath.Join(missing, "missing.onnx")})
	if _, err := spec.New(params); err == nil || !strings.Contains(err.Error(), "missing.onnx") {
		t.Fatalf("missing model: %v", err)
	}
}

// TestDetectTritonBackendNoServer: the triton backend builds without a
// server (it connects lazily) and a frame fails with an error, not a hang.
func TestDetectTritonBackendNoServer(t *testing.T) {
	r := newRunner(t, build(t, DetectSpec(), map[string]any{"backend": "triton", "url": "127.0.0.1:1", "timeout": "300ms"}))
	img := gocv.NewMatWithSize(64, 64, gocv.MatTypeCV8UC3)
	defer img.Close()
	r.in.Image = img
	err := r.p.Process(context.Background(), &r.in, &r.out)
	if err == nil || errors.Is(err, ErrBadImage) {
		t.Fatalf("triton without a server: %v", err)
	}
}

// TestDetectFilesOutsideModelsDir: a stored pipeline saved before
// validation refused such names is compiled at every start; building the
// step must refuse them too, without reading (/dev/zero used to be read
// until memory ran out) and without telling whether they exist.
func TestDetectFilesOutsideModelsDir(t *testing.T) {
	spec := DetectSpecIn(modelfiles.New(t.TempDir()))
	for _, raw := range []map[string]any{
		{"backend": "onnx", "model": "/dev/zero"},
		{"backend": "triton", "classes": "/etc/passwd"},
		{"backend": "haar", "cascade": "/etc/passwd"},
		{"backend": "haar", "cascade": "../../../../etc/passwd"},
	} {
		params, err := spec.Resolve(raw)
		if err != nil {
			t.Fatal(err)
		}
		if err := spec.Check(params); !errors.Is(err, processors.ErrBadParam) || !errors.Is(err, modelfiles.ErrNotAllowed) {
			t.Errorf("check %v: %v", raw, err)
		}
		p, err := spec.New(params)
		if !errors.Is(err, modelfiles.ErrNotAllowed) {
			t.Errorf("build %v: %v", raw, err)
		}
		if p != nil {
			p.Close()
		}
		if err != nil && strings.Contains(err.Error(), "root:") {
			t.Errorf("build %v: file content in %v", raw, err)
		}
	}
}
