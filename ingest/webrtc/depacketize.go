package webrtc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	mch264 "github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	mcvp9 "github.com/bluenviron/mediacommon/v2/pkg/codecs/vp9"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// Limits on what one access unit may hold: a sender cannot make us buffer
// without bound by never setting the marker bit.
const (
	maxAUSize  = 8 << 20
	maxAUNALUs = 512
)

var (
	errEmptyPayload = errors.New("empty RTP payload")
	errAUTooLarge   = errors.New("access unit too large")
)

// Depacketizer rebuilds access units from the RTP packets of one video track
// (RFC 6184 for H264: single NALU, STAP-A, FU-A; RFC 7741 VP8; VP9 draft).
// An access unit ends at the marker bit or at a timestamp change. After a
// sequence gap the broken access unit is dropped and everything up to the next
// keyframe too, so consumers never see a broken reference chain; NeedKeyframe
// then tells the caller to send a PLI.
type Depacketizer struct {
	codec busv1.Codec

	started  bool
	ts       uint32
	lastSeq  uint16
	haveSeq  bool
	broken   bool
	waitKey  bool
	needKey  bool
	size     int
	nalus    [][]byte // H264: NALUs of the current AU
	frag     []byte   // H264: FU-A under assembly
	inFrag   bool
	frame    []byte // VP8/VP9: frame under assembly
	keyStart bool   // VP8/VP9: first packet said keyframe
	vp8      codecs.VP8Packet
	vp9      codecs.VP9Packet

	// Parameter sets last seen, repeated before IDRs that lack them.
	sps, pps []byte
	width    int
	height   int
	// sizeChanged is set when width/height changed on the last keyframe.
	sizeChanged bool
}

// NewDepacketizer returns a depacketizer for H264, VP8 or VP9.
func NewDepacketizer(codec busv1.Codec) (*Depacketizer, error) {
	switch codec {
	case busv1.Codec_CODEC_H264, busv1.Codec_CODEC_VP8, busv1.Codec_CODEC_VP9:
	default:
		return nil, fmt.Errorf("%w: no depacketizer for %v", ErrCodecNotSupported, codec)
	}
	return &Depacketizer{codec: codec, waitKey: true}, nil
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
	var out *busv1.AccessUnit
	if d.started && p.Timestamp != d.ts {
		// The previous AU lost its marker packet: finish what we have if it
		// is whole (H264 NALUs are self-delimiting), else it is dropped.
		if d.codec == busv1.Codec_CODEC_H264 && !d.inFrag {
			out = d.finish()
		} else {
			d.markBroken()
			d.reset()
		}
	}
	if d.haveSeq && p.SequenceNumber != d.lastSeq+1 {
		d.markBroken()
	}
	d.haveSeq, d.lastSeq = true, p.SequenceNumber
	if !d.started {
		d.started, d.ts = true, p.Timestamp
	}
	var err error
	switch d.codec {
	case busv1.Codec_CODEC_H264:
		err = d.pushH264(p.Payload)
	case busv1.Codec_CODEC_VP8:
		err = d.pushVP8(p.Payload)
	case busv1.Codec_CODEC_VP9:
		err = d.pushVP9(p.Payload)
	}
	if err != nil {
		d.markBroken()
	}
	if p.Marker {
		if au := d.finish(); au != nil {
			out = au
		}
	}
	return out, err
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
	d.nalus = d.nalus[:0]
	d.frag = d.frag[:0]
	d.inFrag = false
	d.frame = d.frame[:0]
	d.keyStart = false
}

func (d *Depacketizer) addSize(n int) error {
	d.size += n
	if d.size > maxAUSize || len(d.nalus) > maxAUNALUs {
		return errAUTooLarge
	}
	return nil
}

func (d *Depacketizer) pushH264(payload []byte) error {
	if len(payload) == 0 {
		return errEmptyPayload
	}
	switch typ := payload[0] & 0x1f; {
	case typ >= 1 && typ <= 23:
		if d.inFrag {
			return errors.New("h264: NALU inside an unfinished FU-A")
		}
		d.nalus = append(d.nalus, bytes.Clone(payload))
		return d.addSize(len(payload))
	case typ == 24: // STAP-A
		if d.inFrag {
			return errors.New("h264: STAP-A inside an unfinished FU-A")
		}
		b := payload[1:]
		for len(b) > 0 {
			if len(b) < 2 {
				return errors.New("h264: truncated STAP-A")
			}
			n := int(binary.BigEndian.Uint16(b))
			b = b[2:]
			if n == 0 || n > len(b) {
				return errors.New("h264: bad STAP-A NALU size")
			}
			d.nalus = append(d.nalus, bytes.Clone(b[:n]))
			if err := d.addSize(n); err != nil {
				return err
			}
			b = b[n:]
		}
		return nil
	case typ == 28: // FU-A
		if len(payload) < 3 {
			return errors.New("h264: short FU-A")
		}
		start, end := payload[1]&0x80 != 0, payload[1]&0x40 != 0
		if start {
			if d.inFrag {
				return errors.New("h264: FU-A start inside an unfinished FU-A")
			}
			d.inFrag = true
			d.frag = append(d.frag[:0], payload[0]&0xe0|payload[1]&0x1f)
		} else if !d.inFrag {
			return errors.New("h264: FU-A continuation without start")
		}
		d.frag = append(d.frag, payload[2:]...)
		if err := d.addSize(len(payload) - 2); err != nil {
			return err
		}
		if end {
			d.nalus = append(d.nalus, bytes.Clone(d.frag))
			d.inFrag = false
		}
		return nil
	default:
		return fmt.Errorf("h264: unsupported NALU type %d", typ)
	}
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

// finish closes the current access unit; nil when it is broken, empty or
// still waiting for a keyframe.
func (d *Depacketizer) finish() *busv1.AccessUnit {
	defer d.reset()
	if d.broken || d.inFrag {
		return nil
	}
	au := &busv1.AccessUnit{Codec: d.codec, RtpTimestamp: d.ts, ClockRate: 90000}
	switch d.codec {
	case busv1.Codec_CODEC_H264:
		if !d.finishH264(au) {
			return nil
		}
	default:
		if len(d.frame) == 0 {
			return nil
		}
		au.Data = bytes.Clone(d.frame)
		au.Keyframe = d.keyStart
		if au.Keyframe {
			d.frameSize(au.Data)
		}
	}
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

func (d *Depacketizer) finishH264(au *busv1.AccessUnit) bool {
	idr, hasSPS, hasPPS := false, false, false
	n := 0
	for _, nalu := range d.nalus {
		switch nalu[0] & 0x1f {
		case 5:
			idr = true
		case 7:
			hasSPS = true
			if !bytes.Equal(nalu, d.sps) {
				d.sps = bytes.Clone(nalu)
				d.spsSize()
			}
		case 8:
			hasPPS = true
			d.pps = bytes.Clone(nalu)
		case 9, 12:
			// Access unit delimiters and filler data carry nothing a
			// consumer needs; the egress payloader drops them anyway.
			continue
		}
		d.nalus[n] = nalu
		n++
	}
	nalus := d.nalus[:n]
	if len(nalus) == 0 {
		return false
	}
	if idr && (!hasSPS || !hasPPS) {
		if d.sps == nil || d.pps == nil {
			// An IDR without parameter sets cannot start a decoder.
			idr = false
		} else {
			out := make([][]byte, 0, len(nalus)+2)
			if !hasSPS {
				out = append(out, d.sps)
			}
			if !hasPPS {
				out = append(out, d.pps)
			}
			nalus = append(out, nalus...)
		}
	}
	au.Keyframe = idr
	au.Nalus = append([][]byte(nil), nalus...)
	return true
}

func (d *Depacketizer) spsSize() {
	var sps mch264.SPS
	if err := sps.Unmarshal(d.sps); err != nil {
		return
	}
	d.setSize(sps.Width(), sps.Height())
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
