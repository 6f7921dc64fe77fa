// Package mediabus converts between media's types and the bus's (busv1), so
// media itself imports nothing of the project; adapters and processors call
// it at their edges.
package mediabus

import (
	"github.com/imageflowcanvas/imageflow/media"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// Codec is the media codec of a bus codec; media.CodecUnknown for audio and
// codecs media cannot decode.
func Codec(c busv1.Codec) media.Codec {
	switch c {
	case busv1.Codec_CODEC_H264:
		return media.CodecH264
	case busv1.Codec_CODEC_H265:
		return media.CodecH265
	case busv1.Codec_CODEC_VP8:
		return media.CodecVP8
	case busv1.Codec_CODEC_VP9:
		return media.CodecVP9
	case busv1.Codec_CODEC_AV1:
		return media.CodecAV1
	case busv1.Codec_CODEC_MJPEG:
		return media.CodecMJPEG
	}
	return media.CodecUnknown
}

// BusCodec is the bus codec of a media codec.
func BusCodec(c media.Codec) busv1.Codec {
	switch c {
	case media.CodecH264:
		return busv1.Codec_CODEC_H264
	case media.CodecH265:
		return busv1.Codec_CODEC_H265
	case media.CodecVP8:
		return busv1.Codec_CODEC_VP8
	case media.CodecVP9:
		return busv1.Codec_CODEC_VP9
	case media.CodecAV1:
		return busv1.Codec_CODEC_AV1
	case media.CodecMJPEG:
		return busv1.Codec_CODEC_MJPEG
	}
	return busv1.Codec_CODEC_UNSPECIFIED
}

// DecodeAU decodes a bus access unit with d; its Pts tags the picture.
func DecodeAU(d *media.Decoder, au *busv1.AccessUnit) (int, error) {
	if len(au.Nalus) > 0 {
		return d.DecodeNALUs(au.Nalus, au.Pts, au.Keyframe)
	}
	return d.Decode(au.Data, au.Pts, au.Keyframe)
}
