package media

// #include "av.h"
import "C"

import (
	"fmt"
	"unsafe"

	"github.com/imageflowcanvas/imageflow/media/h26x"
)

// SkipMode says which pictures the decoder may leave undecoded, for sampling
// rates well below the camera's frame rate.
type SkipMode int

// Skip modes, from decoding everything to decoding keyframes only.
const (
	// SkipNone decodes every picture.
	SkipNone SkipMode = iota
	// SkipNonRef drops pictures no other picture references (AVDISCARD_NONREF):
	// B-frames in most streams; the reference chain stays intact.
	SkipNonRef
	// SkipNonKey decodes keyframes only (AVDISCARD_NONKEY); Decode does not
	// even hand other access units to libavcodec.
	SkipNonKey
)

func (m SkipMode) String() string {
	switch m {
	case SkipNone:
		return "none"
	case SkipNonRef:
		return "nonref"
	case SkipNonKey:
		return "nonkey"
	}
	return fmt.Sprintf("SkipMode(%d)", int(m))
}

// Picture describes the newest decoded picture.
type Picture struct {
	Width, Height int
	// PTS is the value passed with the access unit that produced the picture
	// (pictures come out in presentation order, so callers use it as a tag to
	// find their own timestamps).
	PTS      int64
	Keyframe bool
}

// Decoder decodes one video stream. It is not safe for concurrent use.
type Decoder struct {
	d     *C.ifc_dec
	codec Codec
	skip  SkipMode
	annex []byte // reusable Annex-B buffer for NAL unit input
}

// NewDecoder opens a decoder for codec (H264, H265, VP8, VP9, AV1, MJPEG)
// with threads decoding threads (0 lets libavcodec choose).
func NewDecoder(codec Codec, threads int) (*Decoder, error) {
	libavInit()
	id, err := codecID(codec)
	if err != nil {
		return nil, err
	}
	var d *C.ifc_dec
	if err := averr("open decoder", C.ifc_dec_open(&d, id, C.int(threads))); err != nil {
		return nil, err
	}
	return &Decoder{d: d, codec: codec}, nil
}

// Codec is the codec the decoder was opened for.
func (d *Decoder) Codec() Codec { return d.codec }

// SetSkip changes which pictures are decoded. Leaving SkipNonKey for a
// weaker mode only makes sense at a keyframe (the skipped pictures were
// references); callers switch there.
func (d *Decoder) SetSkip(m SkipMode) {
	if d.d == nil {
		return
	}
	d.skip = m
	discard := C.AVDISCARD_DEFAULT
	switch m {
	case SkipNonRef:
		discard = C.AVDISCARD_NONREF
	case SkipNonKey:
		discard = C.AVDISCARD_NONKEY
	}
	C.ifc_dec_set_skip(d.d, C.int(discard))
}

// SetSkipLoopFilter switches the deblocking filter (H264/H265 in-loop
// filter) off or back on. Off saves a sixth to a third of the decoding time;
// the pictures then show block edges, which drift a little until the next
// keyframe, invisible once a picture is scaled down a few times for
// detection.
func (d *Decoder) SetSkipLoopFilter(skip bool) {
	if d.d == nil {
		return
	}
	discard := C.AVDISCARD_DEFAULT
	if skip {
		discard = C.AVDISCARD_ALL
	}
	C.ifc_dec_set_skip_loop_filter(d.d, C.int(discard))
}

// Skip is the current skip mode.
func (d *Decoder) Skip() SkipMode { return d.skip }

// DecodeNALUs decodes one H264/H265 access unit given as NAL units without
// start codes. It returns how many good pictures came out (0 while the
// decoder fills its reorder buffer or when the picture was skipped). A
// damaged access unit or picture returns an error; the decoder stays usable.
func (d *Decoder) DecodeNALUs(nalus [][]byte, pts int64, keyframe bool) (int, error) {
	if d.d == nil {
		return 0, ErrClosed
	}
	d.annex = h26x.AppendAnnexB(d.annex[:0], nalus)
	return d.decode(d.annex, pts, keyframe)
}

// Decode decodes one access unit given as bytes: an Annex-B stream for
// H264/H265, the frame for other codecs. See DecodeNALUs.
func (d *Decoder) Decode(data []byte, pts int64, keyframe bool) (int, error) {
	if d.d == nil {
		return 0, ErrClosed
	}
	return d.decode(data, pts, keyframe)
}

func (d *Decoder) decode(data []byte, pts int64, keyframe bool) (int, error) {
	if d.skip == SkipNonKey && !keyframe {
		return 0, nil
	}
	if len(data) == 0 {
		return 0, nil
	}
	key := C.int(0)
	if keyframe {
		key = 1
	}
	r := C.ifc_dec_decode(d.d, (*C.uint8_t)(unsafe.Pointer(&data[0])), C.int(len(data)), C.int64_t(pts), key)
	return d.result(r)
}

func (d *Decoder) result(r C.int) (int, error) {
	got, corrupt := d.d.got, d.d.corrupt
	if err := averr("decode", r); err != nil {
		return int(got), err
	}
	if corrupt > 0 {
		return int(got), fmt.Errorf("%w (%d)", ErrCorrupt, int(corrupt))
	}
	return int(got), nil
}

// Flush drains the pictures the decoder still holds (end of a file) and
// resets it so it can decode a new stream start (next loop, after a seek).
func (d *Decoder) Flush() (int, error) {
	if d.d == nil {
		return 0, ErrClosed
	}
	return d.result(C.ifc_dec_decode(d.d, nil, 0, 0, 0))
}

// DrainNext takes the next held picture out at the end of a stream (after
// the last access unit); false when none is left, and the decoder is then
// ready for a new stream. Unlike Flush it yields every picture.
func (d *Decoder) DrainNext() (bool, error) {
	if d.d == nil {
		return false, ErrClosed
	}
	r := C.ifc_dec_drain_next(d.d)
	if r < 0 {
		// Reset so the next stream starts clean.
		_, _ = d.Flush()
		return false, averr("drain", r)
	}
	return r == 1, nil
}

// decodePacket decodes the demuxer's current packet without copying it.
func (d *Decoder) decodePacket(m *Demuxer, pts int64, keyframe bool) (int, error) {
	if d.d == nil {
		return 0, ErrClosed
	}
	if d.skip == SkipNonKey && !keyframe {
		return 0, nil
	}
	return d.result(C.ifc_dec_send_packet(d.d, m.m.out, C.int64_t(pts)))
}

// Picture describes the newest good picture; ok is false before the first.
func (d *Decoder) Picture() (p Picture, ok bool) {
	if d.d == nil || d.d.has_last == 0 {
		return Picture{}, false
	}
	f := d.d.last
	return Picture{Width: int(f.width), Height: int(f.height), PTS: int64(f.pts), Keyframe: f.key_frame != 0}, true
}

// OutputSize is the BGR24 size ScaleBGR produces for width (see ScaledSize).
func (d *Decoder) OutputSize(width int) (w, h int) {
	p, ok := d.Picture()
	if !ok {
		return 0, 0
	}
	return ScaledSize(p.Width, p.Height, width)
}

// ScaleBGR converts the newest picture to packed BGR24 at width (height keeps
// the aspect ratio, both even) into dst, growing it only when too small, and
// returns the filled buffer. Pass the returned slice back next time so the
// buffer is reused.
func (d *Decoder) ScaleBGR(dst []byte, width int) (out []byte, w, h int, err error) {
	if d.d == nil {
		return dst, 0, 0, ErrClosed
	}
	w, h = d.OutputSize(width)
	if w == 0 {
		return dst, 0, 0, ErrNoPicture
	}
	n := w * h * 3
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	dst = dst[:n]
	if err := averr("scale", C.ifc_dec_scale_bgr(d.d, (*C.uint8_t)(unsafe.Pointer(&dst[0])), C.int(w*3), C.int(w), C.int(h))); err != nil {
		return dst, 0, 0, err
	}
	return dst, w, h, nil
}

// Close frees the decoder; a second call does nothing.
func (d *Decoder) Close() {
	if d.d != nil {
		C.ifc_dec_close(d.d)
		d.d = nil
	}
}
