package builtin

import (
	"context"
	"fmt"
	"image"
	"math"

	"gocv.io/x/gocv"

	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/processors/blazeface"
	"github.com/imageflowcanvas/imageflow/processors/modelfiles"
	"github.com/imageflowcanvas/imageflow/processors/yolo"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// DefaultCascade is the Haar face cascade Debian's opencv-data installs.
const DefaultCascade = "/usr/share/opencv4/haarcascades/haarcascade_frontalface_default.xml"

// DefaultBlazeFaceModel is the BlazeFace model the setup installs (into
// modelfiles.Installed); the blazeface backend reads it when model is empty.
const DefaultBlazeFaceModel = blazeface.DefaultModel

// Gate choices of the detect processor.
const (
	GateNone         = "none"
	GateOnlyIfMotion = "only_if_motion"
)

// Region choices of the detect processor: where in the picture it looks.
const (
	// RegionsFull runs the detector on the whole picture.
	RegionsFull = "full"
	// RegionsMotion runs it only inside the input detections labelled
	// region_label ("motion" regions), padded and merged.
	RegionsMotion = "motion"
)

// Sizing choices of regions=motion: how a region is scaled before detection.
const (
	// RegionSizingMinHeight enlarges a region shorter than region_min_height
	// to it and searches every pyramid level.
	RegionSizingMinHeight = "min_height"
	// RegionSizingMotion scales a region so that people as tall as its
	// motion fill the detector's window on the first pyramid level, and
	// searches only the levels up to the tallest such person.
	RegionSizingMotion = "motion_height"
)

// How tall a person is against the motion box around them, for
// region_sizing=motion_height: on vtest.avi (640x480 and 640x360, 5 fps,
// motion min_area 300) the HOG person box's height over its motion box's
// has its 10th and 90th percentile at 0.76 and 1.13 (5th and 95th: 0.7
// and 1.4). The band 0.8-1.2 with scale 1.15 searched a quarter of the
// pixels min_height 256 with scale 1.05 did and found as many people.
const (
	personMotionLo, personMotionHi = 0.8, 1.2
	// minSpanRatio: within one merged region, motion boxes shorter than
	// this fraction of the tallest are sized as if that tall.
	minSpanRatio = 0.75
)

// maxHOGLevels bounds the pyramid levels one region asks for (OpenCV's
// default bound).
const maxHOGLevels = 64

// hogPersonH is the height of the person inside HOG's 128 px window (the
// tight box's height at the window's own size).
const hogPersonH = hogWinH * 0.8

// maxRegionUpscale bounds how much region_min_height enlarges one region, so
// a speck of motion cannot cost more than a sizeable region.
const maxRegionUpscale = 4

// HOG's detection window: a region is grown to at least this size.
const hogWinW, hogWinH = 64, 128

// DetectSpec describes the detect processor reading files only from
// OpenCV's shipped cascades (no models directory); see DetectSpecIn.
func DetectSpec() processors.Spec { return DetectSpecIn(nil) }

// DetectSpecIn describes the detect processor: its own parameters followed
// by those of the YOLO backends (package yolo) it does not already have.
// Its model, classes and cascade files are read through files only.
func DetectSpecIn(files *modelfiles.Dir) processors.Spec {
	s := processors.Spec{
		Name: "detect",
		Description: "Object detection. backend=hog finds people (OpenCV HOG + linear SVM, label \"person\"), backend=haar finds faces with a Haar cascade (label \"face\"), " +
			"backend=blazeface finds faces with MediaPipe's BlazeFace neural network (label \"face\"; the model the setup installs, or another BlazeFace export named by model), " +
			"backend=onnx runs a YOLO ONNX model in-process (OpenCV DNN) and backend=triton the same on a Triton / KServe v2 server (labels are the class names). " +
			"Boxes are in pixels of the step's input; scores are in 0..1 for every backend. With gate=only_if_motion the step runs only when an input step reported motion=true. " +
			"With regions=motion (hog, haar) it looks only inside the input's motion regions, padded and merged, which costs a fraction of a full-frame pass; " +
			"keep_input_detections=false passes on only this step's boxes, not the motion regions it was given.",
		Params: []processors.ParamSpec{
			{Name: "backend", Type: processors.ParamEnum, Description: "Detector implementation.", Default: "hog", Choices: []string{"hog", "haar", "blazeface", "onnx", "triton"}},
			{Name: "gate", Type: processors.ParamEnum, Description: "only_if_motion skips detection (returning nothing, cheaply) unless an input step set motion=true.", Default: GateNone, Choices: []string{GateNone, GateOnlyIfMotion}},
			{Name: "label", Type: processors.ParamString, Description: "Label of every detection; empty means person for hog, face for haar and blazeface, the class name for onnx and triton.", Default: ""},
			{Name: "max_detections", Type: processors.ParamInt, Description: "At most this many detections per frame, best first.", Default: int64(100), Min: processors.Range(1), Max: processors.Range(maxBoxes)},
			{Name: "regions", Type: processors.ParamEnum, Description: "full runs the detector on the whole picture; motion (hog, haar) runs it only inside the input detections labelled region_label, and runs nothing when there are none.", Default: RegionsFull, Choices: []string{RegionsFull, RegionsMotion}},
			{Name: "region_label", Type: processors.ParamString, Description: "regions=motion: label of the input detections that are regions to search.", Default: "motion"},
			{Name: "region_padding", Type: processors.ParamFloat, Description: "regions=motion: margin added on every side of a region, as a fraction of its width and height; regions that then overlap are merged, and one smaller than the detector's window grows to it.", Default: 0.2, Min: processors.Range(0), Max: processors.Range(2)},
			{Name: "region_min_height", Type: processors.ParamInt, Description: "regions=motion: a padded region shorter than this is enlarged to this height (at most 4x) before detection, so people smaller than HOG's window (about 100 px tall) are found; 0 never enlarges.", Default: int64(0), Min: processors.Range(0), Max: processors.Range(4096)},
			{Name: "region_sizing", Type: processors.ParamEnum, Description: "regions=motion, hog: min_height enlarges regions shorter than region_min_height and searches every size from there down; motion_height ignores region_min_height: it scales each region so that people 0.8 to 1.2 times as tall as its motion boxes fill HOG's window and searches only those sizes (with scale 1.15 about a quarter of the cost of min_height 256 with scale 1.05 on vtest.avi, as many people found).", Default: RegionSizingMinHeight, Choices: []string{RegionSizingMinHeight, RegionSizingMotion}},
			{Name: "keep_input_detections", Type: processors.ParamBool, Description: "Pass the input steps' detections (such as motion regions) on beside this step's; false replaces them with this step's.", Default: true},
			// HOG.
			{Name: "win_stride", Type: processors.ParamInt, Description: "hog: step of the detection window in pixels; larger is faster and coarser.", Default: int64(8), Min: processors.Range(1), Max: processors.Range(64)},
			{Name: "padding", Type: processors.ParamInt, Description: "hog: padding around the picture in pixels.", Default: int64(8), Min: processors.Range(0), Max: processors.Range(64)},
			{Name: "scale", Type: processors.ParamFloat, Description: "hog: ratio between pyramid levels; larger is faster and misses more sizes.", Default: 1.05, Min: processors.Range(1.01), Max: processors.Range(2)},
			{Name: "hit_threshold", Type: processors.ParamFloat, Description: "hog: SVM margin a window needs to count as a hit.", Default: 0.0, Min: processors.Range(-10), Max: processors.Range(10)},
			{Name: "group_threshold", Type: processors.ParamInt, Description: "hog: hits that must overlap for a box to survive grouping (0 keeps raw windows).", Default: int64(2), Min: processors.Range(0), Max: processors.Range(20)},
			{Name: "min_score", Type: processors.ParamFloat, Description: "hog: smallest SVM margin kept (the detection's score is this margin squashed into 0..1 by the logistic function: 0.3 gives 0.57, 3 gives 0.95).", Default: 0.3, Min: processors.Range(-10), Max: processors.Range(10)},
			{Name: "nms_threshold", Type: processors.ParamFloat, Description: "hog, onnx, triton, and boxes from different regions with regions=motion: overlap (IoU) above which the weaker of two boxes is suppressed; blazeface: above which candidates are one face, averaged by score.", Default: 0.45, Min: processors.Range(0), Max: processors.Range(1)},
			{Name: "tight_boxes", Type: processors.ParamBool, Description: "hog: shrink each box to the person inside the detection window (OpenCV's peopledetect sample does the same), for neater boxes.", Default: false},
			// Haar.
			{Name: "cascade", Type: processors.ParamString, Description: "haar: cascade XML file, relative to models_dir, or one of OpenCV's shipped cascades by name (haarcascade_frontalface_default.xml) or path.", Default: DefaultCascade},
			{Name: "scale_factor", Type: processors.ParamFloat, Description: "haar: ratio between pyramid levels.", Default: 1.1, Min: processors.Range(1.01), Max: processors.Range(2)},
			{Name: "min_neighbors", Type: processors.ParamInt, Description: "haar: overlapping hits a face needs; more is stricter.", Default: int64(5), Min: processors.Range(0), Max: processors.Range(100)},
			{Name: "min_size", Type: processors.ParamInt, Description: "haar: smallest face side in pixels.", Default: int64(24), Min: processors.Range(1), Max: processors.Range(4096)},
			// BlazeFace.
			{Name: "face_threshold", Type: processors.ParamFloat, Description: "blazeface: smallest score (0..1) a face needs.", Default: 0.5, Min: processors.Range(0), Max: processors.Range(1)},
		},
		Outputs: []string{"detections"},
		New:     func(p processors.Params) (processors.Processor, error) { return newDetect(p, files) },
		Check:   func(p processors.Params) error { return checkDetectFiles(p, files) },
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
	backend   string
	gated     bool
	label     string
	max       int
	keepInput bool
	inner     processors.Processor // onnx or triton backend
	blaze     *blazeFaceStep
	hog       *hogDetector
	hogP      hogParams
	tight     bool
	cascade   *cascadeDetector
	scaleF    float64
	minNb     int
	minSize   int
	gray      gocv.Mat
	out       *processors.Output // target of the detector callbacks, set per call

	// regions=motion.
	regions     bool
	regionLabel string
	regionPad   float64
	regionMinH  int
	bySize      bool // region_sizing=motion_height
	nms         float32
	winW, winH  int               // the detector's window: the smallest region searched
	rois        []image.Rectangle // this frame's merged regions, reused
	roiSizes    []motionSpan      // the motion heights inside each of rois
	enlarged    gocv.Mat          // grows to the largest enlarged region, reused
	// Callback mapping from the searched picture to the step's input.
	offX, offY int
	inv        float64
	limit      int
	bounds     image.Rectangle
}

// checkDetectFiles checks, when a pipeline is saved, that the files the
// chosen backend reads are allowed, so a bad name is refused then, not
// when the pipeline first runs.
func checkDetectFiles(p processors.Params, files *modelfiles.Dir) error {
	switch p.String("backend") {
	case "haar":
		if err := files.Check(p.String("cascade"), modelfiles.MaxCascadeBytes); err != nil {
			return fmt.Errorf("%w \"cascade\": %w", processors.ErrBadParam, err)
		}
	case "blazeface":
		if err := files.Check(blazeFaceModel(p), modelfiles.MaxModelBytes); err != nil {
			return fmt.Errorf("%w \"model\": %w", processors.ErrBadParam, err)
		}
	case "onnx":
		if err := files.Check(p.String("model"), modelfiles.MaxModelBytes); err != nil {
			return fmt.Errorf("%w \"model\": %w", processors.ErrBadParam, err)
		}
		fallthrough
	case "triton":
		if _, err := yolo.ParseClasses(p.String("classes"), files); err != nil {
			return fmt.Errorf("%w \"classes\": %w", processors.ErrBadParam, err)
		}
	}
	return nil
}

// NewDetect builds a detect processor from validated parameters, with no
// models directory; see DetectSpecIn.
func NewDetect(p processors.Params) (processors.Processor, error) { return newDetect(p, nil) }

// newDetect loads the HOG SVM or the cascade now so a bad file fails at
// compile time, not per frame.
func newDetect(p processors.Params, files *modelfiles.Dir) (processors.Processor, error) {
	d := &Detect{
		backend:     p.String("backend"),
		gated:       p.String("gate") == GateOnlyIfMotion,
		label:       p.String("label"),
		max:         p.Int("max_detections"),
		keepInput:   p.Bool("keep_input_detections"),
		tight:       p.Bool("tight_boxes"),
		regions:     p.String("regions") == RegionsMotion,
		regionLabel: p.String("region_label"),
		regionPad:   p.Float("region_padding"),
		regionMinH:  p.Int("region_min_height"),
		bySize:      p.String("region_sizing") == RegionSizingMotion,
		nms:         float32(p.Float("nms_threshold")),
		gray:        gocv.NewMat(),
		enlarged:    gocv.NewMat(),
		inv:         1,
	}
	// Params built by hand (not through Spec.Resolve) may lack the newer
	// keys; the zero values must mean what the defaults mean.
	if _, ok := p["keep_input_detections"]; !ok {
		d.keepInput = true
	}
	if d.regionLabel == "" {
		d.regionLabel = "motion"
	}
	d.limit = d.max
	if d.regions {
		// Cross-region NMS picks the best max_detections afterwards.
		d.limit = maxBoxes
	}
	switch d.backend {
	case "hog":
		if d.label == "" {
			d.label = "person"
		}
		d.winW, d.winH = hogWinW, hogWinH
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
		if d.bySize {
			// The person-to-motion ratio holds for walking people, not faces.
			d.Close()
			return nil, fmt.Errorf("%w: region_sizing=%s works with backend hog only", ErrConfig, RegionSizingMotion)
		}
		d.scaleF, d.minNb, d.minSize = p.Float("scale_factor"), p.Int("min_neighbors"), p.Int("min_size")
		d.winW, d.winH = d.minSize, d.minSize
		name := p.String("cascade")
		xml, err := files.ReadFile(name, modelfiles.MaxCascadeBytes)
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("%w: haar cascade: %w", ErrConfig, err)
		}
		c, err := newCascadeDetector(name, xml)
		if err != nil {
			d.Close()
			return nil, err
		}
		d.cascade = c
	case "blazeface":
		if d.label == "" {
			d.label = "face"
		}
		if d.regions {
			// One letterboxed pass over the frame costs what one region's
			// would: regions would only add passes.
			d.Close()
			return nil, fmt.Errorf("%w: regions=%s works with backend hog or haar, not %s", ErrConfig, RegionsMotion, d.backend)
		}
		b, err := newBlazeFaceStep(p, files)
		if err != nil {
			d.Close()
			return nil, err
		}
		d.blaze = b
	case "onnx", "triton":
		if d.regions {
			// The YOLO backends letterbox to a fixed input: one pass per
			// region would cost more than one pass over the frame.
			d.Close()
			return nil, fmt.Errorf("%w: regions=%s works with backend hog or haar, not %s", ErrConfig, RegionsMotion, d.backend)
		}
		newBackend := yolo.NewONNX
		if d.backend == "triton" {
			newBackend = yolo.NewTriton
		}
		inner, err := newBackend(p, files)
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
	// Set before any early return: a gated-off frame must not let the
	// motion regions through either.
	out.ReplaceDetections = !d.keepInput
	if d.gated && in.Values["motion"] != "true" {
		return nil
	}
	if err := checkBGR(in.Image); err != nil {
		return err
	}
	if d.regions {
		return d.processRegions(in, out)
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
	case "blazeface":
		return d.blaze.process(in.Image, d.label, d.max, out)
	case "hog":
		if in.Image.Cols() < hogWinW || in.Image.Rows() < hogWinH {
			// Smaller than one detection window: nobody can be found.
			return nil
		}
		// OpenCV's HOG computes its gradient on every channel and keeps
		// the strongest: on gray that work is a third, and as many people
		// are found.
		gocv.CvtColor(in.Image, &d.gray, gocv.ColorBGRToGray)
		d.out = out
		err := d.hog.detect(&d.gray, d.hogP, d.addHOG)
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

// processRegions runs the detector on each merged motion region (a Region
// of the picture: no copy unless it is enlarged), maps the boxes back to the
// picture and suppresses duplicates across regions.
func (d *Detect) processRegions(in *processors.Input, out *processors.Output) error {
	W, H := in.Image.Cols(), in.Image.Rows()
	if W < d.winW || H < d.winH {
		return nil
	}
	if d.bySize {
		// Padded and merged only: each region grows to the window once its
		// scale is known (detectRegionBySize).
		d.rois = mergeRegions(d.rois[:0], in.Detections, d.regionLabel, d.regionPad, sizedMergeOverlap, 1, 1, W, H)
	} else {
		d.rois = mergeRegions(d.rois[:0], in.Detections, d.regionLabel, d.regionPad, 0, d.winW, d.winH, W, H)
	}
	if len(d.rois) == 0 {
		return nil
	}
	// Both detectors work on gray pictures (for HOG a third of the
	// gradient work, see Process), converted once for the whole frame.
	gocv.CvtColor(in.Image, &d.gray, gocv.ColorBGRToGray)
	if d.backend == "haar" {
		// Equalised once for the whole frame, as in full mode, so a face
		// scores the same whichever region it falls in.
		gocv.EqualizeHist(d.gray, &d.gray)
	}
	src := &d.gray
	if d.bySize {
		d.roiSizes = motionSpans(d.roiSizes[:0], d.rois, in.Detections, d.regionLabel)
	}
	first := len(out.Detections)
	d.out, d.bounds = out, image.Rect(0, 0, W, H)
	defer func() { d.out, d.offX, d.offY, d.inv = nil, 0, 0, 1 }()
	for i, r := range d.rois {
		var err error
		if d.bySize {
			err = d.detectRegionBySize(src, r, d.roiSizes[i])
		} else {
			err = d.detectRegion(src, r)
		}
		if err != nil {
			return err
		}
	}
	found := out.Detections[first:]
	sortByScore(found)
	keep := nmsInPlace(found, d.nms)
	if keep > d.max {
		keep = d.max
	}
	clear(found[keep:]) // let the dropped detections go
	out.Detections = out.Detections[:first+keep]
	return nil
}

// detectRegion runs the detector on r of src, enlarged to region_min_height
// when it is shorter.
func (d *Detect) detectRegion(src *gocv.Mat, r image.Rectangle) error {
	roi := src.Region(r)
	defer roi.Close()
	img := roi
	d.offX, d.offY, d.inv = r.Min.X, r.Min.Y, 1
	if d.regionMinH > r.Dy() {
		s := min(float64(d.regionMinH)/float64(r.Dy()), maxRegionUpscale)
		w, h := int(float64(r.Dx())*s+0.5), int(float64(r.Dy())*s+0.5)
		// One buffer as large as the largest enlarged region so far; each
		// region is resized into its top-left corner. The detectors treat a
		// Region as a picture of its own (no pixels read beyond it), so the
		// rest of the buffer does not matter.
		if d.enlarged.Cols() < w || d.enlarged.Rows() < h || d.enlarged.Type() != src.Type() {
			nw, nh := max(w, d.enlarged.Cols()), max(h, d.enlarged.Rows())
			d.enlarged.Close()
			d.enlarged = gocv.NewMatWithSize(nh, nw, src.Type())
		}
		dst := d.enlarged.Region(image.Rect(0, 0, w, h))
		defer dst.Close()
		gocv.Resize(roi, &dst, image.Pt(w, h), 0, 0, gocv.InterpolationLinear)
		img = dst
		d.inv = float64(r.Dx()) / float64(w)
	}
	switch d.backend {
	case "hog":
		return d.hog.detect(&img, d.hogP, d.addHOG)
	case "haar":
		return d.cascade.detect(&img, d.scaleF, d.minNb, d.minSize, maxBoxes, d.addHaar)
	}
	return nil
}

// motionSpan is the range of motion box heights inside one region.
type motionSpan struct{ lo, hi float64 }

// motionSpans appends to dst, for each region, the smallest and largest
// height of the motion boxes (labelled label) centred in it; a region holds
// the centre of at least one of the boxes it was made from.
func motionSpans(dst []motionSpan, rois []image.Rectangle, dets []*busv1.Detection, label string) []motionSpan {
	for _, r := range rois {
		span := motionSpan{lo: math.Inf(1)}
		for _, det := range dets {
			if det == nil || det.Label != label || !(det.H > 0) || !(det.W > 0) {
				continue
			}
			if cx, cy := float64(det.X+det.W/2), float64(det.Y+det.H/2); math.IsNaN(cx+cy) || math.IsInf(cx+cy, 0) {
				continue
			}
			c := image.Pt(int(det.X+det.W/2), int(det.Y+det.H/2))
			if c.In(r) {
				span.lo, span.hi = min(span.lo, float64(det.H)), max(span.hi, float64(det.H))
			}
		}
		// A fragment of a mover (a leg, a head) is not a short person:
		// sizing a merged region by it would enlarge the whole region.
		span.lo = max(span.lo, span.hi*minSpanRatio)
		if span.hi == 0 {
			// No centre inside (a box clipped by the border): size by the region.
			span = motionSpan{lo: float64(r.Dy()), hi: float64(r.Dy())}
		}
		dst = append(dst, span)
	}
	return dst
}

// detectRegionBySize runs HOG on r of src (padded, merged motion boxes not
// yet grown to the window) scaled so that a person personMotionLo times as
// tall as the region's shortest motion box fills the window on the first
// pyramid level, searching the levels up to a person personMotionHi times
// its tallest motion box. Scaling first and growing to the window after
// keeps the searched picture small: a small mover costs a window or two,
// not a window-sized region enlarged.
func (d *Detect) detectRegionBySize(src *gocv.Mat, r image.Rectangle, span motionSpan) error {
	p := d.hogP
	r, w, h, levels := sizeRegion(r, span, d.bounds, d.winW, d.winH, p.scale)
	if r.Empty() {
		return nil
	}
	p.levels = levels
	roi := src.Region(r)
	defer roi.Close()
	img := roi
	if w != r.Dx() || h != r.Dy() {
		if d.enlarged.Cols() < w || d.enlarged.Rows() < h || d.enlarged.Type() != src.Type() {
			nw, nh := max(w, d.enlarged.Cols()), max(h, d.enlarged.Rows())
			d.enlarged.Close()
			d.enlarged = gocv.NewMatWithSize(nh, nw, src.Type())
		}
		dst := d.enlarged.Region(image.Rect(0, 0, w, h))
		defer dst.Close()
		interp := gocv.InterpolationLinear
		if w < r.Dx() {
			interp = gocv.InterpolationArea
		}
		gocv.Resize(roi, &dst, image.Pt(w, h), 0, 0, interp)
		img = dst
	}
	d.offX, d.offY, d.inv = r.Min.X, r.Min.Y, float64(r.Dx())/float64(w)
	return d.hog.detect(&img, p, d.addHOG)
}

// sizeRegion is the geometry of detectRegionBySize: r grown to the winW x
// winH window at the scale that fits span's people to it and kept inside
// bounds (empty when nothing fits), the w x h it is scaled to, and the
// pyramid levels (ratio scale) that reach its tallest person.
func sizeRegion(r image.Rectangle, span motionSpan, bounds image.Rectangle, winW, winH int, scale float64) (image.Rectangle, int, int, int) {
	s := min(hogPersonH/max(span.lo*personMotionLo, 1), maxRegionUpscale)
	// Grow to the window (at this scale) and to its aspect ratio, then keep
	// inside the picture; a picture too small for that raises the scale.
	minW := max(float64(winW)/s, float64(r.Dy())*float64(winW)/float64(winH))
	r = fitInside(growTo(r, int(math.Ceil(minW)), int(math.Ceil(float64(winH)/s))), bounds)
	if r.Empty() {
		return r, 0, 0, 0
	}
	s = max(s, float64(winW)/float64(r.Dx()), float64(winH)/float64(r.Dy()))
	w, h := max(int(float64(r.Dx())*s+0.5), winW), max(int(float64(r.Dy())*s+0.5), winH)
	// Level k finds people hogPersonH*scale^k tall in the scaled region.
	tallest := span.hi * personMotionHi * float64(w) / float64(r.Dx())
	levels := 1
	if tallest > hogPersonH && scale > 1 {
		// HOG stops at the window's size anyway; the bound keeps the
		// conversion defined.
		levels += int(min(math.Ceil(math.Log(tallest/hogPersonH)/math.Log(scale)), maxHOGLevels))
	}
	return r, w, h, levels
}

// sizedMergeOverlap is how much of the smaller of two padded regions their
// overlap must cover for region_sizing=motion_height to merge them. Two
// walkers whose padded boxes only touch would make one region: its empty
// corners searched, and all of it scaled up for the shorter walker and
// searched up to the taller. Searched apart, where one holds a fragment
// of the other's motion the overlap is large and they still merge. On
// vtest.avi's walkers at 640x360 HOG searched 17 % fewer pixels and took
// 7.0-9.5 against 12.2-13.4 ms of CPU a frame (640x480: 7.4-7.9 against
// 10.4-10.6), finding 718 against 727 people, 499 against 512 of the 654
// the min_height reference found (640x480: 785 against 786, 616 against
// 630 of 802), with people in as many frames
// (TestDetectRegionsByMotionHeight, TestSizedRegionsSearchFewerPixels).
const sizedMergeOverlap = 0.25

// mergeRegions appends to dst the regions to search: each input detection
// labelled label, padded by pad of its size on every side, grown to at least
// the detector's window (and, for a tall window, to its aspect ratio, so a
// person-shaped region holds a person-shaped window), clamped to the W x H
// picture; regions whose overlap covers at least minOverlap of the smaller
// one's area (any overlap when 0) are merged into their bounding box until
// no two do. A person in the overlap of two regions is found in both;
// the cross-region NMS keeps one.
func mergeRegions(dst []image.Rectangle, dets []*busv1.Detection, label string, pad, minOverlap float64, winW, winH, W, H int) []image.Rectangle {
	bounds := image.Rect(0, 0, W, H)
	for _, det := range dets {
		if det == nil || det.Label != label || !(det.W > 0) || !(det.H > 0) {
			continue
		}
		x0 := float64(det.X) - pad*float64(det.W)
		y0 := float64(det.Y) - pad*float64(det.H)
		x1 := float64(det.X+det.W) + pad*float64(det.W)
		y1 := float64(det.Y+det.H) + pad*float64(det.H)
		if math.IsNaN(x0+y0+x1+y1) || math.IsInf(x0+y0+x1+y1, 0) {
			continue
		}
		r := image.Rect(int(math.Floor(max(x0, -1))), int(math.Floor(max(y0, -1))),
			int(math.Ceil(min(x1, float64(W)+1))), int(math.Ceil(min(y1, float64(H)+1))))
		if minW := r.Dy() * winW / winH; winH > winW && r.Dx() < minW {
			r = growTo(r, minW, r.Dy())
		}
		r = fitInside(growTo(r, max(r.Dx(), winW), max(r.Dy(), winH)), bounds)
		if r.Empty() {
			continue
		}
		dst = append(dst, r)
	}
	// Merge until stable: a union can newly overlap a region already passed.
	for merged := true; merged; {
		merged = false
		for i := 0; i < len(dst); i++ {
			for j := i + 1; j < len(dst); j++ {
				if overlapsBy(dst[i], dst[j], minOverlap) {
					dst[i] = dst[i].Union(dst[j])
					dst[j] = dst[len(dst)-1]
					dst = dst[:len(dst)-1]
					j--
					merged = true
				}
			}
		}
	}
	return dst
}

// overlapsBy reports whether a and b overlap over at least frac of the
// smaller one's area (at all when frac is 0).
func overlapsBy(a, b image.Rectangle, frac float64) bool {
	if !a.Overlaps(b) {
		return false
	}
	in := a.Intersect(b)
	smaller := min(a.Dx()*a.Dy(), b.Dx()*b.Dy())
	return float64(in.Dx()*in.Dy()) >= frac*float64(smaller)
}

// growTo widens and heightens r around its centre to at least w x h.
func growTo(r image.Rectangle, w, h int) image.Rectangle {
	if dw := w - r.Dx(); dw > 0 {
		r.Min.X -= dw / 2
		r.Max.X = r.Min.X + w
	}
	if dh := h - r.Dy(); dh > 0 {
		r.Min.Y -= dh / 2
		r.Max.Y = r.Min.Y + h
	}
	return r
}

// fitInside shifts r into b where it fits and clips it where it does not, so
// a region grown past the border keeps its size when the picture allows.
func fitInside(r, b image.Rectangle) image.Rectangle {
	if r.Min.X < b.Min.X {
		r = r.Add(image.Pt(b.Min.X-r.Min.X, 0))
	}
	if r.Max.X > b.Max.X {
		r = r.Add(image.Pt(b.Max.X-r.Max.X, 0))
	}
	if r.Min.Y < b.Min.Y {
		r = r.Add(image.Pt(0, b.Min.Y-r.Min.Y))
	}
	if r.Max.Y > b.Max.Y {
		r = r.Add(image.Pt(0, b.Max.Y-r.Max.Y))
	}
	return r.Intersect(b)
}

// sortByScore orders detections best first (insertion sort: few boxes, no
// allocation, stable).
func sortByScore(ds []*busv1.Detection) {
	for i := 1; i < len(ds); i++ {
		for j := i; j > 0 && ds[j].Score > ds[j-1].Score; j-- {
			ds[j], ds[j-1] = ds[j-1], ds[j]
		}
	}
}

// nmsInPlace keeps, best first, each box of ds (sorted best first) that
// overlaps no kept box by more than thr IoU, moves the kept ones to the
// front and returns how many there are.
func nmsInPlace(ds []*busv1.Detection, thr float32) int {
	n := 0
	for _, d := range ds {
		ok := true
		for _, k := range ds[:n] {
			if processors.IoU(d.X, d.Y, d.W, d.H, k.X, k.Y, k.W, k.H) > thr {
				ok = false
				break
			}
		}
		if ok {
			ds[n] = d
			n++
		}
	}
	return n
}

// addHOG is a method value bound once per call, so the callback allocates no
// closure per frame.
func (d *Detect) addHOG(x, y, w, h int, score float32) {
	if len(d.out.Detections) >= d.limit {
		return
	}
	if d.tight {
		// The people SVM's 64x128 window holds the person with a margin;
		// these are the factors of OpenCV's samples/cpp/peopledetect.cpp.
		x += int(math.Round(float64(w) * 0.1))
		y += int(math.Round(float64(h) * 0.07))
		w = int(math.Round(float64(w) * 0.8))
		h = int(math.Round(float64(h) * 0.8))
	}
	// The SVM margin is unbounded (people score 0.3 to 4); every other
	// backend scores in 0..1 and viewers print scores as percentages, so
	// squash it monotonically (NMS order and min_score are unaffected).
	d.add(x, y, w, h, float32(1/(1+math.Exp(-float64(score)))))
}

// addHaar turns a cascade hit into a detection. A cascade has no confidence;
// the score n/(n+5) of the n raw hits that back the box ranks well-supported
// faces higher, in 0..1.
func (d *Detect) addHaar(x, y, w, h, n int) {
	d.add(x, y, w, h, float32(n)/float32(n+5))
}

// add maps a box from the searched picture (a region, maybe enlarged) to the
// step's input and appends it.
func (d *Detect) add(x, y, w, h int, score float32) {
	if !d.regions {
		d.out.Detections = append(d.out.Detections, newDetection(x, y, w, h, d.label, score))
		return
	}
	s := d.inv
	r := image.Rect(d.offX+int(math.Round(float64(x)*s)), d.offY+int(math.Round(float64(y)*s)),
		d.offX+int(math.Round(float64(x+w)*s)), d.offY+int(math.Round(float64(y+h)*s))).Intersect(d.bounds)
	if r.Empty() {
		return
	}
	d.out.Detections = append(d.out.Detections, newDetection(r.Min.X, r.Min.Y, r.Dx(), r.Dy(), d.label, score))
}

// Close frees the detector.
func (d *Detect) Close() error {
	if d.inner != nil {
		d.inner.Close()
		d.inner = nil
	}
	if d.blaze != nil {
		d.blaze.close()
		d.blaze = nil
	}
	if d.hog != nil {
		d.hog.close()
		d.hog = nil
	}
	if d.cascade != nil {
		d.cascade.close()
		d.cascade = nil
	}
	closeMats(&d.gray, &d.enlarged)
	return nil
}
