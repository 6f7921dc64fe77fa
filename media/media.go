// Package media decodes, encodes and demuxes video through FFmpeg's
// libavcodec, libavformat, libswscale and libswresample (cgo: audio to Opus
// for WebRTC viewers); media/h26x handles H264/H265
// bitstreams. It imports nothing of the project: mediabus converts its types
// to the bus's at the edges. Every hot path keeps its packets, frames, scaler and
// output buffers across calls, so steady-state decoding allocates nothing in
// Go per frame.
package media

// #cgo pkg-config: libavcodec libavutil libswscale libavformat
// #cgo LDFLAGS: -ldl
// #include "av.h"
import "C"

import (
	"errors"
	"fmt"
	"sync"
	"unsafe"
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

var (
	devicesOnce sync.Once
	devicesErr  error
)

// ErrNoDevices is returned when libavdevice, needed for device input formats
// (video4linux2, lavfi), cannot be loaded.
var ErrNoDevices = errors.New("media: libavdevice cannot be loaded")

// loadDevices registers libavdevice's input formats on first use.
func loadDevices() error {
	devicesOnce.Do(func() {
		if C.ifc_av_load_devices() != 0 {
			devicesErr = ErrNoDevices
		}
	})
	return devicesErr
}

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

// Codec is a video codec media decodes or demuxes.
type Codec uint8

// The codecs media knows; CodecUnknown is any other.
const (
	CodecUnknown Codec = iota
	CodecH264
	CodecH265
	CodecVP8
	CodecVP9
	CodecAV1
	CodecMJPEG
)

var codecNames = [...]string{"unknown", "H264", "H265", "VP8", "VP9", "AV1", "MJPEG"}

// String names the codec.
func (c Codec) String() string {
	if int(c) < len(codecNames) {
		return codecNames[c]
	}
	return codecNames[0]
}

func codecID(c Codec) (C.int, error) {
	switch c {
	case CodecH264:
		return C.AV_CODEC_ID_H264, nil
	case CodecH265:
		return C.AV_CODEC_ID_HEVC, nil
	case CodecVP8:
		return C.AV_CODEC_ID_VP8, nil
	case CodecVP9:
		return C.AV_CODEC_ID_VP9, nil
	case CodecAV1:
		return C.AV_CODEC_ID_AV1, nil
	case CodecMJPEG:
		return C.AV_CODEC_ID_MJPEG, nil
	}
	return 0, fmt.Errorf("%w: %v", ErrUnsupportedCodec, c)
}

func codecOf(id C.int) Codec {
	switch id {
	case C.AV_CODEC_ID_H264:
		return CodecH264
	case C.AV_CODEC_ID_HEVC:
		return CodecH265
	case C.AV_CODEC_ID_VP8:
		return CodecVP8
	case C.AV_CODEC_ID_VP9:
		return CodecVP9
	case C.AV_CODEC_ID_AV1:
		return CodecAV1
	case C.AV_CODEC_ID_MJPEG:
		return CodecMJPEG
	}
	return CodecUnknown
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
