package builtin

/*
#cgo !windows pkg-config: opencv4
#cgo CXXFLAGS: --std=c++11
#include <stdlib.h>
#include "objdetect.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"unsafe"

	"gocv.io/x/gocv"
)

// maxBoxes bounds the boxes one frame reports; a crowd beyond this is
// clipped to the best-scoring ones (NMS returns them sorted by score).
const maxBoxes = 256

// hogDetector wraps cv::HOGDescriptor with the default people SVM.
type hogDetector struct {
	p      unsafe.Pointer
	boxes  [4 * maxBoxes]C.int
	scores [maxBoxes]C.float
}

type hogParams struct {
	hitThreshold float64
	winStride    int
	padding      int
	scale        float64
	// levels bounds the pyramid levels searched; 0 means all down to the
	// window's size.
	levels         int
	groupThreshold int
	minScore       float32
	nmsThreshold   float32
}

func newHOGDetector() (*hogDetector, error) {
	p := C.ifc_hog_new()
	if p == nil {
		return nil, errors.New("HOG people detector: OpenCV could not load the default SVM")
	}
	return &hogDetector{p: p}, nil
}

// detect calls fn for each box that passed grouping, min_score and NMS, best
// first.
func (h *hogDetector) detect(img *gocv.Mat, hp hogParams, fn func(x, y, w, h int, score float32)) error {
	n := C.ifc_hog_detect(h.p, unsafe.Pointer(img.Ptr()), C.double(hp.hitThreshold), C.int(hp.winStride),
		C.int(hp.padding), C.double(hp.scale), C.int(hp.levels), C.int(hp.groupThreshold), C.float(hp.minScore),
		C.float(hp.nmsThreshold), &h.boxes[0], &h.scores[0], maxBoxes)
	if n < 0 {
		return fmt.Errorf("HOG detection failed on a %dx%d picture", img.Cols(), img.Rows())
	}
	for i := 0; i < int(n); i++ {
		b := h.boxes[4*i : 4*i+4]
		fn(int(b[0]), int(b[1]), int(b[2]), int(b[3]), float32(h.scores[i]))
	}
	return nil
}

func (h *hogDetector) close() {
	if h.p != nil {
		C.ifc_hog_close(h.p)
		h.p = nil
	}
}

// cascadeDetector wraps cv::CascadeClassifier.
type cascadeDetector struct {
	p         unsafe.Pointer
	boxes     [4 * maxBoxes]C.int
	neighbors [maxBoxes]C.int
}

// newCascadeDetector loads a cascade from its XML; name is for errors.
func newCascadeDetector(name string, xml []byte) (*cascadeDetector, error) {
	if len(xml) == 0 {
		return nil, fmt.Errorf("%w: %q is empty", ErrConfig, name)
	}
	p := C.ifc_cascade_new((*C.char)(unsafe.Pointer(&xml[0])), C.int(len(xml)))
	if p == nil {
		return nil, fmt.Errorf("%w: %q is not a cascade file OpenCV can load", ErrConfig, name)
	}
	return &cascadeDetector{p: p}, nil
}

// detect calls fn for each object found in gray with the number of
// overlapping raw hits that support it.
func (c *cascadeDetector) detect(gray *gocv.Mat, scaleFactor float64, minNeighbors, minSize, max int, fn func(x, y, w, h, neighbors int)) error {
	n := C.ifc_cascade_detect(c.p, unsafe.Pointer(gray.Ptr()), C.double(scaleFactor), C.int(minNeighbors),
		C.int(minSize), &c.boxes[0], &c.neighbors[0], C.int(min(max, maxBoxes)))
	if n < 0 {
		return fmt.Errorf("cascade detection failed on a %dx%d picture", gray.Cols(), gray.Rows())
	}
	for i := 0; i < int(n); i++ {
		b := c.boxes[4*i : 4*i+4]
		fn(int(b[0]), int(b[1]), int(b[2]), int(b[3]), int(c.neighbors[i]))
	}
	return nil
}

func (c *cascadeDetector) close() {
	if c.p != nil {
		C.ifc_cascade_close(c.p)
		c.p = nil
	}
}
