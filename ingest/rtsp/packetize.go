package rtsp

import (
	"crypto/rand"
	"encoding/binary"

	"github.com/pion/rtp"
)

// maxRTPPayload fits an RTP packet in a 1500-byte MTU with room for SRTP,
// as gortsplib's encoders size theirs.
const maxRTPPayload = 1450

// h264Packetizer turns H.264 access units into RTP packets (RFC 6184,
// packetization mode 1: a NAL unit that fits goes alone, a larger one in
// FU-A fragments) whose payloads live in one buffer reused for every access
// unit. gortsplib's encoder allocated every packet and payload afresh, for
// every access unit of every camera a reader watches. The packets Encode
// returns are valid until its next call: the egress hands them to every
// reader session, which copies each into its write queue, before the next
// access unit.
type h264Packetizer struct {
	payloadType uint8
	seq         uint16
	arena       []byte
	pkts        []rtp.Packet
	out         []*rtp.Packet
}

func newH264Packetizer(payloadType uint8) *h264Packetizer {
	var b [2]byte
	_, _ = rand.Read(b[:]) // RFC 3550 §5.1: a random first sequence number
	return &h264Packetizer{payloadType: payloadType, seq: binary.BigEndian.Uint16(b[:])}
}

// fragments is how many FU-A packets carry a NAL unit of n bytes (its
// one-byte header is replaced by the two FU-A bytes in each fragment).
func fragments(n int) int {
	const chunk = maxRTPPayload - 2
	return (n - 1 + chunk - 1) / chunk
}

// Encode packetizes one access unit; the RTP timestamp is the caller's to
// set. The last packet carries the marker bit.
func (p *h264Packetizer) Encode(nalus [][]byte) ([]*rtp.Packet, error) {
	size, count := 0, 0
	for _, n := range nalus {
		switch {
		case len(n) == 0:
		case len(n) <= maxRTPPayload:
			size += len(n)
			count++
		default:
			f := fragments(len(n))
			size += len(n) - 1 + 2*f
			count += f
		}
	}
	if cap(p.arena) < size {
		p.arena = make([]byte, 0, size)
	}
	if cap(p.pkts) < count {
		p.pkts = make([]rtp.Packet, count)
		p.out = make([]*rtp.Packet, count)
	}
	arena := p.arena[:0]
	p.pkts, p.out = p.pkts[:count], p.out[:count]
	i := 0
	next := func(payload []byte) {
		p.pkts[i] = rtp.Packet{
			Header:  rtp.Header{Version: 2, PayloadType: p.payloadType, SequenceNumber: p.seq},
			Payload: payload,
		}
		p.out[i] = &p.pkts[i]
		p.seq++
		i++
	}
	for _, n := range nalus {
		switch {
		case len(n) == 0:
		case len(n) <= maxRTPPayload:
			start := len(arena)
			arena = append(arena, n...)
			next(arena[start:len(arena):len(arena)])
		default:
			indicator := n[0]&0xe0 | 28 // FU-A, keeping F and NRI
			typ := n[0] & 0x1f
			body := n[1:]
			for first := true; len(body) > 0; first = false {
				take := min(len(body), maxRTPPayload-2)
				header := typ
				if first {
					header |= 0x80
				}
				if take == len(body) {
					header |= 0x40
				}
				start := len(arena)
				arena = append(arena, indicator, header)
				arena = append(arena, body[:take]...)
				body = body[take:]
				next(arena[start:len(arena):len(arena)])
			}
		}
	}
	if count > 0 {
		p.pkts[count-1].Marker = true
	}
	return p.out, nil
}
