// Package imagedecode turns untrusted encoded pictures (batch uploads, gRPC
// requests, JPEG frames on the bus) into OpenCV Mats without letting them
// crash or exhaust the process: it accepts a short list of formats, reads
// the picture size from the header and refuses oversized ones before any
// pixel is allocated, and turns OpenCV's C++ exceptions into errors.
//
// Every decode of outside data goes through Decode or DecodeInto; nothing
// else in the tree calls gocv.IMDecode.
package imagedecode

/*
#cgo !windows pkg-config: opencv4
#cgo CXXFLAGS: --std=c++11
#include <stdlib.h>
#include "imdecode.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"unsafe"

	"gocv.io/x/gocv"
)

// Errors of Decode; each message says what was wrong with the picture.
var (
	// ErrUnsupported is a picture in a format outside Formats.
	ErrUnsupported = errors.New("not an image in an accepted format (JPEG, PNG, BMP, WebP)")
	// ErrCorrupt is a picture whose header or data does not decode.
	ErrCorrupt = errors.New("corrupt image")
	// ErrTooLarge is a picture whose header claims more pixels than allowed.
	ErrTooLarge = errors.New("image too large")
)

// DefaultMaxPixels is the pixel cap when Options leaves it zero: 64
// megapixels, a 192 MB BGR picture.
const DefaultMaxPixels = 64 << 20

// MaxSide bounds each side whatever the pixel cap, below OpenCV's own
// limit (whose check throws) and the 16-bit sides of JPEG.
const MaxSide = 65535

// Options tune one decode.
type Options struct {
	// MaxPixels refuses pictures whose header claims more (0: DefaultMaxPixels).
	MaxPixels int64
	// Reduce decodes at 1/2, 1/4 or 1/8 scale (libjpeg scales a JPEG in the
	// DCT, the others are scaled after decoding); 0 or 1 is full size.
	Reduce int
}

// Check reads data's header and applies the limits of opt, so a caller can
// refuse a picture before fetching more of it or queueing it.
func Check(data []byte, opt Options) (Header, error) {
	h, err := ReadHeader(data)
	if err != nil {
		return h, err
	}
	max := opt.MaxPixels
	if max <= 0 {
		max = DefaultMaxPixels
	}
	if h.Width > MaxSide || h.Height > MaxSide || h.Pixels() > max {
		return h, fmt.Errorf("%w: %s header says %dx%d, over the limit of %d pixels and %d per side", ErrTooLarge, h.Format, h.Width, h.Height, max, MaxSide)
	}
	return h, nil
}

// Decode checks data (see Check) and decodes it into a new 8-bit BGR Mat
// the caller closes.
func Decode(data []byte, opt Options) (gocv.Mat, Header, error) {
	m := gocv.NewMat()
	h, err := DecodeInto(data, &m, opt)
	if err != nil {
		m.Close()
		return gocv.Mat{}, h, err
	}
	return m, h, nil
}

// DecodeInto checks data (see Check) and decodes it into dst, reusing dst's
// buffer when the size matches, so a stream of same-sized pictures
// allocates no pixels. dst is left unchanged or emptied on error.
func DecodeInto(data []byte, dst *gocv.Mat, opt Options) (Header, error) {
	h, err := Check(data, opt)
	if err != nil {
		return h, err
	}
	if dst == nil || dst.Ptr() == nil {
		return h, errors.New("imagedecode: DecodeInto needs a Mat made by gocv.NewMat")
	}
	if len(data) > 1<<31-1 {
		return h, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(data))
	}
	flag := gocv.IMReadColor
	switch opt.Reduce {
	case 0, 1:
	case 2:
		flag = gocv.IMReadReducedColor2
	case 4:
		flag = gocv.IMReadReducedColor4
	case 8:
		flag = gocv.IMReadReducedColor8
	default:
		return h, fmt.Errorf("imagedecode: reduce %d is not 1, 2, 4 or 8", opt.Reduce)
	}
	msg := C.ifc_imdecode((*C.uchar)(unsafe.Pointer(&data[0])), C.int(len(data)), C.int(flag), unsafe.Pointer(dst.Ptr()))
	if msg != nil {
		defer C.free(unsafe.Pointer(msg))
		return h, fmt.Errorf("%w: %s of %dx%d does not decode: %s", ErrCorrupt, h.Format, h.Width, h.Height, C.GoString(msg))
	}
	return h, nil
}
