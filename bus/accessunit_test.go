package bus

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

func sampleAccessUnits() []*busv1.AccessUnit {
	big := bytes.Repeat([]byte{0x41, 0x9a}, 40000)
	return []*busv1.AccessUnit{
		{},
		{Camera: "cam-1", Codec: busv1.Codec_CODEC_H264, Pts: -5, RtpTimestamp: 4294967295, ClockRate: 90000, Keyframe: true,
			Nalus: [][]byte{{0x67, 0x42, 0xe0, 0x1f}, {0x68, 0xce}, {}, big}, Sequence: 1 << 60, IngestUnixNano: 1764460800000000000,
			Width: 1920, Height: 1080, CompleteUnixNano: 1764460800000000001, AudioKnown: true, AudioCodec: busv1.Codec_CODEC_AAC},
		{Camera: "mic", Codec: busv1.Codec_CODEC_OPUS, Data: []byte{1, 2, 3}, Channels: 2, ClockRate: 48000},
	}
}

// TestUnmarshalAccessUnitMatchesProto decodes what proto.Marshal wrote and
// gets what proto.Unmarshal gets, aliasing the NAL units.
func TestUnmarshalAccessUnitMatchesProto(t *testing.T) {
	for i, want := range sampleAccessUnits() {
		b, err := proto.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		var got busv1.AccessUnit
		got.Camera = "left over from a previous use"
		if err := UnmarshalAccessUnit(b, &got); err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if !proto.Equal(&got, want) {
			t.Fatalf("%d: got %v, want %v", i, &got, want)
		}
		if len(want.Nalus) > 0 {
			n := got.Nalus[len(got.Nalus)-1]
			n[0] ^= 0xff
			if !bytes.Contains(b, n[:16]) {
				t.Fatalf("%d: the last NAL unit was copied, not aliased", i)
			}
			if cap(got.Nalus[0]) != len(got.Nalus[0]) {
				t.Fatalf("%d: a NAL unit's capacity reaches into the next field", i)
			}
		}
	}
}

// TestUnmarshalAccessUnitFallsBack hands fields this decoder does not know,
// wire types the schema does not have and bad input to proto.Unmarshal,
// with its result and errors.
func TestUnmarshalAccessUnitFallsBack(t *testing.T) {
	base, _ := proto.Marshal(sampleAccessUnits()[1])
	unknown := protowire.AppendVarint(protowire.AppendTag(append([]byte(nil), base...), 99, protowire.VarintType), 7)
	wrongType := protowire.AppendBytes(protowire.AppendTag(append([]byte(nil), base...), 3, protowire.BytesType), []byte("x"))
	badUTF8 := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte{0xff, 0xfe})
	for name, b := range map[string][]byte{
		"unknown field": unknown, "wrong wire type": wrongType, "invalid UTF-8 camera": badUTF8,
		"truncated": base[:len(base)-3], "garbage": {0xff, 0xff, 0xff},
	} {
		var want, got busv1.AccessUnit
		werr := proto.Unmarshal(b, &want)
		gerr := UnmarshalAccessUnit(b, &got)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("%s: error %v, proto.Unmarshal's %v", name, gerr, werr)
		}
		if werr == nil && !proto.Equal(&got, &want) {
			t.Fatalf("%s: got %v, want %v", name, &got, &want)
		}
	}
}

func FuzzUnmarshalAccessUnit(f *testing.F) {
	for _, au := range sampleAccessUnits() {
		b, _ := proto.Marshal(au)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var want, got busv1.AccessUnit
		werr := proto.Unmarshal(b, &want)
		gerr := UnmarshalAccessUnit(b, &got)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("error %v, proto.Unmarshal's %v", gerr, werr)
		}
		if werr == nil && !proto.Equal(&got, &want) {
			t.Fatalf("got %v, want %v", &got, &want)
		}
	})
}

// BenchmarkUnmarshalAccessUnit compares the aliasing decoder with
// proto.Unmarshal on a 1080p-sized access unit (bytes and allocations per
// access unit).
func BenchmarkUnmarshalAccessUnit(b *testing.B) {
	au := sampleAccessUnits()[1]
	buf, _ := proto.Marshal(au)
	b.Run("aliasing", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(buf)))
		for b.Loop() {
			var got busv1.AccessUnit
			if err := UnmarshalAccessUnit(buf, &got); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("proto", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(buf)))
		for b.Loop() {
			var got busv1.AccessUnit
			if err := proto.Unmarshal(buf, &got); err != nil {
				b.Fatal(err)
			}
		}
	})
}
