package mediabus

import (
	"errors"
	"testing"

	"github.com/imageflowcanvas/imageflow/media"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// Every bus codec survives the round trip or maps to unknown, and an audio
// codec gets no decoder.
func TestCodecRoundTrip(t *testing.T) {
	for v := range busv1.Codec_name {
		c := busv1.Codec(v)
		m := Codec(c)
		if m == media.CodecUnknown {
			continue
		}
		if back := BusCodec(m); back != c {
			t.Errorf("%v -> %v -> %v", c, m, back)
		}
	}
	if Codec(busv1.Codec_CODEC_H265) != media.CodecH265 || BusCodec(media.CodecUnknown) != busv1.Codec_CODEC_UNSPECIFIED {
		t.Fatal("mapping")
	}
	if _, err := media.NewDecoder(Codec(busv1.Codec_CODEC_AAC), 1); !errors.Is(err, media.ErrUnsupportedCodec) {
		t.Fatalf("AAC decoder: %v", err)
	}
}
