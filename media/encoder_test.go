package media

import (
	"bytes"
	"testing"

	"github.com/imageflowcanvas/imageflow/media/h26x"
)

// testPicture draws a moving gradient with a bright square into a BGR24
// buffer, so consecutive pictures differ like real video.
func testPicture(buf []byte, w, h, i int) {
	for y := 0; y < h; y++ {
		row := buf[y*w*3:]
		for x := 0; x < w; x++ {
			row[x*3] = byte(x + i*3)
			row[x*3+1] = byte(y + i)
			row[x*3+2] = byte(x ^ y)
		}
	}
	sx, sy := (i*7)%(w-32), (i*5)%(h-32)
	for y := sy; y < sy+32; y++ {
		for x := sx; x < sx+32; x++ {
			copy(buf[(y*w+x)*3:], []byte{255, 255, 255})
		}
	}
}

// testAU is a copy of an encoded access unit.
type testAU struct {
	Nalus    [][]byte
	Keyframe bool
	Pts      int64
}

// encodeTestAUs encodes n pictures of w×h and returns copies of the AUs.
func encodeTestAUs(tb testing.TB, w, h, n, gop int) []*testAU {
	tb.Helper()
	enc, err := NewH264Encoder(w, h, 30, 1_000_000, gop)
	if err != nil {
		tb.Fatal(err)
	}
	defer enc.Close()
	pic := make([]byte, w*h*3)
	var aus []*testAU
	for i := 0; i < n; i++ {
		testPicture(pic, w, h, i)
		au, err := enc.EncodeBGR(pic, w, h, 0, int64(i)*3000)
		if err != nil {
			tb.Fatal(err)
		}
		if au == nil {
			tb.Fatalf("picture %d: zerolatency encoder held the access unit", i)
		}
		c := &testAU{Keyframe: au.Keyframe, Pts: au.PTS}
		for _, nl := range au.NALUs {
			c.Nalus = append(c.Nalus, append([]byte(nil), nl...))
		}
		aus = append(aus, c)
	}
	return aus
}

func TestEncoderH264(t *testing.T) {
	const w, h, n, gop = 320, 240, 30, 10
	aus := encodeTestAUs(t, w, h, n, gop)
	d, err := NewDecoder(CodecH264, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	frames := 0
	for i, au := range aus {
		if want := i%gop == 0; au.Keyframe != want {
			t.Fatalf("AU %d keyframe %v, want %v", i, au.Keyframe, want)
		}
		if au.Pts != int64(i)*3000 {
			t.Fatalf("AU %d pts %d", i, au.Pts)
		}
		types := map[int]bool{}
		for _, nl := range au.Nalus {
			if bytes.Contains(nl, []byte{0, 0, 1}) {
				t.Fatalf("AU %d: start code inside a NALU", i)
			}
			types[h26x.H264NALUType(nl)] = true
		}
		if au.Keyframe && !(types[h26x.H264NALUTypeSPS] && types[h26x.H264NALUTypePPS] && types[h26x.H264NALUTypeIDR]) {
			t.Fatalf("keyframe AU %d NALU types %v: want SPS, PPS and IDR in-band", i, types)
		}
		got, err := d.DecodeNALUs(au.Nalus, au.Pts, au.Keyframe)
		if err != nil {
			t.Fatal(err)
		}
		frames += got
	}
	if frames != n {
		t.Fatalf("decoded %d of %d", frames, n)
	}
	if p, _ := d.Picture(); p.Width != w || p.Height != h {
		t.Fatalf("decoded size %dx%d", p.Width, p.Height)
	}

	// A decoder started at the second keyframe decodes from there on: the
	// parameter sets really are repeated.
	d2, _ := NewDecoder(CodecH264, 1)
	defer d2.Close()
	frames = 0
	for _, au := range aus[gop:] {
		got, err := d2.DecodeNALUs(au.Nalus, au.Pts, au.Keyframe)
		if err != nil {
			t.Fatal(err)
		}
		frames += got
	}
	if frames != n-gop {
		t.Fatalf("late start decoded %d of %d", frames, n-gop)
	}
}

func TestEncoderYUVAndForceKey(t *testing.T) {
	const w, h = 160, 120
	enc, err := NewH264Encoder(w, h, 25, 500_000, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	yuv := make([]byte, w*h*3/2)
	for i := 0; i < 6; i++ {
		for j := range yuv[:w*h] {
			yuv[j] = byte(j + i*11)
		}
		if i == 4 {
			enc.ForceKeyframe()
		}
		au, err := enc.EncodeYUV420(yuv, w, h, int64(i))
		if err != nil || au == nil {
			t.Fatalf("picture %d: %v %v", i, au, err)
		}
		if want := i == 0 || i == 4; au.Keyframe != want || h26x.H264HasIDR(au.NALUs) != want {
			t.Fatalf("picture %d keyframe %v idr %v", i, au.Keyframe, h26x.H264HasIDR(au.NALUs))
		}
	}
	if _, err := enc.EncodeYUV420(yuv[:10], w, h, 9); err == nil {
		t.Fatal("short YUV buffer accepted")
	}
	if _, err := enc.EncodeBGR(yuv[:10], w, h, 0, 9); err == nil {
		t.Fatal("short BGR buffer accepted")
	}
	enc.Close()
	enc.Close()
	if _, err := NewH264Encoder(101, 100, 25, 0, 0); err == nil {
		t.Fatal("odd width accepted")
	}
}

// BGR input of another size is scaled to the encoder size.
func TestEncoderScalesInput(t *testing.T) {
	enc, err := NewH264Encoder(128, 96, 25, 300_000, 25)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	pic := make([]byte, 320*240*3)
	testPicture(pic, 320, 240, 1)
	au, err := enc.EncodeBGR(pic, 320, 240, 0, 0)
	if err != nil || au == nil {
		t.Fatal(au, err)
	}
	d, _ := NewDecoder(CodecH264, 1)
	defer d.Close()
	if n, err := d.DecodeNALUs(au.NALUs, 0, true); n != 1 || err != nil {
		t.Fatal(n, err)
	}
	if p, _ := d.Picture(); p.Width != 128 || p.Height != 96 {
		t.Fatalf("%dx%d", p.Width, p.Height)
	}
}
