package builtin

import (
	"context"
	"image"
	"math"

	"gocv.io/x/gocv"

	"github.com/imageflowcanvas/imageflow/processors"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// MotionSpec describes the motion processor.
func MotionSpec() processors.Spec {
	return processors.Spec{
		Name:        "motion",
		Description: "Finds moving regions with MOG2 background subtraction, morphology and contours. Emits a \"motion\" detection per region and the value motion=true/false; keeps its background model across frames, so give each camera its own pipeline.",
		Params: []processors.ParamSpec{
			{Name: "min_area", Type: processors.ParamInt, Description: "Smallest region, in square pixels of the step's input, reported as motion.", Default: int64(400), Min: processors.Range(1), Max: processors.Range(1 << 26)},
			{Name: "history", Type: processors.ParamInt, Description: "Frames the background model remembers.", Default: int64(200), Min: processors.Range(2), Max: processors.Range(10000)},
			{Name: "var_threshold", Type: processors.ParamFloat, Description: "MOG2 squared Mahalanobis distance above which a pixel is foreground; larger is less sensitive.", Default: 16.0, Min: processors.Range(1), Max: processors.Range(1000)},
			{Name: "kernel_size", Type: processors.ParamInt, Description: "Size of the elliptic kernel that opens (removes speckles) and dilates (joins parts of one mover) the mask.", Default: int64(5), Min: processors.Range(1), Max: processors.Range(51)},
			{Name: "dilate_iterations", Type: processors.ParamInt, Description: "How many times the mask is dilated after opening.", Default: int64(2), Min: processors.Range(0), Max: processors.Range(20)},
			{Name: "work_width", Type: processors.ParamInt, Description: "Width the background model works at: a wider frame is shrunk to it first and the regions are scaled back to the frame (halving the width quarters the cost; kernel_size then counts in the shrunk pixels). 0 works at the frame's size.", Default: int64(0), Min: processors.Range(0), Max: processors.Range(1 << 14)},
			{Name: "max_regions", Type: processors.ParamInt, Description: "At most this many regions are reported, largest first.", Default: int64(50), Min: processors.Range(1), Max: processors.Range(1000)},
		},
		Outputs: []string{"detections", "values"},
		New:     NewMotion,
	}
}

// Motion detects moving regions; see MotionSpec.
type Motion struct {
	minArea    float64
	iterations int
	maxRegions int
	workWidth  int
	mog        gocv.BackgroundSubtractorMOG2
	kernel     gocv.Mat
	mask, tmp  gocv.Mat
	// small is the frame shrunk to workWidth (reused every frame).
	small gocv.Mat
	// gray is the luma the background model works on (reused).
	gray    gocv.Mat
	seeded  bool
	closed  bool
	regions []region
}

type region struct {
	r    image.Rectangle
	area float64
}

// NewMotion builds a motion processor from validated parameters.
func NewMotion(p processors.Params) (processors.Processor, error) {
	k := p.Int("kernel_size")
	return &Motion{
		minArea:    float64(p.Int("min_area")),
		iterations: p.Int("dilate_iterations"),
		maxRegions: p.Int("max_regions"),
		workWidth:  p.Int("work_width"),
		// Shadows off: a shadow is not a mover and would only enlarge boxes.
		mog:    gocv.NewBackgroundSubtractorMOG2WithParams(p.Int("history"), p.Float("var_threshold"), false),
		kernel: gocv.GetStructuringElement(gocv.MorphEllipse, image.Pt(k, k)),
		mask:   gocv.NewMat(),
		tmp:    gocv.NewMat(),
		small:  gocv.NewMat(),
		gray:   gocv.NewMat(),
	}, nil
}

// Process updates the background model with in.Image and reports what moved.
// The first frame only seeds the model: with no history every pixel would
// count as foreground.
func (m *Motion) Process(_ context.Context, in *processors.Input, out *processors.Output) error {
	if err := checkBGR(in.Image); err != nil {
		return err
	}
	src, scale := in.Image, 1.0
	if w := in.Image.Cols(); m.workWidth > 0 && w > m.workWidth {
		scale = float64(w) / float64(m.workWidth)
		h := max(1, int(math.Round(float64(in.Image.Rows())/scale)))
		gocv.Resize(in.Image, &m.small, image.Pt(m.workWidth, h), 0, 0, gocv.InterpolationArea)
		src = m.small
	}
	// The model works on luma: each of MOG2's Gaussians keeps a mean per
	// channel, and one channel took 1.3 against 1.7 ms a frame at 320 px
	// with as many people found in its regions afterwards
	// (TestDetectRegionsByMotionHeight).
	gocv.CvtColor(src, &m.gray, gocv.ColorBGRToGray)
	m.mog.Apply(m.gray, &m.mask)
	if !m.seeded {
		m.seeded = true
		setValue(out, "motion", "false")
		return nil
	}
	gocv.MorphologyEx(m.mask, &m.tmp, gocv.MorphOpen, m.kernel)
	if m.iterations > 0 {
		gocv.MorphologyExWithParams(m.tmp, &m.mask, gocv.MorphDilate, m.kernel, m.iterations, gocv.BorderConstant)
	} else {
		m.tmp.CopyTo(&m.mask)
	}
	contours := gocv.FindContours(m.mask, gocv.RetrievalExternal, gocv.ChainApproxSimple)
	m.regions = m.regions[:0]
	for i := 0; i < contours.Size(); i++ {
		c := contours.At(i)
		r := gocv.BoundingRect(c)
		// The box area, not the contour area: a walking person's mask is
		// ragged and its contour area undercounts what the box covers.
		if a := float64(r.Dx()*r.Dy()) * scale * scale; a >= m.minArea {
			m.regions = append(m.regions, region{r: r, area: a})
		}
	}
	contours.Close()
	sortRegions(m.regions)
	if len(m.regions) > m.maxRegions {
		m.regions = m.regions[:m.maxRegions]
	}
	cols, rows := float64(in.Image.Cols()), float64(in.Image.Rows())
	for _, g := range m.regions {
		// Scaled back to the frame; rounding the shrunk height may reach a
		// pixel past its edge.
		x, y := float64(g.r.Min.X)*scale, float64(g.r.Min.Y)*scale
		w, h := math.Min(float64(g.r.Dx())*scale, cols-x), math.Min(float64(g.r.Dy())*scale, rows-y)
		out.Detections = append(out.Detections, &busv1.Detection{
			X: float32(x), Y: float32(y), W: float32(w), H: float32(h), Label: "motion", Score: 1,
		})
	}
	if len(m.regions) > 0 {
		setValue(out, "motion", "true")
	} else {
		setValue(out, "motion", "false")
	}
	return nil
}

// sortRegions orders regions largest first (insertion sort: few regions, no
// allocation).
func sortRegions(rs []region) {
	for i := 1; i < len(rs); i++ {
		for j := i; j > 0 && rs[j].area > rs[j-1].area; j-- {
			rs[j], rs[j-1] = rs[j-1], rs[j]
		}
	}
}

// Close frees the background model and buffers.
func (m *Motion) Close() error {
	if !m.closed {
		m.closed = true
		m.mog.Close()
	}
	closeMats(&m.kernel, &m.mask, &m.tmp, &m.small, &m.gray)
	return nil
}
