package builtin

import (
	"errors"
	"testing"
)

// TestSetOpenCVThreads: the first count applies to OpenCV, the same count
// again is accepted, another one or one out of range is refused.
func TestSetOpenCVThreads(t *testing.T) {
	for _, n := range []int{-1, MaxOpenCVThreads + 1} {
		if err := SetOpenCVThreads(n); !errors.Is(err, ErrThreads) {
			t.Fatalf("SetOpenCVThreads(%d) = %v, want ErrThreads", n, err)
		}
	}
	if err := SetOpenCVThreads(1); err != nil {
		t.Fatal(err)
	}
	if got := OpenCVThreads(); got != 1 {
		t.Fatalf("OpenCV uses %d threads after SetOpenCVThreads(1)", got)
	}
	if err := SetOpenCVThreads(1); err != nil {
		t.Fatalf("the same count again: %v", err)
	}
	if err := SetOpenCVThreads(2); !errors.Is(err, ErrThreads) {
		t.Fatalf("another count: %v, want ErrThreads", err)
	}
	if got := OpenCVThreads(); got != 1 {
		t.Fatalf("OpenCV uses %d threads after a refused change", got)
	}
}
