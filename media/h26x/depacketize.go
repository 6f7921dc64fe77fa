package h26x

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph265"
	"github.com/pion/rtp"
)

// ErrJoinedMidFragment reports a continuation of a fragmented NAL unit whose
// start was never seen: normal when joining a running stream.
var ErrJoinedMidFragment = errors.New("h26x: fragment without its start")

// AccessUnit is one picture assembled from RTP packets. NALUs is a new
// slice per unit, the caller's to keep; its NAL units alias the packet
// payloads unless the depacketizer copies them (CopyPayload).
type AccessUnit struct {
	NALUs [][]byte
	// Keyframe: decoding can start here; the parameter sets are in NALUs.
	Keyframe bool
	// RTPTimestamp is the timestamp of the unit's packets.
	RTPTimestamp uint32
	// ArrivalUnixNano is when the unit's first packet arrived (with
	// Depacketizer.ArrivalTime).
	ArrivalUnixNano int64
	// SPSChanged is set when this unit brought a new SPS (the picture size
	// may have changed: Depacketizer.Size).
	SPSChanged bool
}

// rtpDecoder is rtph264.Decoder or rtph265.Decoder.
type rtpDecoder interface {
	Decode(pkt *rtp.Packet) ([][]byte, error)
}

// Depacketizer turns the RTP packets of one H264 (RFC 6184) or H265 (RFC
// 7798) track into access units: gortsplib's decoders undo the payload
// format, the depacketizer drops delimiters and filler, keeps the parameter
// sets (from the SDP and in band) and puts them in front of every keyframe,
// so a reader can start at any keyframe. Not safe for concurrent use.
type Depacketizer struct {
	// Codec of the track.
	Codec Codec
	// PacketizationMode of an H264 track (RFC 6184 §5.4), from the SDP.
	PacketizationMode int
	// MaxDONDiff of an H265 track (RFC 7798 §7.1), from the SDP.
	MaxDONDiff int
	// CopyPayload is for callers that reuse packet buffers: payloads are
	// copied before the decoder keeps references to them.
	CopyPayload bool
	// ArrivalTime records when each unit's first packet arrived; it costs a
	// clock read per unit.
	ArrivalTime bool
	// ReuseBuffers joins the fragmented NAL units of an H264 track into a
	// buffer reused from one access unit to the next instead of a new
	// allocation per unit: the NAL units of a returned unit are then valid
	// only until the next Push. Ignored with CopyPayload and for H265.
	ReuseBuffers bool

	dec rtpDecoder
	// fua joins FU-A fragments (ReuseBuffers); nil otherwise.
	fua    *fuaJoiner
	params paramSets
	// frag is the copy of the payloads of the fragmented NAL unit under
	// assembly (CopyPayload); the decoder joins them into a new unit.
	frag []byte
	// pkt is the packet with its payload copied (CopyPayload), kept here so
	// the copy does not escape to the heap per packet.
	pkt rtp.Packet

	// The decoder closes an access unit on a timestamp change (cameras
	// without marker bits) and returns it with the packet of the next one;
	// pending remembers the timestamp and arrival of the unit it buffers.
	pending     bool
	pendingTS   uint32
	pendingTime int64
}

// Init checks the configuration and builds the RTP decoder.
func (d *Depacketizer) Init() error {
	switch d.Codec {
	case H264:
		dec := &rtph264.Decoder{PacketizationMode: d.PacketizationMode}
		if err := dec.Init(); err != nil {
			return err
		}
		d.dec = dec
		if d.ReuseBuffers && !d.CopyPayload {
			d.fua = &fuaJoiner{start: -1}
		}
	case H265:
		dec := &rtph265.Decoder{MaxDONDiff: d.MaxDONDiff}
		if err := dec.Init(); err != nil {
			return err
		}
		d.dec = dec
	default:
		return fmt.Errorf("h26x: no depacketizer for codec %d", d.Codec)
	}
	d.params.codec = d.Codec
	return nil
}

// SetParams seeds the parameter sets, typically from the SDP; empty ones are
// ignored.
func (d *Depacketizer) SetParams(vps, sps, pps []byte) {
	for _, p := range []struct {
		k Kind
		n []byte
	}{{KindVPS, vps}, {KindSPS, sps}, {KindPPS, pps}} {
		if len(p.n) > 0 {
			d.params.set(p.k, p.n)
		}
	}
}

// Size is the picture size of the latest SPS; 0, 0 before one parsed.
func (d *Depacketizer) Size() (w, h int) { return d.params.width, d.params.height }

// Push feeds one RTP packet. It returns ok when the packet completed an
// access unit; the unit may belong to the previous timestamp when the sender
// sets no marker bits. Errors are malformed or missing packets
// (ErrJoinedMidFragment at the start of a stream); the depacketizer stays
// usable after them.
func (d *Depacketizer) Push(pkt *rtp.Packet) (au AccessUnit, ok bool, err error) {
	if !d.pending && d.ArrivalTime {
		d.pendingTime = time.Now().UnixNano()
	}
	if d.CopyPayload {
		d.pkt = *pkt
		d.pkt.Payload = d.copyPayload(pkt.Payload)
		pkt = &d.pkt
	}
	var nalus [][]byte
	decPkt := pkt
	if d.fua != nil {
		if !d.pending {
			// Nothing under assembly, and the caller is done with the
			// previous unit: the joined units may be overwritten.
			d.fua.reset()
		}
		decPkt, err = d.fua.push(pkt)
	}
	if err == nil {
		nalus, err = d.dec.Decode(decPkt)
	}
	switch {
	case err == nil:
	case errors.Is(err, rtph264.ErrMorePacketsNeeded), errors.Is(err, rtph265.ErrMorePacketsNeeded):
		if !d.pending {
			d.pending, d.pendingTS = true, pkt.Timestamp
		}
		return AccessUnit{}, false, nil
	case errors.Is(err, rtph264.ErrNonStartingPacketAndNoPrevious), errors.Is(err, rtph265.ErrNonStartingPacketAndNoPrevious):
		return AccessUnit{}, false, ErrJoinedMidFragment
	default:
		return AccessUnit{}, false, err
	}
	ts, arrival := pkt.Timestamp, d.pendingTime
	if d.pending && pkt.Timestamp != d.pendingTS {
		// The decoder closed the previous unit on a timestamp change and
		// kept this packet as the start of the next one.
		ts = d.pendingTS
		d.pending, d.pendingTS = true, pkt.Timestamp
		if d.ArrivalTime {
			d.pendingTime = time.Now().UnixNano()
		}
	} else {
		d.pending = false
	}
	au, ok = d.assemble(nalus)
	au.RTPTimestamp, au.ArrivalUnixNano = ts, arrival
	return au, ok, nil
}

// copyPayload copies the payloads the decoder may keep past this call. A
// fragment (FU-A, H265 FU) goes to a buffer reused from one fragmented unit
// to the next: the decoder forgets earlier fragments at each start and copies
// them out when the unit ends. Other payloads become NAL units of the access
// unit, so they get their own copy.
func (d *Depacketizer) copyPayload(p []byte) []byte {
	fu, start := false, false
	switch d.Codec {
	case H264:
		fu = len(p) >= 2 && p[0]&0x1f == 28
		start = fu && p[1]&0x80 != 0
	case H265:
		fu = len(p) >= 3 && (p[0]>>1)&0x3f == 49
		start = fu && p[2]&0x80 != 0
	}
	if !fu {
		return bytes.Clone(p)
	}
	if start {
		d.frag = d.frag[:0]
	}
	// Appending may move frag; earlier fragments keep pointing at the old
	// array, which is never written again.
	n := len(d.frag)
	d.frag = append(d.frag, p...)
	return d.frag[n:len(d.frag):len(d.frag)]
}

// assemble builds one access unit from the NAL units the decoder returned:
// drops delimiters and filler, puts the parameter sets in front of every
// keyframe. ok is false when nothing is left.
func (d *Depacketizer) assemble(nalus [][]byte) (au AccessUnit, ok bool) {
	var hasVPS, hasSPS, hasPPS, irap bool
	count := 0
	for _, n := range nalus {
		if len(n) == 0 {
			continue
		}
		k := Classify(d.Codec, n)
		switch k {
		case KindVPS:
			hasVPS = true
		case KindSPS:
			hasSPS = true
		case KindPPS:
			hasPPS = true
		case KindAUD, KindFiller:
			continue
		case KindIRAP:
			irap = true
		}
		if d.params.set(k, n) {
			au.SPSChanged = true
		}
		count++
	}
	if count == 0 {
		return au, false
	}
	// A keyframe the reader cannot decode (parameter sets never seen) is not
	// advertised as one, so readers wait for a usable one.
	key := irap && d.params.complete()
	inBand := hasSPS && hasPPS && (hasVPS || d.Codec != H265)
	rebuild := key && !inBand
	// The decoder hands over a new slice per unit: it is filtered in place
	// unless the parameter sets go in front.
	out := nalus[:0]
	if rebuild {
		// Rebuild the whole set in order: a decoder parses a PPS against
		// its SPS, so a lone PPS in front of an in-band SPS would fail.
		out = make([][]byte, 0, count+3)
		if d.Codec == H265 {
			out = append(out, d.params.vps)
		}
		out = append(out, d.params.sps, d.params.pps)
	}
	for _, n := range nalus {
		if len(n) == 0 {
			continue
		}
		switch Classify(d.Codec, n) {
		case KindAUD, KindFiller:
			continue
		case KindVPS, KindSPS, KindPPS:
			if rebuild {
				continue
			}
		}
		out = append(out, n)
	}
	au.NALUs, au.Keyframe = out, key
	return au, true
}

// paramSets keeps the latest parameter sets of a track, from the SDP and from
// in-band NAL units, so every keyframe can carry them.
type paramSets struct {
	codec         Codec
	vps, sps, pps []byte
	width, height int
}

// set stores a copy of n when it differs (the packet buffer n lives in is
// not ours to keep); it reports whether the SPS changed.
func (p *paramSets) set(kind Kind, n []byte) bool {
	var dst *[]byte
	switch kind {
	case KindVPS:
		dst = &p.vps
	case KindSPS:
		dst = &p.sps
	case KindPPS:
		dst = &p.pps
	default:
		return false
	}
	if bytes.Equal(*dst, n) {
		return false
	}
	*dst = append((*dst)[:0:0], n...)
	if kind != KindSPS {
		return false
	}
	p.width, p.height = SPSSize(p.codec, n)
	return true
}

func (p *paramSets) complete() bool {
	if p.sps == nil || p.pps == nil {
		return false
	}
	return p.codec != H265 || p.vps != nil
}
