package rtsp

import (
	"encoding/binary"
	"testing"

	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/pion/rtp"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// recSink keeps what a track writes.
type recSink struct {
	aus    []*busv1.AccessUnit
	tracks int
}

func (s *recSink) WriteAccessUnit(au *busv1.AccessUnit) error { s.aus = append(s.aus, au); return nil }
func (s *recSink) SetState(string, error)                     {}
func (s *recSink) SetTrack(busv1.Codec, int, int)             { s.tracks++ }

// fuzzPackets splits data into RTP packets: per packet one flag byte (bit 0
// marker, bits 1-7 timestamp step), a 2-byte length and the payload.
func fuzzPackets(data []byte) []*rtp.Packet {
	var pkts []*rtp.Packet
	ts := uint32(1000)
	seq := uint16(1)
	for len(data) >= 3 {
		flags := data[0]
		n := int(binary.BigEndian.Uint16(data[1:3]))
		data = data[3:]
		if n > len(data) {
			n = len(data)
		}
		ts += uint32(flags>>1) * 100
		pkts = append(pkts, &rtp.Packet{
			Header:  rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: ts, Marker: flags&1 == 1},
			Payload: data[:n],
		})
		seq++
		data = data[n:]
	}
	return pkts
}

func packet(marker bool, step uint8, payload []byte) []byte {
	b := []byte{step << 1, 0, 0}
	if marker {
		b[0] |= 1
	}
	binary.BigEndian.PutUint16(b[1:], uint16(len(payload)))
	return append(b, payload...)
}

// seedAUs encodes real access units (from the small clip) into the fuzz
// packet format.
func seedAUs(t testing.TB, aus [][][]byte) []byte {
	enc := &rtph264.Encoder{PayloadType: 96, PacketizationMode: 1, PayloadMaxSize: 300}
	if err := enc.Init(); err != nil {
		t.Fatal(err)
	}
	var out []byte
	for _, au := range aus {
		pkts, err := enc.Encode(au)
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range pkts {
			step := uint8(0)
			if i == 0 {
				step = 30
			}
			out = append(out, packet(p.Marker, step, p.Payload)...)
		}
	}
	return out
}

func checkAUs(t *testing.T, codec busv1.Codec, aus []*busv1.AccessUnit) {
	for _, au := range aus {
		if len(au.Nalus) == 0 {
			t.Fatal("access unit without NAL units")
		}
		for _, n := range au.Nalus {
			if len(n) == 0 {
				t.Fatal("empty NAL unit")
			}
			if classify(codec, n) == naluAUD {
				t.Fatal("access unit delimiter kept")
			}
		}
		if au.Keyframe {
			_, sps, pps := paramsOf(au)
			if sps == nil || pps == nil {
				t.Fatal("keyframe without parameter sets")
			}
		}
	}
}

// Table of hand-written cases: they are unit tests and fuzz seeds at once.
var depacketizeCases = []struct {
	name string
	data []byte
}{
	{"empty", nil},
	{"short header", []byte{1, 0}},
	{"single SPS PPS IDR", append(append(packet(false, 1, []byte{0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8}),
		packet(false, 0, []byte{0x68, 0xce, 0x3c, 0x80})...), packet(true, 0, []byte{0x65, 0x88, 0x84, 0x00})...)},
	{"IDR without params", packet(true, 1, []byte{0x65, 0x88, 0x84})},
	{"FU-A start without end", packet(false, 1, []byte{0x7c, 0x85, 1, 2, 3})},
	{"FU-A end without start", packet(true, 1, []byte{0x7c, 0x45, 1, 2, 3})},
	{"STAP-A truncated", packet(true, 1, []byte{0x78, 0x00, 0x40, 0x67})},
	{"STAP-A zero size", packet(true, 1, []byte{0x78, 0x00, 0x00, 0x00, 0x02, 0x68, 0x01})},
	{"AUD only", packet(true, 1, []byte{0x09, 0xf0})},
	{"timestamp split without marker", append(packet(false, 1, []byte{0x41, 1}), packet(false, 3, []byte{0x41, 2})...)},
	{"zero byte nalu", packet(true, 1, []byte{0x00})},
	{"h265 VPS SPS PPS IDR", append(append(append(packet(false, 1, []byte{0x40, 0x01, 0x0c}), packet(false, 0, []byte{0x42, 0x01, 0x01})...),
		packet(false, 0, []byte{0x44, 0x01, 0xc1})...), packet(true, 0, []byte{0x26, 0x01, 0xaf})...)},
	{"h265 FU", packet(true, 1, []byte{0x62, 0x01, 0x93, 0xaf})},
	{"h265 AP truncated", packet(true, 1, []byte{0x60, 0x01, 0x00, 0x20, 0x40})},
}

func runTracks(t *testing.T, data []byte) {
	for _, forma := range []format.Format{
		&format.H264{PayloadTyp: 96, PacketizationMode: 1},
		&format.H265{PayloadTyp: 96},
	} {
		sink := &recSink{}
		vt, err := newVideoTrack(forma, sink, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range fuzzPackets(data) {
			vt.writePacket(p)
		}
		checkAUs(t, vt.codec, sink.aus)
	}
}

func TestDepacketizeCases(t *testing.T) {
	for _, c := range depacketizeCases {
		t.Run(c.name, func(t *testing.T) { runTracks(t, c.data) })
	}
}

// A real clip survives the round trip: every access unit comes out, the
// first is a keyframe with its parameter sets and size.
func TestDepacketizeClip(t *testing.T) {
	aus := smallAUs(t)
	sink := &recSink{}
	vt, err := newVideoTrack(&format.H264{PayloadTyp: 96, PacketizationMode: 1}, sink, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range fuzzPackets(seedAUs(t, aus)) {
		vt.writePacket(p)
	}
	if len(sink.aus) != len(aus) {
		t.Fatalf("%d access units out of %d", len(sink.aus), len(aus))
	}
	checkAUs(t, busv1.Codec_CODEC_H264, sink.aus)
	first := sink.aus[0]
	if !first.Keyframe || first.Width != 640 || first.Height != 360 {
		t.Fatalf("first access unit keyframe=%v %dx%d", first.Keyframe, first.Width, first.Height)
	}
	keys := 0
	for i, au := range sink.aus {
		if au.Keyframe {
			keys++
		}
		if i > 0 && au.Pts <= sink.aus[i-1].Pts {
			t.Fatalf("pts not increasing at %d", i)
		}
	}
	if keys != 2 {
		t.Fatalf("%d keyframes in a 2 s clip with a 1 s GOP, want 2", keys)
	}
	// Parameter sets missing in band are restored from what was seen before.
	sink2 := &recSink{}
	vt2, _ := newVideoTrack(&format.H264{PayloadTyp: 96, PacketizationMode: 1}, sink2, nil)
	var stripped [][][]byte
	for i, au := range aus {
		var out [][]byte
		for _, n := range au {
			k := classify(busv1.Codec_CODEC_H264, n)
			if i > 0 && (k == naluSPS || k == naluPPS) {
				continue
			}
			out = append(out, n)
		}
		stripped = append(stripped, out)
	}
	for _, p := range fuzzPackets(seedAUs(t, stripped)) {
		vt2.writePacket(p)
	}
	checkAUs(t, busv1.Codec_CODEC_H264, sink2.aus)
	if k := sink2.aus[30]; !k.Keyframe || classify(busv1.Codec_CODEC_H264, k.Nalus[0]) != naluSPS {
		t.Fatalf("second keyframe did not get its SPS back: key=%v", k.Keyframe)
	}
}

func FuzzDepacketize(f *testing.F) {
	for _, c := range depacketizeCases {
		f.Add(c.data)
	}
	f.Add(seedAUs(f, smallAUs(f)[:3]))
	f.Fuzz(func(t *testing.T, data []byte) { runTracks(t, data) })
}

// Cameras without marker bits: rtph264 closes a unit on the next timestamp,
// and the unit keeps its own timestamp, not the next one.
func TestTimestampSplit(t *testing.T) {
	sink := &recSink{}
	vt, err := newVideoTrack(&format.H264{PayloadTyp: 96, PacketizationMode: 1}, sink, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, ts := range []uint32{1000, 4000, 7000, 10000} {
		vt.writePacket(&rtp.Packet{
			Header:  rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: uint16(i), Timestamp: ts, Marker: ts >= 7000},
			Payload: []byte{0x41, byte(i)},
		})
	}
	var got []uint32
	for _, au := range sink.aus {
		got = append(got, au.RtpTimestamp)
	}
	if len(got) != 3 || got[0] != 1000 || got[1] != 4000 || got[2] != 7000 {
		t.Fatalf("access unit timestamps %v, want [1000 4000 7000]", got)
	}
	if sink.aus[1].Pts != 3000*1_000_000_000/90000 { // 3000 ticks at 90 kHz
		t.Fatalf("pts %d", sink.aus[1].Pts)
	}
}
