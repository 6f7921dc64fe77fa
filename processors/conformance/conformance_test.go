package conformance

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	pb "github.com/imageflowcanvas/imageflow/proto/processorv1"
)

// TestParamProblems: the info check names each way a parameter description
// can be wrong, and accepts the good ones.
func TestParamProblems(t *testing.T) {
	num := func(f float64) *structpb.Value { return structpb.NewNumberValue(f) }
	str := func(s string) *structpb.Value { return structpb.NewStringValue(s) }
	for _, tc := range []struct {
		p    *pb.ParamSpec
		want string // "" means no problem
	}{
		{&pb.ParamSpec{Name: "n", Type: "int", Default: num(3), Min: proto.Float64(0), Max: proto.Float64(10)}, ""},
		{&pb.ParamSpec{Name: "mode", Type: "enum", Default: str("a"), Choices: []string{"a", "b"}}, ""},
		{&pb.ParamSpec{Name: "on", Type: "bool", Default: structpb.NewBoolValue(true)}, ""},
		{&pb.ParamSpec{Name: "label", Type: "string"}, ""},
		{&pb.ParamSpec{Type: "int"}, "no name"},
		{&pb.ParamSpec{Name: "x", Type: "integer"}, `type "integer"`},
		{&pb.ParamSpec{Name: "x", Type: "int", Min: proto.Float64(5), Max: proto.Float64(1)}, "min 5 above max 1"},
		{&pb.ParamSpec{Name: "x", Type: "int", Default: num(1.5)}, "int default 1.5"},
		{&pb.ParamSpec{Name: "x", Type: "float", Default: num(20), Max: proto.Float64(10)}, "outside its bounds"},
		{&pb.ParamSpec{Name: "x", Type: "enum"}, "enum without choices"},
		{&pb.ParamSpec{Name: "x", Type: "enum", Default: str("c"), Choices: []string{"a"}}, "not among its choices"},
		{&pb.ParamSpec{Name: "x", Type: "bool", Default: str("yes")}, "string default for a bool"},
		{&pb.ParamSpec{Name: "x", Type: "string", Min: proto.Float64(1)}, "bounds on a string"},
	} {
		got := strings.Join(paramProblems(tc.p, map[string]bool{}), "; ")
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%v: problems %q, want %q", tc.p, got, tc.want)
		}
	}
	seen := map[string]bool{}
	paramProblems(&pb.ParamSpec{Name: "a", Type: "int"}, seen)
	if p := paramProblems(&pb.ParamSpec{Name: "a", Type: "int"}, seen); len(p) != 1 || !strings.Contains(p[0], "twice") {
		t.Errorf("duplicate parameter: %q", p)
	}
}

// TestTestImages: the lossless forms carry the same pixels, the strided one
// with padding the processor must skip.
func TestTestImages(t *testing.T) {
	vs, w, h, err := testImages(jpegOf(syntheticImage()))
	if err != nil || w != 320 || h != 240 {
		t.Fatalf("%v %dx%d", err, w, h)
	}
	byName := map[string]*pb.RawImage{}
	for _, v := range vs {
		if r := v.img.GetRaw(); r != nil {
			byName[v.name] = r
		}
	}
	packed, strided, rgb := byName["bgr24"], byName["bgr24-stride"], byName["rgb24"]
	if d, ok := meanRawDiff(packed, strided); !ok || d != 0 {
		t.Fatalf("strided differs from packed: %v %v", d, ok)
	}
	if int(strided.Stride) <= w*3 || len(strided.Data) != int(strided.Stride)*h {
		t.Fatalf("stride %d for width %d", strided.Stride, w)
	}
	if packed.Data[0] != rgb.Data[2] || packed.Data[2] != rgb.Data[0] {
		t.Fatal("rgb24 is not the bgr24 picture with channels swapped")
	}
	if _, _, err := outputSize(&pb.Image{Data: &pb.Image_Raw{Raw: &pb.RawImage{Format: 1, Width: 4, Height: 4, Data: make([]byte, 40)}}}); err == nil {
		t.Fatal("a short raw answer passed")
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	if p := Percentile(ds, 50); p != 50*time.Millisecond {
		t.Fatalf("p50 %v", p)
	}
	if p := Percentile(ds, 99); p != 99*time.Millisecond {
		t.Fatalf("p99 %v", p)
	}
	if Percentile(nil, 50) != 0 {
		t.Fatal("empty")
	}
}
