package processors

import (
	"math"
	"testing"
)

func TestIoU(t *testing.T) {
	for _, c := range []struct {
		a, b [4]float32
		want float32
	}{
		{[4]float32{0, 0, 10, 10}, [4]float32{0, 0, 10, 10}, 1},
		{[4]float32{0, 0, 10, 10}, [4]float32{10, 0, 10, 10}, 0},        // touching edges
		{[4]float32{0, 0, 10, 10}, [4]float32{20, 20, 5, 5}, 0},         // apart
		{[4]float32{0, 0, 10, 10}, [4]float32{5, 5, 10, 10}, 25. / 175}, // quarter overlap
		{[4]float32{0, 0, 10, 10}, [4]float32{2, 2, 5, 5}, 25. / 100},   // inside
	} {
		got := IoU(c.a[0], c.a[1], c.a[2], c.a[3], c.b[0], c.b[1], c.b[2], c.b[3])
		if math.Abs(float64(got-c.want)) > 1e-6 {
			t.Errorf("IoU(%v, %v) = %v, want %v", c.a, c.b, got, c.want)
		}
		if back := IoU(c.b[0], c.b[1], c.b[2], c.b[3], c.a[0], c.a[1], c.a[2], c.a[3]); back != got {
			t.Errorf("IoU not symmetric for %v, %v", c.a, c.b)
		}
	}
}
