package builtin

// #include "objdetect.h"
import "C"

import (
	"errors"
	"fmt"
	"sync"
)

// ErrThreads is returned by SetOpenCVThreads for a count out of range or a
// second, different count in one process.
var ErrThreads = errors.New("opencv threads")

// MaxOpenCVThreads bounds SetOpenCVThreads.
const MaxOpenCVThreads = 256

var threads struct {
	sync.Mutex
	set bool
	n   int
}

// SetOpenCVThreads sets how many threads OpenCV's parallel loops (HOG's
// pyramid, resizing, morphology, DNN layers) use in this process; 0 keeps
// OpenCV's default of one per core. One thread per loop costs about a
// quarter less CPU per frame (HOG in motion regions 6.3-7.1 against
// 8.3-10.6 ms of CPU a frame, motion 3.3-4.1 against 4.5-5.0 ms:
// BenchmarkDetectRegions, BenchmarkMotion) at some wall time per frame:
// cameras already run in parallel, one pipeline each, so spreading one
// frame over the cores only adds the workers' hand-offs and spinning.
// OpenCV cannot change the count safely while a loop runs, so only the
// first call applies; a later call with the same count does nothing and
// one with another count fails.
func SetOpenCVThreads(n int) error {
	if n < 0 || n > MaxOpenCVThreads {
		return fmt.Errorf("%w: %d, want 0..%d", ErrThreads, n, MaxOpenCVThreads)
	}
	threads.Lock()
	defer threads.Unlock()
	if threads.set {
		if n != threads.n {
			return fmt.Errorf("%w: already %d in this process, cannot change to %d", ErrThreads, threads.n, n)
		}
		return nil
	}
	if C.ifc_cv_set_threads(C.int(n)) < 0 {
		return fmt.Errorf("%w: OpenCV refused %d", ErrThreads, n)
	}
	threads.set, threads.n = true, n
	return nil
}

// OpenCVThreads is the thread count OpenCV's parallel loops use now.
func OpenCVThreads() int { return int(C.ifc_cv_get_threads()) }
