package processors_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/imageflowcanvas/imageflow/processors"
)

// TestBuiltinSpecsListAndResolve checks what GET /api/v1/processors lists
// for the built-ins and that resolving fills and types defaults.
func TestBuiltinSpecsListAndResolve(t *testing.T) {
	reg := builtins()
	b, err := json.Marshal(reg.Specs())
	if err != nil {
		t.Fatal(err)
	}
	var listed []struct {
		Name   string
		Params []struct {
			Name, Type string
			Default    any
			Choices    []string
			Min, Max   *float64
		}
	}
	if err := json.Unmarshal(b, &listed); err != nil {
		t.Fatal(err)
	}
	byName := map[string]int{}
	for i, s := range listed {
		byName[s.Name] = i
	}
	for _, name := range []string{"resize", "filter", "motion", "detect", "overlay"} {
		if _, ok := byName[name]; !ok {
			t.Fatalf("%s not listed: %s", name, b)
		}
	}
	for _, p := range listed[byName["filter"]].Params {
		if p.Name == "mode" && (p.Type != "enum" || len(p.Choices) != 6 || p.Default != "grayscale") {
			t.Fatalf("filter.mode listed as %+v", p)
		}
	}
	spec, _ := reg.Lookup("detect")
	params, err := spec.Resolve(map[string]any{"backend": "haar", "min_neighbors": 3.0})
	if err != nil {
		t.Fatal(err)
	}
	if params.String("backend") != "haar" || params.Int("min_neighbors") != 3 || params.Float("scale") != 1.05 || params.String("gate") != "none" {
		t.Fatalf("resolved %v", params)
	}
	if _, err := spec.Resolve(map[string]any{"min_neighbors": -1}); !errors.Is(err, processors.ErrBadParam) {
		t.Fatalf("negative min_neighbors: %v", err)
	}
}
