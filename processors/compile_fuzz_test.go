package processors_test

import (
	"context"
	"encoding/json"
	"image"
	"image/color"
	"testing"
	"time"

	"gocv.io/x/gocv"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/imageflowcanvas/imageflow/processors"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// pipelineSeeds are JSON pipelines of one step per built-in processor with
// its parameters at their minimum, at their maximum and at each choice, and
// the usual resize → motion → detect → overlay chain.
func pipelineSeeds(reg *processors.Registry) [][]byte {
	var out [][]byte
	add := func(steps ...map[string]any) {
		b, _ := json.Marshal(map[string]any{"id": "fuzz", "steps": steps})
		out = append(out, b)
	}
	for _, s := range reg.Specs() {
		low, high := map[string]any{}, map[string]any{}
		for _, p := range s.Params {
			if p.Min != nil {
				low[p.Name] = *p.Min
			}
			if p.Max != nil {
				high[p.Name] = *p.Max
			}
			for _, c := range p.Choices {
				add(map[string]any{"id": "a", "processor": s.Name, "params": map[string]any{p.Name: c}})
			}
		}
		add(map[string]any{"id": "a", "processor": s.Name})
		add(map[string]any{"id": "a", "processor": s.Name, "params": low})
		add(map[string]any{"id": "a", "processor": s.Name, "params": high})
	}
	add(map[string]any{"id": "small", "processor": "resize", "params": map[string]any{"width": 64}},
		map[string]any{"id": "moving", "processor": "motion", "inputs": []string{"small"}},
		map[string]any{"id": "people", "processor": "detect", "inputs": []string{"small", "moving"}, "params": map[string]any{"gate": "only_if_motion"}},
		map[string]any{"id": "draw", "processor": "overlay", "inputs": []string{"small", "people"}})
	return out
}

// FuzzCompileAndRun saves arbitrary pipeline JSON the way the API reads it,
// compiles what validates with the built-in processors and runs it on a
// picture of a fuzzed size: every step either works or returns an error.
// OpenCV sits behind these steps, so a size or parameter it cannot take
// must be refused before the call, never crash the process.
func FuzzCompileAndRun(f *testing.F) {
	reg := builtins()
	for _, s := range pipelineSeeds(reg) {
		f.Add(s, uint8(96), uint8(72), uint8(3))
		f.Add(s, uint8(1), uint8(1), uint8(1))
	}
	f.Fuzz(func(t *testing.T, spec []byte, w, h, channels uint8) {
		p := &busv1.Pipeline{}
		if protojson.Unmarshal(spec, p) != nil {
			return
		}
		pl, err := processors.Compile(reg, p)
		if err != nil {
			return
		}
		defer pl.Close()
		typ := gocv.MatTypeCV8UC3
		switch channels % 3 {
		case 1:
			typ = gocv.MatTypeCV8UC1
		case 2:
			typ = gocv.MatTypeCV8UC4
		}
		img := gocv.NewMatWithSize(int(h)+1, int(w)+1, typ)
		defer img.Close()
		gocv.Rectangle(&img, image.Rect(int(w)/4, int(h)/4, int(w)/2+1, int(h)/2+1), color.RGBA{200, 100, 50, 0}, -1)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for range 2 { // twice: motion and tracking keep state between frames
			if _, err := pl.Run(ctx, img); err != nil {
				return
			}
		}
	})
}
