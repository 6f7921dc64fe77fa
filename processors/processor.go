// Package processors holds the Processor interface, the registry of
// processors with their parameters, pipeline validation and the pipeline
// engine that live cameras and batch executions share.
package processors

import (
	"context"

	"gocv.io/x/gocv"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// Input is what one step of a pipeline receives.
type Input struct {
	// Image is the picture the step works on, BGR; the engine owns it and the
	// step must not close or keep it.
	Image gocv.Mat
	// Detections found by the steps this one consumes (in Image's pixels).
	Detections []*busv1.Detection
	// Values from upstream steps.
	Values map[string]string
}

// Output is what one step produced. A step that does not change the picture
// leaves Image empty and the engine passes the input picture on.
type Output struct {
	// Image, when not empty, is a new picture owned by the engine from now on.
	Image      gocv.Mat
	Detections []*busv1.Detection
	Values     map[string]string
	// ReplaceDetections, when set, makes the engine pass on only this step's
	// Detections: its inputs' detections stop here instead of travelling on
	// beside them. A detector that used upstream motion regions sets it so a
	// viewer sees people, not people and the motion boxes that led to them.
	// The engine clears it before every call.
	ReplaceDetections bool
}

// Processor is one processing step. The same step runs in-process, behind the
// gRPC Processor service, or against Triton.
type Processor interface {
	// Process handles one image. Calls on one Processor never overlap.
	Process(ctx context.Context, in *Input, out *Output) error
	// Close frees what the processor holds (models, cascades, mats).
	Close() error
}

// Factory builds a processor from validated parameters (defaults filled in).
type Factory func(params Params) (Processor, error)
