package media

import (
	"testing"

	"github.com/imageflowcanvas/imageflow/media/h26x"
)

// fuzzSeeds are real H264 access units: a keyframe (SPS, PPS, IDR) and the
// P-frames after it, Annex-B, made in-process by the encoder so the seed
// corpus needs no tool.
func fuzzSeeds(tb testing.TB) [][]byte {
	aus := encodeTestAUs(tb, 64, 48, 4, 30)
	var seeds [][]byte
	for _, au := range aus {
		seeds = append(seeds, h26x.AppendAnnexB(nil, au.Nalus))
	}
	return seeds
}

// FuzzDecodeH264 feeds a keyframe followed by a mutated access unit, and the
// mutated unit alone, to fresh decoders: no crash, errors are values.
func FuzzDecodeH264(f *testing.F) {
	seeds := fuzzSeeds(f)
	for _, s := range seeds {
		f.Add(s)
	}
	// Access units of an ffmpeg (libx264 CLI) clip: SEI, SPS, PPS, IDR, P.
	_, pkts := readPackets(f, clip(f, clipH264))
	for _, p := range pkts[:3] {
		f.Add(p.Data)
	}
	// Classic damage: truncation, flipped bytes, a lone start code.
	f.Add(seeds[0][:len(seeds[0])/2])
	flipped := append([]byte(nil), seeds[1]...)
	for i := 8; i < len(flipped); i += 7 {
		flipped[i] ^= 0x5a
	}
	f.Add(flipped)
	f.Add([]byte{0, 0, 1})
	key := seeds[0]
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := NewDecoder(CodecH264, 1)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		_, _ = d.Decode(data, 0, true)
		_, _ = d.Decode(key, 1, true)
		_, _ = d.Decode(data, 2, false)
		var nalus [][]byte
		nalus = h26x.SplitAnnexB(nalus, data)
		_, _ = d.DecodeNALUs(nalus, 3, false)
		_, _ = d.Flush()
		if p, ok := d.Picture(); ok {
			// A mutated SPS may change the size: the output follows the picture.
			ww, wh := ScaledSize(p.Width, p.Height, 33)
			if _, w, h, err := d.ScaleBGR(nil, 33); err != nil || w != ww || h != wh {
				t.Fatalf("scale %dx%d: %dx%d %v", p.Width, p.Height, w, h, err)
			}
		}
	})
}

// FuzzDecodeH265 does the same for the HEVC decoder with a random stream.
func FuzzDecodeH265(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 0x40, 0x01, 0x0c, 0x01, 0xff, 0xff})
	f.Add([]byte{0, 0, 1, 0x26, 0x01, 0xaf, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := NewDecoder(CodecH265, 1)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		_, _ = d.Decode(data, 0, true)
		_, _ = d.Flush()
	})
}
