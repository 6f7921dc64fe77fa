// Package builtin holds the processors that ship inside the binary: resize,
// filter, motion, detect (HOG people, Haar and BlazeFace faces, YOLO through
// ONNX or Triton) and overlay, all on gocv.
//
// Every processor keeps the Mats it needs between frames and writes its
// picture into the Mat the engine hands it in Output.Image, so a steady
// stream of same-sized frames allocates no pixel buffers.
package builtin

import (
	"errors"
	"fmt"

	"gocv.io/x/gocv"

	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/processors/modelfiles"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// Errors of the built-in processors.
var (
	// ErrBadImage is returned for an input picture a processor cannot use
	// (empty, or not 8-bit BGR).
	ErrBadImage = errors.New("bad input image")
	// ErrConfig is returned by a factory for a combination of parameters that
	// each pass validation but do not work together.
	ErrConfig = errors.New("bad processor configuration")
)

// Register adds every built-in processor to r. Without WithModels, detect
// reads no models and only OpenCV's shipped cascades.
func Register(r *processors.Registry, opts ...Option) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	r.Register(ResizeSpec())
	r.Register(FilterSpec())
	r.Register(MotionSpec())
	r.Register(DetectSpecIn(o.files))
	r.Register(OverlaySpec())
}

// Option tunes Register.
type Option func(*options)

type options struct{ files *modelfiles.Dir }

// WithModels makes detect read its model, classes and cascade files
// through files (see package modelfiles).
func WithModels(files *modelfiles.Dir) Option { return func(o *options) { o.files = files } }

// checkBGR rejects pictures the processors cannot work on; a clear error is
// better than an OpenCV assertion aborting the process.
func checkBGR(m gocv.Mat) error {
	if m.Ptr() == nil || m.Empty() {
		return fmt.Errorf("%w: empty", ErrBadImage)
	}
	if m.Type() != gocv.MatTypeCV8UC3 {
		return fmt.Errorf("%w: type %v, want 8-bit BGR", ErrBadImage, m.Type())
	}
	return nil
}

// setValue sets a value on an output whose map the caller may not have made.
func setValue(out *processors.Output, k, v string) {
	if out.Values == nil {
		out.Values = make(map[string]string, 2)
	}
	out.Values[k] = v
}

// newDetection returns a detection in pixels of the processor's input.
func newDetection(x, y, w, h int, label string, score float32) *busv1.Detection {
	return &busv1.Detection{X: float32(x), Y: float32(y), W: float32(w), H: float32(h), Label: label, Score: score}
}

func closeMats(ms ...*gocv.Mat) {
	for _, m := range ms {
		if m.Ptr() != nil {
			m.Close()
		}
	}
}
