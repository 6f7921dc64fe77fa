package builtin

import (
	"errors"
	"fmt"

	"gocv.io/x/gocv"

	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/processors/blazeface"
	"github.com/imageflowcanvas/imageflow/processors/modelfiles"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// blazeFaceStep is the detect step's blazeface backend: the detector and
// its options, parsed once.
type blazeFaceStep struct {
	det *blazeface.Detector
	opt blazeface.Options
}

// blazeFaceModel is the model file the step reads: model, or the installed
// BlazeFace when it is empty.
func blazeFaceModel(p processors.Params) string {
	if m := p.String("model"); m != "" {
		return m
	}
	return DefaultBlazeFaceModel
}

func newBlazeFaceStep(p processors.Params, files *modelfiles.Dir) (*blazeFaceStep, error) {
	name := blazeFaceModel(p)
	buf, err := files.ReadFile(name, modelfiles.MaxModelBytes)
	if err != nil {
		if name == DefaultBlazeFaceModel && errors.Is(err, modelfiles.ErrNotAllowed) {
			return nil, fmt.Errorf("%w: blazeface model: %w (scripts/setup-product.sh installs it)", ErrConfig, err)
		}
		return nil, fmt.Errorf("%w: blazeface model: %w", ErrConfig, err)
	}
	det, err := blazeface.New(buf)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrConfig, name, err)
	}
	thr := 0.5
	if v, ok := p["face_threshold"].(float64); ok {
		thr = v
	}
	nms := 0.45
	if v, ok := p["nms_threshold"].(float64); ok {
		nms = v
	}
	return &blazeFaceStep{det: det, opt: blazeface.Options{MinScore: float32(thr), NMSThreshold: float32(nms)}}, nil
}

// process appends the faces in img (the step's input, BGR) to out, at most
// max of them, best first.
func (b *blazeFaceStep) process(img gocv.Mat, label string, max int, out *processors.Output) error {
	b.opt.MaxFaces = max
	faces, err := b.det.Detect(img, b.opt)
	if err != nil {
		return err
	}
	for _, f := range faces {
		out.Detections = append(out.Detections, &busv1.Detection{X: f.X, Y: f.Y, W: f.W, H: f.H, Label: label, Score: f.Score})
	}
	return nil
}

func (b *blazeFaceStep) close() {
	if b.det != nil {
		b.det.Close()
		b.det = nil
	}
}
