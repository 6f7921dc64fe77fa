package bus

import (
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// UnmarshalAccessUnit decodes an AccessUnit whose NAL units and data alias
// b instead of being copied (proto.Unmarshal copies every bytes field): b
// must not change afterwards. A message from a NATS subscription owns its
// Data, so a camera's video is decoded without copying its payload a second
// time on every hop of the relay. A field this decoder does not know (a
// newer publisher) falls back to proto.Unmarshal.
func UnmarshalAccessUnit(b []byte, au *busv1.AccessUnit) error {
	proto.Reset(au)
	if !decodeAccessUnit(b, au) {
		proto.Reset(au)
		return proto.Unmarshal(b, au)
	}
	return nil
}

// decodeAccessUnit is the aliasing decoder; false means "use proto.Unmarshal"
// (an unknown field, a wire type other than the schema's, or a malformed
// message, which proto.Unmarshal then reports).
func decodeAccessUnit(b []byte, au *busv1.AccessUnit) bool {
	nalus := 0
	for rest := b; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			return false
		}
		m := protowire.ConsumeFieldValue(num, typ, rest[n:])
		if m < 0 {
			return false
		}
		if num == 7 {
			nalus++
		}
		rest = rest[n+m:]
	}
	if nalus > 0 {
		au.Nalus = make([][]byte, 0, nalus)
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		b = b[n:]
		switch {
		case typ == protowire.BytesType && (num == 1 || num == 7 || num == 8):
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return false
			}
			b = b[m:]
			switch num {
			case 1:
				if !utf8.Valid(v) {
					return false // proto.Unmarshal reports it
				}
				au.Camera = string(v)
			case 7:
				// A full slice expression: appending to one NAL unit never
				// writes into the next.
				au.Nalus = append(au.Nalus, v[:len(v):len(v)])
			case 8:
				au.Data = v[:len(v):len(v)]
			}
		case typ == protowire.VarintType && num >= 2 && num <= 16 && num != 7 && num != 8:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return false
			}
			b = b[m:]
			switch num {
			case 2:
				au.Codec = busv1.Codec(int32(v))
			case 3:
				au.Pts = int64(v)
			case 4:
				au.RtpTimestamp = uint32(v)
			case 5:
				au.ClockRate = uint32(v)
			case 6:
				au.Keyframe = v != 0
			case 9:
				au.Sequence = v
			case 10:
				au.IngestUnixNano = int64(v)
			case 11:
				au.Width = uint32(v)
			case 12:
				au.Height = uint32(v)
			case 13:
				au.Channels = uint32(v)
			case 14:
				au.CompleteUnixNano = int64(v)
			case 15:
				au.AudioKnown = v != 0
			case 16:
				au.AudioCodec = busv1.Codec(int32(v))
			}
		default:
			return false
		}
	}
	return true
}
