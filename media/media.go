// Package media decodes, encodes and demuxes video through FFmpeg's
// libavcodec, libavformat and libswscale (cgo), and splits H264/H265 Annex-B
// streams into NAL units. Every hot path keeps its packets, frames, scaler and
// output buffers across calls, so steady-state decoding allocates nothing in
// Go per frame.
package media

// #cgo pkg-config: libavcodec libavutil libswscale libavformat libavdevice
// #include "av.h"
import "C"

import (
	"errors"
	"fmt"
	"sync"
	"unsafe"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// Errors returned by the package; libav errors are wrapped in *AVError.
var (
	ErrUnsupportedCodec = errors.New("media: unsupported codec")
	ErrClosed           = errors.New("media: closed")
	ErrNoPicture        = errors.New("media: no decoded picture yet")
	ErrCorrupt          = errors.New("media: corrupt picture dropped")
	ErrBadSize          = errors.New("media: bad picture size")
	ErrShortBuffer      = errors.New("media: output buffer too small")
)

// AVError is an error code returned by libav.
type AVError struct {
	Op   string
	Code int
}

func (e *AVError) Error() string {
	buf := make([]byte, 128)
	C.av_strerror(C.int(e.Code), (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)))
	n := 0
	for n < len(buf) && buf[n] != 0 {
		n++
	}
	return fmt.Sprintf("media: %s: %s (%d)", e.Op, buf[:n], e.Code)
}

// IsEOF reports whether err is libav's end of file.
func IsEOF(err error) bool {
	var ae *AVError
	return errors.As(err, &ae) && ae.Code == int(C.AVERROR_EOF)
}

func averr(op string, code C.int) error {
	if code >= 0 {
		return nil
	}
	return &AVError{Op: op, Code: int(code)}
}

var initOnce sync.Once

// libavInit silences libav's own logging: damaged camera streams would
// otherwise write to stderr on every broken slice. Errors reach callers as
// return values instead.
func libavInit() {
	initOnce.Do(func() { C.ifc_av_init(C.AV_LOG_QUIET) })
}

// SetLibavLogLevel changes libav's stderr log level (e.g. 16 for errors, 32
// for info) when debugging a source.
func SetLibavLogLevel(level int) {
	libavInit()
	C.av_log_set_level(C.int(level))
}

func codecID(c busv1.Codec) (C.int, error) {
	switch c {
	case busv1.Codec_CODEC_H264:
		return C.AV_CODEC_ID_H264, nil
	case busv1.Codec_CODEC_H265:
		return C.AV_CODEC_ID_HEVC, nil
	case busv1.Codec_CODEC_VP8:
		return C.AV_CODEC_ID_VP8, nil
	case busv1.Codec_CODEC_VP9:
		return C.AV_CODEC_ID_VP9, nil
	case busv1.Codec_CODEC_AV1:
		return C.AV_CODEC_ID_AV1, nil
	case busv1.Codec_CODEC_MJPEG:
		return C.AV_CODEC_ID_MJPEG, nil
	}
	return 0, fmt.Errorf("%w: %v", ErrUnsupportedCodec, c)
}

func busCodec(id C.int) busv1.Codec {
	switch id {
	case C.AV_CODEC_ID_H264:
		return busv1.Codec_CODEC_H264
	case C.AV_CODEC_ID_HEVC:
		return busv1.Codec_CODEC_H265
	case C.AV_CODEC_ID_VP8:
		return busv1.Codec_CODEC_VP8
	case C.AV_CODEC_ID_VP9:
		return busv1.Codec_CODEC_VP9
	case C.AV_CODEC_ID_AV1:
		return busv1.Codec_CODEC_AV1
	case C.AV_CODEC_ID_MJPEG:
		return busv1.Codec_CODEC_MJPEG
	}
	return busv1.Codec_CODEC_UNSPECIFIED
}

// ScaledSize is the output size for a source of sw×sh scaled to width:
// the height keeps the aspect ratio and both are even (chroma-subsampled
// encoders and most consumers need even sizes). width <= 0 keeps the source
// width.
func ScaledSize(sw, sh, width int) (w, h int) {
	if sw <= 0 || sh <= 0 {
		return 0, 0
	}
	if width <= 0 {
		width = sw
	}
	w = width &^ 1
	h = int((int64(sh)*int64(w) + int64(sw)/2) / int64(sw))
	h &^= 1
	if w < 2 {
		w = 2
	}
	if h < 2 {
		h = 2
	}
	return w, h
}
