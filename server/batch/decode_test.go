package batch

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/processors/builtin"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

func TestReducedDecodeChoice(t *testing.T) {
	reg := processors.NewRegistry()
	builtin.Register(reg)
	st := func(m map[string]any) *structpb.Struct { s, _ := structpb.NewStruct(m); return s }
	cases := []struct {
		steps []*busv1.Step
		w, h  int
		want  int
	}{
		{[]*busv1.Step{{Id: "r", Processor: "resize", Params: st(map[string]any{"width": 320})}}, 1920, 1080, 4},
		{[]*busv1.Step{{Id: "r", Processor: "resize", Params: st(map[string]any{"width": 240})}}, 1920, 1080, 8},
		{[]*busv1.Step{{Id: "r", Processor: "resize", Params: st(map[string]any{"width": 1280})}}, 1920, 1080, 1},
		{[]*busv1.Step{{Id: "r", Processor: "resize", Params: st(map[string]any{"width": 640, "height": 640, "keep_aspect": false})}}, 1920, 1080, 1},
		{[]*busv1.Step{{Id: "r", Processor: "resize", Params: st(map[string]any{"width": 320})}, {Id: "d", Processor: "detect"}}, 1920, 1080, 1},
		{[]*busv1.Step{{Id: "r", Processor: "resize", Params: st(map[string]any{"width": 320})}, {Id: "f", Processor: "filter", Inputs: []string{"r"}}}, 1920, 1080, 4},
	}
	for i, c := range cases {
		roots := rootSizers(reg, &busv1.Pipeline{Steps: c.steps})
		_, f := reducedDecode(roots, c.w, c.h)
		if f != c.want {
			t.Errorf("case %d: factor %d, want %d", i, f, c.want)
		}
	}
}

func TestInputCacheBounded(t *testing.T) {
	c := newInputCache(1000)
	for i := 0; i < 20; i++ {
		c.put(string(rune('a'+i)), make([]byte, 100))
	}
	if c.size > 1000 || len(c.m) != 10 {
		t.Fatalf("size %d entries %d", c.size, len(c.m))
	}
	if _, ok := c.take("a"); ok {
		t.Fatal("oldest not evicted")
	}
	if b, ok := c.take("t"); !ok || len(b) != 100 {
		t.Fatal("newest missing")
	}
	if _, ok := c.take("t"); ok {
		t.Fatal("taken twice")
	}
	c.put("big", make([]byte, 300)) // over a quarter: not cached
	if _, ok := c.take("big"); ok {
		t.Fatal("oversized entry cached")
	}
}

func FuzzCleanName(f *testing.F) {
	for _, s := range []string{"a.jpg", "../../etc/passwd", "C:\\x\\y.png", "", ".", "/", "a\x00b\nc\".jpg", "ünïcode.jpg"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n := cleanName(s, 7)
		if n == "" || n == "." || n == ".." || strings.ContainsAny(n, "/\\\"\x00\n\r") || len(n) > 200 {
			t.Fatalf("cleanName(%q) = %q", s, n)
		}
	})
}
