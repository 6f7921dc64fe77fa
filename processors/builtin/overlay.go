package builtin

import (
	"context"
	"image"
	"image/color"
	"strconv"

	"gocv.io/x/gocv"

	"github.com/imageflowcanvas/imageflow/processors"
)

var overlayColors = map[string]color.RGBA{
	"green":  {0, 255, 0, 0},
	"red":    {255, 0, 0, 0},
	"blue":   {0, 0, 255, 0},
	"yellow": {255, 255, 0, 0},
	"white":  {255, 255, 255, 0},
}

// OverlaySpec describes the overlay processor.
func OverlaySpec() processors.Spec {
	return processors.Spec{
		Name:        "overlay",
		Description: "Draws every upstream detection (box, label and score) onto a copy of the picture, for batch outputs and snapshots.",
		Params: []processors.ParamSpec{
			{Name: "color", Type: processors.ParamEnum, Description: "Box and text colour.", Default: "green", Choices: []string{"green", "red", "blue", "yellow", "white"}},
			{Name: "thickness", Type: processors.ParamInt, Description: "Line thickness in pixels.", Default: int64(2), Min: processors.Range(1), Max: processors.Range(20)},
			{Name: "font_scale", Type: processors.ParamFloat, Description: "Label text size (1 is about 22 pixels high).", Default: 0.5, Min: processors.Range(0.1), Max: processors.Range(5)},
			{Name: "show_score", Type: processors.ParamBool, Description: "Print the score after the label.", Default: true},
		},
		Outputs: []string{"image"},
		New:     NewOverlay,
	}
}

// Overlay draws detections; see OverlaySpec.
type Overlay struct {
	color     color.RGBA
	thickness int
	fontScale float64
	showScore bool
	text      []byte
}

// NewOverlay builds an overlay processor from validated parameters.
func NewOverlay(p processors.Params) (processors.Processor, error) {
	c, ok := overlayColors[p.String("color")]
	if !ok {
		c = overlayColors["green"]
	}
	return &Overlay{color: c, thickness: p.Int("thickness"), fontScale: p.Float("font_scale"), showScore: p.Bool("show_score")}, nil
}

// Process copies in.Image into out.Image and draws in.Detections on it.
func (o *Overlay) Process(_ context.Context, in *processors.Input, out *processors.Output) error {
	if err := checkBGR(in.Image); err != nil {
		return err
	}
	if out.Image.Ptr() == nil {
		out.Image = gocv.NewMat()
	}
	in.Image.CopyTo(&out.Image)
	for _, d := range in.Detections {
		r := image.Rect(int(d.X), int(d.Y), int(d.X+d.W), int(d.Y+d.H))
		gocv.Rectangle(&out.Image, r, o.color, o.thickness)
		o.text = append(o.text[:0], d.Label...)
		if o.showScore {
			o.text = append(o.text, ' ')
			o.text = strconv.AppendFloat(o.text, float64(d.Score), 'f', 2, 32)
		}
		if len(o.text) == 0 {
			continue
		}
		y := r.Min.Y - 4
		if y < 12 {
			y = r.Min.Y + 14
		}
		gocv.PutText(&out.Image, string(o.text), image.Pt(r.Min.X, y), gocv.FontHersheySimplex, o.fontScale, o.color, 1)
	}
	return nil
}

// Close frees nothing: the engine owns the output Mat.
func (o *Overlay) Close() error { return nil }
