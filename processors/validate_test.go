package processors_test

import (
	"errors"
	"testing"

	"github.com/imageflowcanvas/imageflow/processors"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// TestValidatePipelineWithBuiltins is the table of pipelines the API must
// reject (or accept) when saved, each error naming the step at fault.
func TestValidatePipelineWithBuiltins(t *testing.T) {
	reg := builtins()
	many := &busv1.Pipeline{}
	for i := 0; i <= processors.MaxSteps; i++ {
		many.Steps = append(many.Steps, &busv1.Step{Id: "s" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Processor: "resize"})
	}
	cases := []struct {
		name string
		p    *busv1.Pipeline
		step string // the step the error names; "" for pipeline-wide errors
		err  error  // nil: valid
	}{
		{"valid person detection", pipe("ok",
			st(t, "small", "resize", map[string]any{"width": 640, "interpolation": "area"}),
			st(t, "moving", "motion", map[string]any{"min_area": 500}, "small"),
			st(t, "people", "detect", map[string]any{"backend": "hog", "gate": "only_if_motion", "min_score": 0.5}, "small", "moving"),
			st(t, "draw", "overlay", nil, "small", "people"),
		), "", nil},
		{"valid remote step", pipe("ok", st(t, "far", "grpc://10.0.0.1:50051", map[string]any{"anything": true})), "", nil},
		{"no steps", pipe("empty"), "", processors.ErrNoSteps},
		{"too many steps", many, "", processors.ErrTooManySteps},
		{"unknown processor", pipe("p", st(t, "a", "resize", nil), st(t, "b", "sharpen", nil, "a")), "b", processors.ErrUnknownProcessor},
		{"missing input", pipe("p", st(t, "a", "resize", nil), st(t, "b", "filter", nil, "nope")), "b", processors.ErrMissingInput},
		{"cycle", pipe("p", st(t, "a", "filter", nil, "c"), st(t, "b", "filter", nil, "a"), st(t, "c", "filter", nil, "b")), "", processors.ErrCycle},
		{"self loop", pipe("p", st(t, "a", "filter", nil, "a")), "a", processors.ErrCycle},
		{"duplicate id", pipe("p", st(t, "a", "resize", nil), st(t, "a", "filter", nil)), "a", processors.ErrDuplicateID},
		{"invalid id", pipe("p", st(t, "a.b", "resize", nil)), "a.b", processors.ErrInvalidID},
		{"unknown parameter", pipe("p", st(t, "r", "resize", map[string]any{"widht": 10})), "r", processors.ErrBadParam},
		{"parameter above max", pipe("p", st(t, "r", "resize", map[string]any{"width": 100000})), "r", processors.ErrBadParam},
		{"parameter below min", pipe("p", st(t, "m", "motion", map[string]any{"min_area": 0})), "m", processors.ErrBadParam},
		{"fractional int", pipe("p", st(t, "f", "filter", map[string]any{"kernel_size": 2.5})), "f", processors.ErrBadParam},
		{"wrong type", pipe("p", st(t, "o", "overlay", map[string]any{"show_score": "yes"})), "o", processors.ErrBadParam},
		{"bad enum", pipe("p", st(t, "f", "filter", map[string]any{"mode": "sepia"})), "f", processors.ErrBadParam},
		{"bad backend", pipe("p", st(t, "d", "detect", map[string]any{"backend": "yolo9000"})), "d", processors.ErrBadParam},
		{"bad gate", pipe("p", st(t, "d", "detect", map[string]any{"gate": "sometimes"})), "d", processors.ErrBadParam},
		{"nms above 1", pipe("p", st(t, "d", "detect", map[string]any{"nms_threshold": 1.5})), "d", processors.ErrBadParam},
		{"bad remote", pipe("p", st(t, "far", "grpc://nohostport", nil)), "far", processors.ErrBadRemote},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := reg.ValidatePipeline(c.p)
			if c.err == nil {
				if err != nil {
					t.Fatalf("valid pipeline rejected: %v", err)
				}
				return
			}
			if !errors.Is(err, c.err) {
				t.Fatalf("error %v, want %v", err, c.err)
			}
			var se *processors.StepError
			isStep := errors.As(err, &se)
			switch {
			case c.name == "cycle":
				// Any step on the cycle may be named.
				if !isStep || se.Step == "" {
					t.Fatalf("cycle error %v names no step", err)
				}
			case c.step != "" && (!isStep || se.Step != c.step):
				t.Fatalf("error %v, want it to name step %q", err, c.step)
			}
		})
	}
}
