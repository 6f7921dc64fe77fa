package webrtc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	mcvp9 "github.com/bluenviron/mediacommon/v2/pkg/codecs/vp9"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"

	"github.com/imageflowcanvas/imageflow/media/h26x"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// maxAUSize limits a VP8/VP9 frame: a sender cannot make us buffer without
// bound by never setting the marker bit (h26x has its own limits).
const maxAUSize = 8 << 20

var (
	errEmptyPayload = errors.New("empty RTP payload")
	errAUTooLarge   = errors.New("access unit too large")
)

// Depacketizer rebuilds access units from the RTP packets of one video track
// (H264 through media/h26x, which all adapters share; RFC 7741 VP8; VP9
// draft). An access unit ends at the marker bit or at a timestamp change.
// After a sequence gap the broken access unit is dropped and everything up to
// the next keyframe too, so consumers never see a broken reference chain;
// NeedKeyframe then tells the caller to send a PLI.
type Depacketizer struct {
	codec busv1.Codec

	started  bool
	ts       uint32
	lastSeq  uint16
	haveSeq  bool
	broken   bool
	brokenTS uint32 // H264: timestamp of the broken unit
	waitKey  bool
	needKey  bool
	size     int
	h26x     h26x.Depacketizer // H264: assembles, keeps parameter sets
	frame    []byte            // VP8/VP9: frame under assembly
	keyStart bool              // VP8/VP9: first packet said keyframe
	vp8      codecs.VP8Packet
	vp9      codecs.VP9Packet

	width  int
	height int
	// sizeChanged is set when width/height changed on the last keyframe.
	sizeChanged bool
}

// NewDepacketizer returns a depacketizer for H264, VP8 or VP9.
func NewDepacketizer(codec busv1.Codec) (*Depacketizer, error) {
	d := &Depacketizer{codec: codec, waitKey: true}
	switch codec {
	case busv1.Codec_CODEC_H264:
		// pion reads every packet into the same buffer.
		d.h26x = h26x.Depacketizer{Codec: h26x.H264, PacketizationMode: 1, CopyPayload: true}
		if err := d.h26x.Init(); err != nil {
			return nil, err
		}
	case busv1.Codec_CODEC_VP8, busv1.Codec_CODEC_VP9:
	default:
		return nil, fmt.Errorf("%w: no depacketizer for %v", ErrCodecNotSupported, codec)
	}
	return d, nil
}

// NeedKeyframe reports, once, that the stream lost packets (or has not sent a
// keyframe yet) and the sender should be asked for a keyframe.
func (d *Depacketizer) NeedKeyframe() bool {
	n := d.needKey
	d.needKey = false
	return n
}

// Size is the picture size learnt from the last keyframe; changed is true
// once after it changes.
func (d *Depacketizer) Size() (w, h int, changed bool) {
	c := d.sizeChanged
	d.sizeChanged = false
	return d.width, d.height, c
}

// Push takes one RTP packet and returns a finished access unit, or nil. A
// malformed packet returns an error and breaks the current access unit; the
// depacketizer stays usable.
func (d *Depacketizer) Push(p *rtp.Packet) (*busv1.AccessUnit, error) {
	gap := d.haveSeq && p.SequenceNumber != d.lastSeq+1
	d.haveSeq, d.lastSeq = true, p.SequenceNumber
	if d.codec == busv1.Codec_CODEC_H264 {
		return d.pushH264(p, gap)
	}
	if d.started && p.Timestamp != d.ts {
		// The previous frame lost its marker packet: it is dropped.
		d.markBroken()
		d.reset()
	}
	if gap {
		d.markBroken()
	}
	if !d.started {
		d.started, d.ts = true, p.Timestamp
	}
	var err error
	switch d.codec {
	case busv1.Codec_CODEC_VP8:
		err = d.pushVP8(p.Payload)
	case busv1.Codec_CODEC_VP9:
		err = d.pushVP9(p.Payload)
	}
	if err != nil {
		d.markBroken()
	}
	if p.Marker {
		return d.finish(), err
	}
	return nil, err
}

// pushH264 hands the packet to the shared assembler and applies the loss
// policy to what it returns. The assembler may return the previous access
// unit (no marker bit, closed by this packet's new timestamp): this packet's
// gap or error does not break that one, only the unit this packet belongs to.
func (d *Depacketizer) pushH264(p *rtp.Packet, gap bool) (*busv1.AccessUnit, error) {
	unit, ok, err := d.h26x.Push(p)
	var out *busv1.AccessUnit
	if ok && unit.RTPTimestamp != p.Timestamp {
		out, ok = d.finishH264(unit), false
	}
	if gap || err != nil {
		d.markBroken()
		d.brokenTS = p.Timestamp
	}
	if ok {
		out = d.finishH264(unit)
	}
	return out, err
}

// finishH264 applies the loss policy to an assembled unit; nil when it is
// broken or still waiting for a keyframe.
func (d *Depacketizer) finishH264(unit h26x.AccessUnit) *busv1.AccessUnit {
	if d.broken && unit.RTPTimestamp == d.brokenTS {
		d.broken = false
		return nil
	}
	if unit.SPSChanged {
		d.setSize(d.h26x.Size())
	}
	au := &busv1.AccessUnit{Codec: d.codec, RtpTimestamp: unit.RTPTimestamp, ClockRate: 90000, Keyframe: unit.Keyframe, Nalus: unit.NALUs}
	return d.admit(au)
}

func (d *Depacketizer) markBroken() {
	d.broken = true
	d.waitKey = true
	d.needKey = true
}

func (d *Depacketizer) reset() {
	d.started = false
	d.broken = false
	d.size = 0
	d.frame = d.frame[:0]
	d.keyStart = false
}

func (d *Depacketizer) addSize(n int) error {
	d.size += n
	if d.size > maxAUSize {
		return errAUTooLarge
	}
	return nil
}

func (d *Depacketizer) pushVP8(payload []byte) error {
	if len(payload) == 0 {
		return errEmptyPayload
	}
	data, err := d.vp8.Unmarshal(payload)
	if err != nil {
		return fmt.Errorf("vp8: %w", err)
	}
	first := d.vp8.S == 1 && d.vp8.PID == 0
	if first {
		if len(d.frame) > 0 {
			return errors.New("vp8: second frame start in one access unit")
		}
		// RFC 6386 §9.1: bit 0 of the frame tag is 0 for key frames.
		d.keyStart = len(data) > 0 && data[0]&1 == 0
	} else if len(d.frame) == 0 {
		return errors.New("vp8: continuation without frame start")
	}
	d.frame = append(d.frame, data...)
	return d.addSize(len(data))
}

func (d *Depacketizer) pushVP9(payload []byte) error {
	if len(payload) == 0 {
		return errEmptyPayload
	}
	data, err := d.vp9.Unmarshal(payload)
	if err != nil {
		return fmt.Errorf("vp9: %w", err)
	}
	if d.vp9.B {
		if len(d.frame) == 0 {
			d.keyStart = !d.vp9.P
		}
	} else if len(d.frame) == 0 {
		return errors.New("vp9: continuation without frame start")
	}
	d.frame = append(d.frame, data...)
	return d.addSize(len(data))
}

// finish closes the current VP8/VP9 frame; nil when it is broken, empty or
// still waiting for a keyframe.
func (d *Depacketizer) finish() *busv1.AccessUnit {
	defer d.reset()
	if d.broken || len(d.frame) == 0 {
		return nil
	}
	au := &busv1.AccessUnit{Codec: d.codec, RtpTimestamp: d.ts, ClockRate: 90000}
	au.Data = bytes.Clone(d.frame)
	au.Keyframe = d.keyStart
	if au.Keyframe {
		d.frameSize(au.Data)
	}
	return d.admit(au)
}

// admit drops access units until the first keyframe after a loss and puts
// the picture size on keyframes.
func (d *Depacketizer) admit(au *busv1.AccessUnit) *busv1.AccessUnit {
	if d.waitKey {
		if !au.Keyframe {
			d.needKey = true
			return nil
		}
		d.waitKey = false
	}
	if au.Keyframe && d.width > 0 {
		au.Width, au.Height = uint32(d.width), uint32(d.height)
	}
	return au
}

func (d *Depacketizer) frameSize(frame []byte) {
	switch d.codec {
	case busv1.Codec_CODEC_VP8:
		// RFC 6386 §9.1: 3-byte frame tag, start code 9d 01 2a, then 14-bit
		// width and height (2 bits of scaling each).
		if len(frame) >= 10 && frame[3] == 0x9d && frame[4] == 0x01 && frame[5] == 0x2a {
			d.setSize(int(binary.LittleEndian.Uint16(frame[6:])&0x3fff), int(binary.LittleEndian.Uint16(frame[8:])&0x3fff))
		}
	case busv1.Codec_CODEC_VP9:
		var h mcvp9.Header
		if err := h.Unmarshal(frame); err == nil && h.FrameSize != nil {
			d.setSize(h.Width(), h.Height())
		}
	}
}

func (d *Depacketizer) setSize(w, h int) {
	if w <= 0 || h <= 0 {
		return
	}
	if w != d.width || h != d.height {
		d.width, d.height, d.sizeChanged = w, h, true
	}
}
