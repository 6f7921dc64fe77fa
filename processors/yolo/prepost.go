package yolo

import (
	"fmt"
	"image"
	"math"
	"sort"
	"strconv"

	"gocv.io/x/gocv"

	"github.com/imageflowcanvas/imageflow/processors"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// padValue is the grey YOLO training pipelines pad letterboxed images with.
const padValue = 114

// Letterbox records how an image was fitted into the square model input, so
// boxes can be mapped back: input = image*Scale + (PadX, PadY).
type Letterbox struct {
	// Size is the model input side in pixels.
	Size int
	// Width and Height are the original image's.
	Width, Height int
	Scale         float32
	PadX, PadY    int
}

// ToImage maps a box given as centre and size in model-input pixels to a
// top-left box in image pixels, clipped to the image.
func (lb Letterbox) ToImage(cx, cy, w, h float32) (x, y, bw, bh float32) {
	x1 := (cx - w/2 - float32(lb.PadX)) / lb.Scale
	y1 := (cy - h/2 - float32(lb.PadY)) / lb.Scale
	x2 := (cx + w/2 - float32(lb.PadX)) / lb.Scale
	y2 := (cy + h/2 - float32(lb.PadY)) / lb.Scale
	x1 = clamp(x1, 0, float32(lb.Width))
	y1 = clamp(y1, 0, float32(lb.Height))
	x2 = clamp(x2, 0, float32(lb.Width))
	y2 = clamp(y2, 0, float32(lb.Height))
	return x1, y1, x2 - x1, y2 - y1
}

func clamp(v, lo, hi float32) float32 {
	if v < lo {
		return lo
	}
	if v > hi {
		return hi
	}
	return v
}

// NewLetterbox computes the fit of a width x height image into size x size:
// uniform scale, centred, the rest padded.
func NewLetterbox(width, height, size int) Letterbox {
	s := math.Min(float64(size)/float64(width), float64(size)/float64(height))
	nw := int(math.Round(float64(width) * s))
	nh := int(math.Round(float64(height) * s))
	return Letterbox{Size: size, Width: width, Height: height, Scale: float32(s),
		PadX: (size - nw) / 2, PadY: (size - nh) / 2}
}

// Preprocessor letterboxes images into a model input, keeping its scratch
// picture between calls so a steady stream of frames allocates nothing.
// The zero value is ready to use; Close frees it.
type Preprocessor struct {
	resized gocv.Mat
}

// Close frees the scratch picture.
func (p *Preprocessor) Close() error {
	if p.resized.Ptr() != nil {
		err := p.resized.Close()
		p.resized = gocv.Mat{}
		return err
	}
	return nil
}

// Preprocess letterboxes a BGR image into a [1, 3, size, size] float tensor,
// RGB planes scaled to 0..1 and padded with grey, as YOLOv5/v8 expect. dst is
// reused when it holds 3*size*size values. It returns the letterbox and the
// tensor; an empty or non-BGR image gives an empty tensor. A one-off
// convenience: hot paths keep a Preprocessor, which also says why it failed.
func Preprocess(img gocv.Mat, size int, dst []float32) (Letterbox, []float32) {
	var p Preprocessor
	defer p.Close()
	lb, out, err := p.Run(img, size, dst)
	if err != nil {
		return lb, dst[:0]
	}
	return lb, out
}

// Run is Preprocess with the scratch picture kept and an error for bad input.
func (p *Preprocessor) Run(img gocv.Mat, size int, dst []float32) (Letterbox, []float32, error) {
	if img.Empty() {
		return Letterbox{}, dst, fmt.Errorf("yolo: empty image")
	}
	if img.Type() != gocv.MatTypeCV8UC3 {
		return Letterbox{}, dst, fmt.Errorf("yolo: want an 8-bit BGR image, got type %v", img.Type())
	}
	if size <= 0 || size > 8192 {
		return Letterbox{}, dst, fmt.Errorf("yolo: input size %d out of range", size)
	}
	lb := NewLetterbox(img.Cols(), img.Rows(), size)
	n := 3 * size * size
	if cap(dst) < n {
		dst = make([]float32, n)
	}
	dst = dst[:n]
	nw := int(math.Round(float64(lb.Width) * float64(lb.Scale)))
	nh := int(math.Round(float64(lb.Height) * float64(lb.Scale)))
	if nw < 1 {
		nw = 1
	}
	if nh < 1 {
		nh = 1
	}
	if p.resized.Ptr() == nil {
		p.resized = gocv.NewMat()
	}
	src := img
	if nw != lb.Width || nh != lb.Height {
		gocv.Resize(img, &p.resized, image.Pt(nw, nh), 0, 0, gocv.InterpolationLinear)
		src = p.resized
	} else if !img.IsContinuous() {
		img.CopyTo(&p.resized)
		src = p.resized
	}
	pix, err := src.DataPtrUint8()
	if err != nil {
		return lb, dst, fmt.Errorf("yolo: %w", err)
	}
	plane := size * size
	rPlane, gPlane, bPlane := dst[:plane], dst[plane:2*plane], dst[2*plane:]
	const inv = float32(1.0 / 255.0)
	pad := float32(padValue) * inv
	for y := 0; y < size; y++ {
		row := y * size
		sy := y - lb.PadY
		if sy < 0 || sy >= nh {
			for x := 0; x < size; x++ {
				rPlane[row+x], gPlane[row+x], bPlane[row+x] = pad, pad, pad
			}
			continue
		}
		srow := pix[sy*nw*3 : (sy+1)*nw*3]
		for x := 0; x < size; x++ {
			sx := x - lb.PadX
			if sx < 0 || sx >= nw {
				rPlane[row+x], gPlane[row+x], bPlane[row+x] = pad, pad, pad
				continue
			}
			px := srow[sx*3 : sx*3+3]
			bPlane[row+x] = float32(px[0]) * inv
			gPlane[row+x] = float32(px[1]) * inv
			rPlane[row+x] = float32(px[2]) * inv
		}
	}
	return lb, dst, nil
}

// Layout says how a YOLO output tensor is arranged.
type Layout int

// Output layouts.
const (
	// LayoutAuto guesses from the shape and the class count.
	LayoutAuto Layout = iota
	// LayoutV5 is [1, N, 5+C]: cx, cy, w, h, objectness, class scores.
	LayoutV5
	// LayoutV8 is [1, 4+C, N]: cx, cy, w, h rows then class score rows, no
	// objectness (YOLOv8/v11).
	LayoutV8
)

// ParseLayout maps the layout parameter ("auto", "v5", "v8") to a Layout.
func ParseLayout(s string) (Layout, error) {
	switch s {
	case "", "auto":
		return LayoutAuto, nil
	case "v5":
		return LayoutV5, nil
	case "v8":
		return LayoutV8, nil
	}
	return LayoutAuto, fmt.Errorf("yolo: layout %q: want auto, v5 or v8", s)
}

// DecodeOptions tune Decode.
type DecodeOptions struct {
	Layout Layout
	// Classes names class ids; ids past its end are labelled by number.
	Classes []string
	// ConfThreshold drops candidates below it (class score, times objectness
	// for v5).
	ConfThreshold float32
	// NMSThreshold is the IoU above which a lower-scored box of the same
	// class is suppressed.
	NMSThreshold float32
	// MaxDetections caps the result (0: 300).
	MaxDetections int
}

// ResolveLayout picks the layout of an output of the given shape.
func ResolveLayout(shape []int64, numClasses int, l Layout) (Layout, int, int, error) {
	dims := shape
	for len(dims) > 2 && dims[0] == 1 {
		dims = dims[1:]
	}
	if len(dims) != 2 {
		return l, 0, 0, fmt.Errorf("yolo: output shape %v: want [1, A, B]", shape)
	}
	a, b := int(dims[0]), int(dims[1])
	if a <= 0 || b <= 0 {
		return l, 0, 0, fmt.Errorf("yolo: output shape %v has an empty dimension", shape)
	}
	if l == LayoutAuto {
		switch {
		case numClasses > 0 && a == 4+numClasses:
			l = LayoutV8
		case numClasses > 0 && b == 5+numClasses:
			l = LayoutV5
		case a < b:
			l = LayoutV8
		default:
			l = LayoutV5
		}
	}
	switch l {
	case LayoutV8:
		if a < 5 {
			return l, 0, 0, fmt.Errorf("yolo: v8 output shape %v: want at least 5 rows", shape)
		}
		return l, b, a - 4, nil
	case LayoutV5:
		if b < 6 {
			return l, 0, 0, fmt.Errorf("yolo: v5 output shape %v: want at least 6 columns", shape)
		}
		return l, a, b - 5, nil
	}
	return l, 0, 0, fmt.Errorf("yolo: layout %d unknown", l)
}

// Decode turns a YOLO output tensor into detections in image pixels: keeps
// candidates above the confidence threshold, maps them through the letterbox
// and runs class-wise NMS. A malformed shape gives no detections (callers
// that want the reason use DecodeErr).
func Decode(output []float32, shape []int64, lb Letterbox, opts DecodeOptions) []*busv1.Detection {
	d, _ := DecodeErr(output, shape, lb, opts)
	return d
}

// DecodeErr is Decode with an error for a shape that does not match output.
func DecodeErr(output []float32, shape []int64, lb Letterbox, opts DecodeOptions) ([]*busv1.Detection, error) {
	layout, n, nc, err := ResolveLayout(shape, len(opts.Classes), opts.Layout)
	if err != nil {
		return nil, err
	}
	if len(output) < n*(nc+4) || (layout == LayoutV5 && len(output) < n*(nc+5)) {
		return nil, fmt.Errorf("yolo: output holds %d values, shape %v needs more", len(output), shape)
	}
	if lb.Scale <= 0 {
		return nil, fmt.Errorf("yolo: letterbox scale %v", lb.Scale)
	}
	var cands []candidate
	for i := 0; i < n; i++ {
		var cx, cy, w, h, best float32
		cls := -1
		switch layout {
		case LayoutV8:
			for c := 0; c < nc; c++ {
				if s := output[(4+c)*n+i]; s > best || cls < 0 {
					best, cls = s, c
				}
			}
			if best < opts.ConfThreshold || best <= 0 {
				continue
			}
			cx, cy, w, h = output[i], output[n+i], output[2*n+i], output[3*n+i]
		case LayoutV5:
			row := output[i*(nc+5) : (i+1)*(nc+5)]
			obj := row[4]
			if obj < opts.ConfThreshold || obj <= 0 {
				continue
			}
			for c := 0; c < nc; c++ {
				if s := row[5+c]; s > best || cls < 0 {
					best, cls = s, c
				}
			}
			best *= obj
			if best < opts.ConfThreshold || best <= 0 {
				continue
			}
			cx, cy, w, h = row[0], row[1], row[2], row[3]
		}
		if !(w > 0 && h > 0) || isBad(cx) || isBad(cy) || isBad(w) || isBad(h) {
			continue
		}
		x, y, bw, bh := lb.ToImage(cx, cy, w, h)
		if bw <= 0 || bh <= 0 {
			continue
		}
		cands = append(cands, candidate{x: x, y: y, w: bw, h: bh, score: best, class: cls})
	}
	kept := nms(cands, opts.NMSThreshold)
	max := opts.MaxDetections
	if max <= 0 {
		max = 300
	}
	if len(kept) > max {
		kept = kept[:max]
	}
	out := make([]*busv1.Detection, len(kept))
	for i, c := range kept {
		label := strconv.Itoa(c.class)
		if c.class < len(opts.Classes) {
			label = opts.Classes[c.class]
		}
		out[i] = &busv1.Detection{X: c.x, Y: c.y, W: c.w, H: c.h, Label: label, Score: c.score, ClassId: int32(c.class)}
	}
	return out, nil
}

func isBad(v float32) bool {
	return math.IsNaN(float64(v)) || math.IsInf(float64(v), 0)
}

// candidate is a box before NMS, top-left and size in image pixels.
type candidate struct {
	x, y, w, h float32
	score      float32
	class      int
}

// nms is greedy class-wise non-maximum suppression: boxes sorted by score,
// a box is dropped when it overlaps a kept box of the same class by more than
// thresh IoU. Boxes of different classes never suppress each other. It sorts
// cands in place and returns the kept ones, best first.
func nms(cands []candidate, thresh float32) []candidate {
	sort.SliceStable(cands, func(i, j int) bool { return cands[i].score > cands[j].score })
	kept := cands[:0:0]
	for _, c := range cands {
		keep := true
		for _, k := range kept {
			if k.class == c.class && processors.IoU(k.x, k.y, k.w, k.h, c.x, c.y, c.w, c.h) > thresh {
				keep = false
				break
			}
		}
		if keep {
			kept = append(kept, c)
		}
	}
	return kept
}
