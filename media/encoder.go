package media

// #include "av.h"
import "C"

import (
	"fmt"
	"unsafe"

	"github.com/imageflowcanvas/imageflow/media/h26x"
)

// EncodedAU is one H264 access unit out of the Encoder. NALUs alias the
// encoder's buffer and stay valid until its next call.
type EncodedAU struct {
	NALUs    [][]byte
	Keyframe bool
	// PTS is the value given with the picture (90 kHz units suit RTP).
	PTS int64
}

// EncoderConfig tunes NewH264EncoderConfig beyond NewH264Encoder's arguments.
type EncoderConfig struct {
	Width, Height int
	FPS           int
	// Bitrate in bits per second.
	Bitrate int
	// GOP is the keyframe interval in frames.
	GOP int
	// Preset is an x264 preset; "veryfast" when empty.
	Preset string
	// Threads for x264; 0 lets it choose.
	Threads int
}

// Encoder encodes pictures to H264 with libx264 (zerolatency: no B-frames, one
// access unit out per picture in; SPS/PPS in-band before every IDR). It is not
// safe for concurrent use.
type Encoder struct {
	e      *C.ifc_enc
	cfg    EncoderConfig
	buf    []byte
	au     EncodedAU
	forced bool
}

// NewH264Encoder opens an H264 encoder for width×height pictures (even
// numbers) at fps, bitrate bits/s and a keyframe every gop pictures.
func NewH264Encoder(width, height, fps, bitrate, gop int) (*Encoder, error) {
	return NewH264EncoderConfig(EncoderConfig{Width: width, Height: height, FPS: fps, Bitrate: bitrate, GOP: gop})
}

// NewH264EncoderConfig opens an H264 encoder from a full configuration.
func NewH264EncoderConfig(cfg EncoderConfig) (*Encoder, error) {
	libavInit()
	if cfg.Width < 2 || cfg.Height < 2 || cfg.Width%2 != 0 || cfg.Height%2 != 0 || cfg.Width > 8192 || cfg.Height > 8192 {
		return nil, fmt.Errorf("%w: %dx%d (even, 2..8192)", ErrBadSize, cfg.Width, cfg.Height)
	}
	if cfg.FPS <= 0 {
		cfg.FPS = 30
	}
	if cfg.Bitrate <= 0 {
		cfg.Bitrate = 2_000_000
	}
	if cfg.GOP <= 0 {
		cfg.GOP = cfg.FPS * 2
	}
	if cfg.Preset == "" {
		cfg.Preset = "veryfast"
	}
	preset := C.CString(cfg.Preset)
	defer C.free(unsafe.Pointer(preset))
	var e *C.ifc_enc
	r := C.ifc_enc_open(&e, C.int(cfg.Width), C.int(cfg.Height), C.int(cfg.FPS), C.int(cfg.Bitrate), C.int(cfg.GOP), preset, C.int(cfg.Threads))
	if err := averr("open libx264", r); err != nil {
		return nil, err
	}
	return &Encoder{e: e, cfg: cfg}, nil
}

// Size is the encoded picture size.
func (e *Encoder) Size() (w, h int) { return e.cfg.Width, e.cfg.Height }

// ForceKeyframe makes the next picture an IDR (a new viewer joined, a loop
// restarted).
func (e *Encoder) ForceKeyframe() { e.forced = true }

func (e *Encoder) key() C.int {
	if e.forced {
		e.forced = false
		return 1
	}
	return 0
}

// EncodeBGR encodes a packed BGR24 picture of w×h (scaled to the encoder size
// when different) and returns the access unit it produced, or nil while the
// encoder holds it.
func (e *Encoder) EncodeBGR(bgr []byte, w, h, stride int, pts int64) (*EncodedAU, error) {
	if e.e == nil {
		return nil, ErrClosed
	}
	if stride == 0 {
		stride = w * 3
	}
	if w <= 0 || h <= 0 || stride < w*3 || len(bgr) < stride*(h-1)+w*3 {
		return nil, fmt.Errorf("%w: %dx%d stride %d in %d bytes", ErrBadSize, w, h, stride, len(bgr))
	}
	r := C.ifc_enc_send_bgr(e.e, (*C.uint8_t)(unsafe.Pointer(&bgr[0])), C.int(stride), C.int(w), C.int(h), C.int64_t(pts), e.key())
	if err := averr("encode", r); err != nil {
		return nil, err
	}
	return e.receive()
}

// EncodeYUV420 encodes a planar I420 picture of w×h with tightly packed
// planes (Y w×h, then U and V (w/2)×(h/2)).
func (e *Encoder) EncodeYUV420(yuv []byte, w, h int, pts int64) (*EncodedAU, error) {
	if e.e == nil {
		return nil, ErrClosed
	}
	cw, ch := (w+1)/2, (h+1)/2
	if w <= 0 || h <= 0 || len(yuv) < w*h+2*cw*ch {
		return nil, fmt.Errorf("%w: %dx%d in %d bytes", ErrBadSize, w, h, len(yuv))
	}
	y := unsafe.Pointer(&yuv[0])
	u := unsafe.Pointer(&yuv[w*h])
	v := unsafe.Pointer(&yuv[w*h+cw*ch])
	r := C.ifc_enc_send_yuv(e.e, (*C.uint8_t)(y), (*C.uint8_t)(u), (*C.uint8_t)(v), C.int(w), C.int(cw), C.int(cw), C.int(w), C.int(h), C.int64_t(pts), e.key())
	if err := averr("encode", r); err != nil {
		return nil, err
	}
	return e.receive()
}

// EncodePicture encodes the decoder's newest picture without copying it
// through Go (the re-encode path of file and USB capture).
func (e *Encoder) EncodePicture(d *Decoder, pts int64) (*EncodedAU, error) {
	if e.e == nil || d.d == nil {
		return nil, ErrClosed
	}
	if d.d.has_last == 0 {
		return nil, ErrNoPicture
	}
	if err := averr("encode", C.ifc_enc_send_frame(e.e, d.d.last, C.int64_t(pts), e.key())); err != nil {
		return nil, err
	}
	return e.receive()
}

// Flush asks the encoder for the access units it still holds; call Receive
// until it returns nil.
func (e *Encoder) Flush() error {
	if e.e == nil {
		return ErrClosed
	}
	return averr("flush", C.ifc_enc_flush(e.e))
}

// Receive returns the next waiting access unit, or nil.
func (e *Encoder) Receive() (*EncodedAU, error) {
	if e.e == nil {
		return nil, ErrClosed
	}
	return e.receive()
}

func (e *Encoder) receive() (*EncodedAU, error) {
	r := C.ifc_enc_receive(e.e)
	if r < 0 {
		return nil, averr("encode", r)
	}
	if r == 0 {
		return nil, nil
	}
	p := e.e.pkt
	e.buf = append(e.buf[:0], unsafe.Slice((*byte)(unsafe.Pointer(p.data)), int(p.size))...)
	e.au.NALUs = h26x.SplitAnnexB(e.au.NALUs[:0], e.buf)
	e.au.Keyframe = e.e.out_key != 0
	e.au.PTS = int64(e.e.out_pts)
	return &e.au, nil
}

// Close frees the encoder; a second call does nothing.
func (e *Encoder) Close() {
	if e.e != nil {
		C.ifc_enc_close(e.e)
		e.e = nil
	}
}
