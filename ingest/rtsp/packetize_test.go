package rtsp

import (
	"bytes"
	"testing"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
)

// TestH264PacketizerRoundTrip packetizes access units of every shape (small
// NAL units, one exactly at the payload limit, one just over it, a large
// keyframe, an empty NAL unit) and decodes them with gortsplib's depacketizer,
// as a reader would.
func TestH264PacketizerRoundTrip(t *testing.T) {
	p := newH264Packetizer(96)
	d := &rtph264.Decoder{PacketizationMode: 1}
	if err := d.Init(); err != nil {
		t.Fatal(err)
	}
	nal := func(typ byte, n int) []byte {
		b := bytes.Repeat([]byte{byte(n)}, n)
		b[0] = 0x60 | typ
		return b
	}
	aus := [][][]byte{
		{nal(7, 12), nal(8, 4), nal(5, 150000)},
		{nal(1, 900)},
		{nal(1, maxRTPPayload)},
		{nal(1, maxRTPPayload+1)},
		{nal(6, 20), {}, nal(1, 3*(maxRTPPayload-2)+1)},
	}
	seq := p.seq
	for round := 0; round < 2; round++ {
		for i, au := range aus {
			pkts, err := p.Encode(au)
			if err != nil {
				t.Fatal(err)
			}
			var got [][]byte
			for j, pkt := range pkts {
				if pkt.SequenceNumber != seq {
					t.Fatalf("AU %d packet %d: sequence %d, want %d", i, j, pkt.SequenceNumber, seq)
				}
				seq++
				if pkt.Marker != (j == len(pkts)-1) {
					t.Fatalf("AU %d packet %d of %d: marker %v", i, j, len(pkts), pkt.Marker)
				}
				if len(pkt.Payload) > maxRTPPayload || pkt.PayloadType != 96 {
					t.Fatalf("AU %d packet %d: payload %d bytes, type %d", i, j, len(pkt.Payload), pkt.PayloadType)
				}
				nalus, err := d.Decode(pkt)
				if err == nil {
					got = nalus
				}
			}
			var want [][]byte
			for _, n := range au {
				if len(n) > 0 {
					want = append(want, n)
				}
			}
			if len(got) != len(want) {
				t.Fatalf("AU %d: decoded %d NAL units, want %d", i, len(got), len(want))
			}
			for k := range want {
				if !bytes.Equal(got[k], want[k]) {
					t.Fatalf("AU %d NAL unit %d: decoded %d bytes differ from the %d sent", i, k, len(got[k]), len(want[k]))
				}
			}
		}
	}
}

// TestH264PacketizerReusesBuffers: once sized for the largest access unit,
// packetizing allocates nothing.
func TestH264PacketizerReusesBuffers(t *testing.T) {
	p := newH264Packetizer(96)
	key := [][]byte{bytes.Repeat([]byte{0x65}, 120000)}
	delta := [][]byte{bytes.Repeat([]byte{0x41}, 15000)}
	_, _ = p.Encode(key)
	if n := testing.AllocsPerRun(100, func() { _, _ = p.Encode(delta); _, _ = p.Encode(key) }); n != 0 {
		t.Fatalf("%.1f allocations per access unit pair, want 0", n)
	}
}
