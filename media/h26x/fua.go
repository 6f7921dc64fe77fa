package h26x

import (
	"errors"
	"fmt"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/rtp"
)

// fuaArenaSize is the first capacity of the reassembly arena: a few 1080p
// P-frames, so most streams never grow it.
const fuaArenaSize = 256 << 10

// fuaJoiner reassembles H264 FU-A fragments (RFC 6184 §5.8) into an arena
// reused from one access unit to the next, where rtph264.Decoder allocates
// every fragmented NAL unit anew; the joined unit then reaches the decoder
// as a single NAL unit packet, so framing, Annex-B detection and the access
// unit limits stay the decoder's. It checks what the decoder checks on
// fragments (start seen, no sequence gap, size) with the same outcome.
type fuaJoiner struct {
	// arena holds the joined NAL units of the units being assembled. Slices
	// handed out point into it; it is only rewritten from the start when
	// none of them is referenced any more (reset), and a full arena is
	// replaced, never written over.
	arena []byte
	// start is where the fragmented unit under assembly begins in arena;
	// -1 when none is.
	start   int
	nextSeq uint16
	// seen: a packet other than a non-starting fragment arrived, so a lone
	// fragment is a loss, not a join in the middle of the stream.
	seen bool
	// pkt is the single NAL unit packet handed to the decoder, kept here
	// so it does not escape to the heap per unit.
	pkt rtp.Packet
}

// reset lets the arena be overwritten: the caller guarantees that no NAL
// unit joined before is referenced (the decoder holds no packets and the
// last access unit was consumed).
func (j *fuaJoiner) reset() {
	if j.start < 0 {
		j.arena = j.arena[:0]
	}
}

// push takes pkt when it is an FU-A fragment. It returns the packet to give
// the decoder: pkt itself for any other packet, the joined NAL unit as a
// single NAL unit packet when pkt ended a fragmented unit, nil with
// rtph264.ErrMorePacketsNeeded while one is incomplete, nil with an error
// for a broken fragment.
func (j *fuaJoiner) push(pkt *rtp.Packet) (*rtp.Packet, error) {
	p := pkt.Payload
	if len(p) < 1 || p[0]&0x1f != byte(h264.NALUTypeFUA) {
		// The decoder drops a unit under assembly on any other packet.
		j.start = -1
		j.seen = true
		return pkt, nil
	}
	if len(p) < 2 {
		return nil, errors.New("invalid FU-A packet (invalid size)")
	}
	first, last := p[1]&0x80 != 0, p[1]&0x40 != 0
	switch {
	case first:
		j.begin(len(p) - 1)
		j.arena = append(j.arena, p[0]&0x60|p[1]&0x1f)
		j.seen = true
	case j.start < 0:
		if !j.seen {
			return nil, rtph264.ErrNonStartingPacketAndNoPrevious
		}
		return nil, errors.New("invalid FU-A packet (non-starting)")
	case pkt.SequenceNumber != j.nextSeq:
		j.start = -1
		return nil, errors.New("discarding frame since a RTP packet is missing")
	case len(j.arena)-j.start+len(p)-2 > h264.MaxAccessUnitSize:
		size := len(j.arena) - j.start + len(p) - 2
		j.start = -1
		return nil, fmt.Errorf("NALU size (%d) is too big, maximum is %d", size, h264.MaxAccessUnitSize)
	}
	j.arena = append(j.arena, p[2:]...)
	j.nextSeq = pkt.SequenceNumber + 1
	if !last {
		return nil, rtph264.ErrMorePacketsNeeded
	}
	j.pkt.Header = pkt.Header
	// A full slice expression: nothing appended later lands in this unit.
	j.pkt.Payload = j.arena[j.start:len(j.arena):len(j.arena)]
	j.start = -1
	return &j.pkt, nil
}

// begin opens a unit of about size bytes. An arena too small for it is
// replaced rather than grown in place, so units joined before keep their
// bytes.
func (j *fuaJoiner) begin(size int) {
	if cap(j.arena)-len(j.arena) < size {
		n := max(fuaArenaSize, 2*cap(j.arena), 2*size)
		if len(j.arena) == 0 {
			n = max(fuaArenaSize, cap(j.arena), 2*size)
		}
		j.arena = make([]byte, 0, n)
	}
	j.start = len(j.arena)
}
