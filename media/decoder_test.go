package media

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/imageflowcanvas/imageflow/media/h26x"
)

func TestDecodeClips(t *testing.T) {
	cases := []struct {
		spec  clipSpec
		codec Codec
		w, h  int
	}{
		{clipH264, CodecH264, 320, 240},
		{clipH264B, CodecH264, 352, 288},
		{clipH265, CodecH265, 320, 240},
		{clipH265Raw, CodecH265, 256, 144},
		{clipVP8, CodecVP8, 320, 180},
		{clipVP9, CodecVP9, 320, 180},
	}
	for _, tc := range cases {
		t.Run(tc.spec.name, func(t *testing.T) {
			info, pkts := readPackets(t, clip(t, tc.spec))
			if info.Codec != tc.codec || info.Width != tc.w || info.Height != tc.h {
				t.Fatalf("info = %+v, want %v %dx%d", info, tc.codec, tc.w, tc.h)
			}
			if !pkts[0].Keyframe {
				t.Fatalf("first packet is not a keyframe")
			}
			d, err := NewDecoder(tc.codec, 1)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			frames := 0
			seen := map[int64]bool{}
			for i, p := range pkts {
				n, err := d.Decode(p.Data, int64(i), p.Keyframe)
				if err != nil {
					t.Fatalf("packet %d: %v", i, err)
				}
				frames += n
				if n > 0 {
					pic, _ := d.Picture()
					if pic.Width != tc.w || pic.Height != tc.h {
						t.Fatalf("picture %dx%d", pic.Width, pic.Height)
					}
					seen[pic.PTS] = true
				}
			}
			n, err := d.Flush()
			if err != nil {
				t.Fatal(err)
			}
			frames += n
			if frames != tc.spec.frames {
				t.Fatalf("decoded %d pictures, want %d", frames, tc.spec.frames)
			}
			// The decoder must still work after a flush (file loops).
			n1, err := d.Decode(pkts[0].Data, 0, true)
			n2, _ := d.Flush()
			if err != nil || n1+n2 != 1 {
				t.Fatalf("after flush: %d+%d pictures, %v", n1, n2, err)
			}
		})
	}
}

// The H264 clip with B-frames comes out in presentation order: the PTS tags
// come back reordered, not in packet order.
func TestDecodeReorderTags(t *testing.T) {
	_, pkts := readPackets(t, clip(t, clipH264B))
	d, err := NewDecoder(CodecH264, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var tags []int64
	for _, p := range pkts {
		n, err := d.Decode(p.Data, p.PTS, p.Keyframe)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			pic, _ := d.Picture()
			tags = append(tags, pic.PTS)
		}
	}
	inOrder := true
	for i := 1; i < len(tags); i++ {
		if tags[i] <= tags[i-1] {
			t.Fatalf("tags not increasing at %d: %v", i, tags)
		}
	}
	for i, p := range pkts[1:] {
		if p.PTS < pkts[i].PTS {
			inOrder = false
		}
	}
	if inOrder {
		t.Fatalf("clip has no B-frames: packet PTS already increasing")
	}
}

func TestDecodeNALUsAndScale(t *testing.T) {
	_, pkts := readPackets(t, clip(t, clipH264))
	d, err := NewDecoder(CodecH264, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var nalus [][]byte
	var buf []byte
	frames := 0
	for i, p := range pkts {
		nalus = h26x.SplitAnnexB(nalus[:0], p.Data)
		if p.Keyframe && h26x.H264NALUType(nalus[0]) != h26x.H264NALUTypeSPS && h26x.H264NALUType(nalus[0]) != h26x.H264NALUTypeSEI && h26x.H264NALUType(nalus[0]) != h26x.H264NALUTypeAUD {
			t.Fatalf("keyframe starts with NALU type %d", h26x.H264NALUType(nalus[0]))
		}
		if p.Keyframe != h26x.H264HasIDR(nalus) {
			t.Fatalf("packet %d: keyframe %v, IDR %v", i, p.Keyframe, h26x.H264HasIDR(nalus))
		}
		n, err := d.DecodeNALUs(nalus, int64(i), p.Keyframe)
		if err != nil {
			t.Fatal(err)
		}
		frames += n
		var w, h int
		buf, w, h, err = d.ScaleBGR(buf, 160)
		if err != nil {
			t.Fatal(err)
		}
		if w != 160 || h != 120 || len(buf) != 160*120*3 {
			t.Fatalf("scaled %dx%d len %d", w, h, len(buf))
		}
	}
	if frames != clipH264.frames {
		t.Fatalf("decoded %d, want %d", frames, clipH264.frames)
	}
	// testsrc2 is colourful: a BGR picture of one value means a broken scale.
	if bytes.Count(buf, buf[:1]) == len(buf) {
		t.Fatal("scaled picture is flat")
	}
	// Odd target widths round to even sizes.
	if w, h := d.OutputSize(101); w != 100 || h != 74 {
		t.Fatalf("OutputSize(101) = %dx%d", w, h)
	}
}

func TestDecodeSkipModes(t *testing.T) {
	_, pkts := readPackets(t, clip(t, clipH264B))
	keys := 0
	for _, p := range pkts {
		if p.Keyframe {
			keys++
		}
	}
	count := func(m SkipMode) int {
		d, err := NewDecoder(CodecH264, 1)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		d.SetSkip(m)
		total := 0
		for i, p := range pkts {
			n, err := d.Decode(p.Data, int64(i), p.Keyframe)
			if err != nil {
				t.Fatalf("%v: %v", m, err)
			}
			total += n
		}
		n, _ := d.Flush()
		return total + n
	}
	all, nonref, key := count(SkipNone), count(SkipNonRef), count(SkipNonKey)
	if all != clipH264B.frames {
		t.Fatalf("all = %d", all)
	}
	if key != keys {
		t.Fatalf("keyframes only: %d pictures, %d keyframes", key, keys)
	}
	if nonref >= all || nonref <= key {
		t.Fatalf("nonref decoded %d (all %d, key %d)", nonref, all, key)
	}
	t.Logf("pictures: all %d, nonref %d, key %d", all, nonref, key)
}

// Truncated access units are reported as errors, the stream goes on and
// pictures after the next keyframe decode again.
func TestDecodeTruncated(t *testing.T) {
	_, pkts := readPackets(t, clip(t, clipH264))
	d, err := NewDecoder(CodecH264, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	errs, good := 0, 0
	for i, p := range pkts {
		data := p.Data
		if i%10 == 3 { // one P-frame per GOP loses its second half
			data = data[:len(data)/2]
		}
		n, err := d.Decode(data, int64(i), p.Keyframe)
		if err != nil {
			errs++
		}
		good += n
	}
	n, err := d.Flush()
	if err != nil {
		errs++
	}
	good += n
	if errs == 0 {
		t.Fatal("truncated access units gave no error")
	}
	if good == 0 || good >= len(pkts) {
		t.Fatalf("good pictures %d of %d", good, len(pkts))
	}
	t.Logf("%d packets, %d errors, %d good pictures", len(pkts), errs, good)
}

func TestDecodeGarbage(t *testing.T) {
	d, err := NewDecoder(CodecH264, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Decode([]byte{0, 0, 0, 1, 0x65, 0xff, 0xff, 0xff, 0xff}, 0, true); err == nil {
		if _, ok := d.Picture(); ok {
			t.Fatal("garbage gave a picture")
		}
	}
	if _, _, _, err := d.ScaleBGR(nil, 64); !errors.Is(err, ErrNoPicture) {
		t.Fatalf("ScaleBGR before a picture: %v", err)
	}
	d.Close()
	d.Close()
	if _, err := d.Decode([]byte{1}, 0, true); !errors.Is(err, ErrClosed) {
		t.Fatalf("decode after close: %v", err)
	}
	if _, err := NewDecoder(CodecUnknown, 1); !errors.Is(err, ErrUnsupportedCodec) {
		t.Fatalf("decoder of an unknown codec: %v", err)
	}
}

func TestDemuxerErrors(t *testing.T) {
	if _, err := OpenDemuxer("/nonexistent/clip.mp4", DemuxOptions{}); err == nil || !strings.Contains(err.Error(), "No such file") {
		t.Fatalf("missing file: %v", err)
	}
	if _, err := OpenDemuxer("x", DemuxOptions{Format: "no-such-format"}); err == nil {
		t.Fatal("unknown format opened")
	}
}

func TestDemuxerNoVideo(t *testing.T) {
	path := clipDir + "/audio.wav"
	if out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "sine=duration=0.2", path).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v %s", err, out)
	}
	if _, err := OpenDemuxer(path, DemuxOptions{}); !errors.Is(err, ErrNoVideo) {
		t.Fatalf("audio-only file: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := OpenDemuxerContext(ctx, clip(t, clipH264), DemuxOptions{}); err == nil {
		t.Fatal("opened with a cancelled context")
	}
}
