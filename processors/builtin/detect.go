package builtin

import (
	"context"
	"fmt"
	"os"

	"gocv.io/x/gocv"

	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/processors/yolo"
)

// DefaultCascade is the Haar face cascade Debian's opencv-data installs.
const DefaultCascade = "/usr/share/opencv4/haarcascades/haarcascade_frontalface_default.xml"

// Gate choices of the detect processor.
const (
	GateNone         = "none"
	GateOnlyIfMotion = "only_if_motion"
)

// DetectSpec describes the detect processor: its own parameters followed by
// those of the YOLO backends (package yolo) it does not already have.
func DetectSpec() processors.Spec {
	s := processors.Spec{
		Name: "detect",
		Description: "Object detection. backend=hog finds people (OpenCV HOG + linear SVM, label \"person\"), backend=haar finds faces with a Haar cascade (label \"face\"), " +
			"backend=onnx runs a YOLO ONNX model in-process (OpenCV DNN) and backend=triton the same on a Triton / KServe v2 server (labels are the class names). " +
			"Boxes are in pixels of the step's input. With gate=only_if_motion the step runs only when an input step reported motion=true.",
		Params: []processors.ParamSpec{
			{Name: "backend", Type: processors.ParamEnum, Description: "Detector implementation.", Default: "hog", Choices: []string{"hog", "haar", "onnx", "triton"}},
			{Name: "gate", Type: processors.ParamEnum, Description: "only_if_motion skips detection (returning nothing, cheaply) unless an input step set motion=true.", Default: GateNone, Choices: []string{GateNone, GateOnlyIfMotion}},
			{Name: "label", Type: processors.ParamString, Description: "Label of every detection; empty means person for hog, face for haar, the class name for onnx and triton.", Default: ""},
			{Name: "max_detections", Type: processors.ParamInt, Description: "At most this many detections per frame, best first.", Default: int64(100), Min: processors.Range(1), Max: processors.Range(maxBoxes)},
			// HOG.
			{Name: "win_stride", Type: processors.ParamInt, Description: "hog: step of the detection window in pixels; larger is faster and coarser.", Default: int64(8), Min: processors.Range(1), Max: processors.Range(64)},
			{Name: "padding", Type: processors.ParamInt, Description: "hog: padding around the picture in pixels.", Default: int64(8), Min: processors.Range(0), Max: processors.Range(64)},
			{Name: "scale", Type: processors.ParamFloat, Description: "hog: ratio between pyramid levels; larger is faster and misses more sizes.", Default: 1.05, Min: processors.Range(1.01), Max: processors.Range(2)},
			{Name: "hit_threshold", Type: processors.ParamFloat, Description: "hog: SVM margin a window needs to count as a hit.", Default: 0.0, Min: processors.Range(-10), Max: processors.Range(10)},
			{Name: "group_threshold", Type: processors.ParamInt, Description: "hog: hits that must overlap for a box to survive grouping (0 keeps raw windows).", Default: int64(2), Min: processors.Range(0), Max: processors.Range(20)},
			{Name: "min_score", Type: processors.ParamFloat, Description: "hog: smallest SVM score (the detection's score) kept.", Default: 0.3, Min: processors.Range(-10), Max: processors.Range(10)},
			{Name: "nms_threshold", Type: processors.ParamFloat, Description: "hog, onnx, triton: overlap (IoU) above which the weaker of two boxes is suppressed.", Default: 0.45, Min: processors.Range(0), Max: processors.Range(1)},
			// Haar.
			{Name: "cascade", Type: processors.ParamString, Description: "haar: path of the cascade XML file.", Default: DefaultCascade},
			{Name: "scale_factor", Type: processors.ParamFloat, Description: "haar: ratio between pyramid levels.", Default: 1.1, Min: processors.Range(1.01), Max: processors.Range(2)},
			{Name: "min_neighbors", Type: processors.ParamInt, Description: "haar: overlapping hits a face needs; more is stricter.", Default: int64(5), Min: processors.Range(0), Max: processors.Range(100)},
			{Name: "min_size", Type: processors.ParamInt, Description: "haar: smallest face side in pixels.", Default: int64(24), Min: processors.Range(1), Max: processors.Range(4096)},
		},
		Outputs: []string{"detections"},
		New:     NewDetect,
	}
	have := make(map[string]bool, len(s.Params))
	for _, p := range s.Params {
		have[p.Name] = true
	}
	for _, p := range yolo.ParamSpecs() {
		if !have[p.Name] {
			s.Params = append(s.Params, p)
		}
	}
	return s
}

// Detect finds people or faces; see DetectSpec.
type Detect struct {
	backend string
	gated   bool
	label   string
	max     int
	inner   processors.Processor // onnx or triton backend
	hog     *hogDetector
	hogP    hogParams
	cascade *cascadeDetector
	scaleF  float64
	minNb   int
	minSize int
	gray    gocv.Mat
	out     *processors.Output // target of the HOG callback, set per call
}

// NewDetect builds a detect processor from validated parameters; it loads the
// HOG SVM or the cascade now so a bad path fails at compile time, not per frame.
func NewDetect(p processors.Params) (processors.Processor, error) {
	d := &Detect{
		backend: p.String("backend"),
		gated:   p.String("gate") == GateOnlyIfMotion,
		label:   p.String("label"),
		max:     p.Int("max_detections"),
		gray:    gocv.NewMat(),
	}
	switch d.backend {
	case "hog":
		if d.label == "" {
			d.label = "person"
		}
		d.hogP = hogParams{
			hitThreshold:   p.Float("hit_threshold"),
			winStride:      p.Int("win_stride"),
			padding:        p.Int("padding"),
			scale:          p.Float("scale"),
			groupThreshold: p.Int("group_threshold"),
			minScore:       float32(p.Float("min_score")),
			nmsThreshold:   float32(p.Float("nms_threshold")),
		}
		h, err := newHOGDetector()
		if err != nil {
			d.Close()
			return nil, err
		}
		d.hog = h
	case "haar":
		if d.label == "" {
			d.label = "face"
		}
		d.scaleF, d.minNb, d.minSize = p.Float("scale_factor"), p.Int("min_neighbors"), p.Int("min_size")
		path := p.String("cascade")
		// A missing file would only give "cannot load"; stat first for the
		// operating system's reason.
		if _, err := os.Stat(path); err != nil {
			d.Close()
			return nil, fmt.Errorf("%w: haar cascade: %v", ErrConfig, err)
		}
		c, err := newCascadeDetector(path)
		if err != nil {
			d.Close()
			return nil, err
		}
		d.cascade = c
	case "onnx", "triton":
		newBackend := yolo.NewONNX
		if d.backend == "triton" {
			newBackend = yolo.NewTriton
		}
		inner, err := newBackend(p)
		if err != nil {
			d.Close()
			return nil, err
		}
		d.inner = inner
	default:
		d.Close()
		return nil, fmt.Errorf("%w: unknown detect backend %q", ErrConfig, d.backend)
	}
	return d, nil
}

// Process appends detections in in.Image's pixels to out.
func (d *Detect) Process(ctx context.Context, in *processors.Input, out *processors.Output) error {
	if d.gated && in.Values["motion"] != "true" {
		return nil
	}
	if err := checkBGR(in.Image); err != nil {
		return err
	}
	switch d.backend {
	case "onnx", "triton":
		first := len(out.Detections)
		if err := d.inner.Process(ctx, in, out); err != nil {
			return err
		}
		if len(out.Detections)-first > d.max {
			out.Detections = out.Detections[:first+d.max]
		}
		if d.label != "" {
			for _, det := range out.Detections[first:] {
				det.Label = d.label
			}
		}
	case "hog":
		if in.Image.Cols() < 64 || in.Image.Rows() < 128 {
			// Smaller than one detection window: nobody can be found.
			return nil
		}
		d.out = out
		err := d.hog.detect(&in.Image, d.hogP, d.addHOG)
		d.out = nil
		return err
	case "haar":
		gocv.CvtColor(in.Image, &d.gray, gocv.ColorBGRToGray)
		gocv.EqualizeHist(d.gray, &d.gray)
		d.out = out
		err := d.cascade.detect(&d.gray, d.scaleF, d.minNb, d.minSize, d.max, d.addHaar)
		d.out = nil
		return err
	}
	return nil
}

// addHOG is a method value bound once per call, so the callback allocates no
// closure per frame.
func (d *Detect) addHOG(x, y, w, h int, score float32) {
	if len(d.out.Detections) >= d.max {
		return
	}
	d.out.Detections = append(d.out.Detections, newDetection(x, y, w, h, d.label, score))
}

// addHaar turns a cascade hit into a detection. A cascade has no confidence;
// the score n/(n+5) of the n raw hits that back the box ranks well-supported
// faces higher, in 0..1.
func (d *Detect) addHaar(x, y, w, h, n int) {
	d.out.Detections = append(d.out.Detections, newDetection(x, y, w, h, d.label, float32(n)/float32(n+5)))
}

// Close frees the detector.
func (d *Detect) Close() error {
	if d.inner != nil {
		d.inner.Close()
		d.inner = nil
	}
	if d.hog != nil {
		d.hog.close()
		d.hog = nil
	}
	if d.cascade != nil {
		d.cascade.close()
		d.cascade = nil
	}
	closeMats(&d.gray)
	return nil
}
