package builtin

import (
	"context"
	"fmt"
	"image"

	"gocv.io/x/gocv"

	"github.com/imageflowcanvas/imageflow/processors"
)

// conversions are the colour conversions of the "color" filter. Each keeps
// three 8-bit channels (gray is expanded back), so the next step still gets
// a 3-channel picture; the channels then hold the named space, not BGR.
var conversions = map[string]gocv.ColorConversionCode{
	"bgr2hsv":   gocv.ColorBGRToHSV,
	"bgr2rgb":   gocv.ColorBGRToRGB,
	"bgr2lab":   gocv.ColorBGRToLab,
	"bgr2ycrcb": gocv.ColorBGRToYCrCb,
	"bgr2hls":   gocv.ColorBGRToHLS,
	"bgr2luv":   gocv.ColorBGRToLuv,
	"bgr2xyz":   gocv.ColorBGRToXYZ,
	"bgr2yuv":   gocv.ColorBGRToYUV,
	"bgr2gray":  gocv.ColorBGRToGray,
}

// FilterSpec describes the filter processor.
func FilterSpec() processors.Spec {
	return processors.Spec{
		Name:        "filter",
		Description: "Image filters: grayscale, Gaussian blur, sharpen, Canny edges, binary threshold or a colour-space conversion. The output is always 3-channel 8-bit (single-channel results are expanded to B=G=R) so any step can follow.",
		Params: []processors.ParamSpec{
			{Name: "mode", Type: processors.ParamEnum, Description: "Which filter to apply.", Default: "grayscale", Choices: []string{"grayscale", "blur", "sharpen", "edges", "threshold", "color"}},
			{Name: "kernel_size", Type: processors.ParamInt, Description: "Blur kernel size in pixels (odd); an even value is rounded up.", Default: int64(5), Min: processors.Range(1), Max: processors.Range(99)},
			{Name: "sigma", Type: processors.ParamFloat, Description: "Blur standard deviation; 0 derives it from kernel_size.", Default: 0.0, Min: processors.Range(0), Max: processors.Range(100)},
			{Name: "sharpen_amount", Type: processors.ParamFloat, Description: "Strength of the sharpen mode (1 is the classic 3x3 Laplacian kernel).", Default: 1.0, Min: processors.Range(0), Max: processors.Range(10)},
			{Name: "low_threshold", Type: processors.ParamFloat, Description: "Canny lower hysteresis threshold (edges mode).", Default: 50.0, Min: processors.Range(0), Max: processors.Range(1000)},
			{Name: "high_threshold", Type: processors.ParamFloat, Description: "Canny upper hysteresis threshold (edges mode).", Default: 150.0, Min: processors.Range(0), Max: processors.Range(1000)},
			{Name: "threshold", Type: processors.ParamFloat, Description: "Gray level above which a pixel turns white (threshold mode).", Default: 128.0, Min: processors.Range(0), Max: processors.Range(255)},
			{Name: "otsu", Type: processors.ParamBool, Description: "Pick the threshold per frame with Otsu's method instead (threshold mode).", Default: false},
			{Name: "invert", Type: processors.ParamBool, Description: "Swap black and white (threshold mode).", Default: false},
			{Name: "conversion", Type: processors.ParamEnum, Description: "Target colour space (color mode).", Default: "bgr2hsv", Choices: []string{"bgr2hsv", "bgr2rgb", "bgr2lab", "bgr2ycrcb", "bgr2hls", "bgr2luv", "bgr2xyz", "bgr2yuv", "bgr2gray"}},
		},
		Outputs: []string{"image"},
		New:     NewFilter,
	}
}

// Filter applies one image filter; see FilterSpec.
type Filter struct {
	mode        string
	ksize       int
	sigma       float64
	low, high   float32
	thresh      float32
	threshType  gocv.ThresholdType
	conversion  gocv.ColorConversionCode
	toGray      bool
	gray, edges gocv.Mat // reused single-channel buffers
	kernel      gocv.Mat // sharpen kernel
}

// NewFilter builds a filter processor from validated parameters.
func NewFilter(p processors.Params) (processors.Processor, error) {
	f := &Filter{
		mode:   p.String("mode"),
		ksize:  p.Int("kernel_size") | 1,
		sigma:  p.Float("sigma"),
		low:    float32(p.Float("low_threshold")),
		high:   float32(p.Float("high_threshold")),
		thresh: float32(p.Float("threshold")),
	}
	if f.low > f.high {
		return nil, fmt.Errorf("%w: low_threshold %v above high_threshold %v", ErrConfig, f.low, f.high)
	}
	f.threshType = gocv.ThresholdBinary
	if p.Bool("invert") {
		f.threshType = gocv.ThresholdBinaryInv
	}
	if p.Bool("otsu") {
		f.threshType |= gocv.ThresholdOtsu
	}
	conv := p.String("conversion")
	code, ok := conversions[conv]
	if f.mode == "color" && !ok {
		return nil, fmt.Errorf("%w: unknown conversion %q", ErrConfig, conv)
	}
	f.conversion, f.toGray = code, code == gocv.ColorBGRToGray
	switch f.mode {
	case "grayscale", "blur", "edges", "threshold", "color":
	case "sharpen":
		// Identity plus amount times the negative Laplacian: the centre
		// weight 1+4a and -a on the four neighbours keep the mean level.
		a := float32(p.Float("sharpen_amount"))
		f.kernel = gocv.NewMatWithSize(3, 3, gocv.MatTypeCV32F)
		for _, c := range [][3]int{{0, 1, 0}, {1, 0, 0}, {1, 2, 0}, {2, 1, 0}} {
			f.kernel.SetFloatAt(c[0], c[1], -a)
		}
		f.kernel.SetFloatAt(0, 0, 0)
		f.kernel.SetFloatAt(0, 2, 0)
		f.kernel.SetFloatAt(2, 0, 0)
		f.kernel.SetFloatAt(2, 2, 0)
		f.kernel.SetFloatAt(1, 1, 1+4*a)
	default:
		return nil, fmt.Errorf("%w: unknown filter mode %q", ErrConfig, f.mode)
	}
	f.gray, f.edges = gocv.NewMat(), gocv.NewMat()
	return f, nil
}

// Process writes the filtered picture into out.Image.
func (f *Filter) Process(_ context.Context, in *processors.Input, out *processors.Output) error {
	if err := checkBGR(in.Image); err != nil {
		return err
	}
	if out.Image.Ptr() == nil {
		out.Image = gocv.NewMat()
	}
	switch f.mode {
	case "grayscale":
		gocv.CvtColor(in.Image, &f.gray, gocv.ColorBGRToGray)
		gocv.CvtColor(f.gray, &out.Image, gocv.ColorGrayToBGR)
	case "blur":
		gocv.GaussianBlur(in.Image, &out.Image, image.Pt(f.ksize, f.ksize), f.sigma, f.sigma, gocv.BorderDefault)
	case "sharpen":
		gocv.Filter2D(in.Image, &out.Image, -1, f.kernel, image.Pt(-1, -1), 0, gocv.BorderDefault)
	case "edges":
		gocv.CvtColor(in.Image, &f.gray, gocv.ColorBGRToGray)
		gocv.Canny(f.gray, &f.edges, f.low, f.high)
		gocv.CvtColor(f.edges, &out.Image, gocv.ColorGrayToBGR)
	case "threshold":
		gocv.CvtColor(in.Image, &f.gray, gocv.ColorBGRToGray)
		gocv.Threshold(f.gray, &f.edges, f.thresh, 255, f.threshType)
		gocv.CvtColor(f.edges, &out.Image, gocv.ColorGrayToBGR)
	case "color":
		if f.toGray {
			gocv.CvtColor(in.Image, &f.gray, gocv.ColorBGRToGray)
			gocv.CvtColor(f.gray, &out.Image, gocv.ColorGrayToBGR)
		} else {
			gocv.CvtColor(in.Image, &out.Image, f.conversion)
		}
	}
	return nil
}

// Close frees the filter's buffers.
func (f *Filter) Close() error {
	closeMats(&f.gray, &f.edges, &f.kernel)
	return nil
}
