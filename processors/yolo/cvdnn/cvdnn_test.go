package cvdnn

import (
	"errors"
	"testing"

	"github.com/imageflowcanvas/imageflow/processors/yolo/yolotest"
)

func TestForward(t *testing.T) {
	want := []float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	model, err := yolotest.Model(32, want, []int64{1, 6, 2})
	if err != nil {
		t.Fatal(err)
	}
	n, err := Load(model)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	in := []Input{{Name: "images", Shape: []int{1, 3, 32, 32}, Data: make([]float32, 3*32*32)}}
	var outs []Output
	for _, names := range [][]string{nil, {"output0"}, {"output0"}} {
		outs, err = n.Forward(in, names, outs)
		if err != nil {
			t.Fatal(err)
		}
		if len(outs) != 1 || len(outs[0].Shape) != 3 || outs[0].Shape[1] != 6 || outs[0].Shape[2] != 2 {
			t.Fatalf("outputs %+v", outs)
		}
		for i, v := range want {
			if outs[0].Data[i] != v {
				t.Fatalf("output[%d] = %v, want %v", i, outs[0].Data[i], v)
			}
		}
	}
	if names, err := n.OutputNames(); err != nil || len(names) != 1 || names[0] != "output0" {
		t.Errorf("OutputNames = %q, %v; want [output0]", names, err)
	}
	// Errors come back instead of aborting the process.
	if _, err := n.Forward(in, []string{"nope"}, outs); err == nil {
		t.Error("unknown output accepted")
	}
	bad := []Input{{Name: "images", Shape: []int{1, 3, 32}, Data: make([]float32, 3*32)}}
	if _, err := n.Forward(bad, nil, outs); err == nil {
		t.Error("3-D input accepted")
	}
	if _, err := n.Forward([]Input{{Shape: []int{2}, Data: make([]float32, 3)}}, nil, outs); err == nil {
		t.Error("short data accepted")
	}
	// Still works after errors.
	if _, err := n.Forward(in, nil, outs); err != nil {
		t.Fatalf("after errors: %v", err)
	}
	n.Close()
	n.Close()
	if _, err := n.Forward(in, nil, outs); !errors.Is(err, ErrClosed) {
		t.Errorf("after close: %v", err)
	}
	if _, err := n.OutputNames(); !errors.Is(err, ErrClosed) {
		t.Errorf("OutputNames after close: %v", err)
	}
}

func TestLoadGarbage(t *testing.T) {
	for _, b := range [][]byte{nil, []byte("not a model"), {0x08, 0x08, 0x3a, 0x02, 0x0a, 0x00}} {
		if n, err := Load(b); err == nil {
			n.Close()
			t.Errorf("%q loaded", b)
		}
	}
}

func FuzzLoad(f *testing.F) {
	model, _ := yolotest.Model(32, []float32{1, 2, 3, 4, 5, 6}, []int64{1, 6, 1})
	f.Add(model)
	f.Add([]byte("garbage"))
	f.Add(model[:len(model)/2])
	f.Fuzz(func(t *testing.T, b []byte) {
		if n, err := Load(b); err == nil {
			n.Close()
		}
	})
}
