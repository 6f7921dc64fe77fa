package media

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/imageflowcanvas/imageflow/media/h26x"
)

type capturedUnit struct {
	key     bool
	pts     int64
	rtp     uint32
	w, h    int
	idr     bool
	sps     bool
	decoded int
}

// runCapture captures until stopAfter units arrived (then cancels) or Run
// returns, decoding every unit with a fresh H264 decoder.
func runCapture(t *testing.T, cfg CaptureConfig, stopAfter int) ([]capturedUnit, *Capture, error) {
	t.Helper()
	dec, err := NewDecoder(CodecH264, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var units []capturedUnit
	var track [3]int
	c := &Capture{CaptureConfig: cfg}
	c.OnTrack = func(codec Codec, w, h int) { track = [3]int{int(codec), w, h} }
	c.OnUnit = func(u *CaptureUnit) error {
		cu := capturedUnit{key: u.Keyframe, pts: u.PTS, rtp: u.RTPTimestamp, w: u.Width, h: u.Height, idr: h26x.H264HasIDR(u.NALUs)}
		for _, n := range u.NALUs {
			if h26x.H264NALUType(n) == h26x.H264NALUTypeSPS {
				cu.sps = true
			}
		}
		cu.decoded, err = dec.DecodeNALUs(u.NALUs, u.PTS, u.Keyframe)
		if err != nil {
			t.Errorf("decode unit %d: %v", len(units), err)
		}
		units = append(units, cu)
		if len(units) == stopAfter {
			cancel()
		}
		return nil
	}
	err = c.Run(ctx)
	if track[0] != int(CodecH264) {
		t.Fatalf("OnTrack = %v", track)
	}
	return units, c, err
}

func checkUnits(t *testing.T, units []capturedUnit, w, h int) {
	t.Helper()
	if !units[0].key {
		t.Fatal("first unit is not a keyframe")
	}
	for i, u := range units {
		if u.key != u.idr || (u.key && !u.sps) {
			t.Fatalf("unit %d: keyframe %v idr %v sps %v", i, u.key, u.idr, u.sps)
		}
		if u.w != w || u.h != h {
			t.Fatalf("unit %d size %dx%d", i, u.w, u.h)
		}
		if want := uint32(u.pts * 9 / 100000); u.rtp != want {
			t.Fatalf("unit %d rtp %d want %d", i, u.rtp, want)
		}
	}
}

// A non-H264 file is re-encoded and looped: timestamps keep increasing
// across the loop point and every unit decodes.
func TestCaptureTranscodeLoop(t *testing.T) {
	path := clip(t, clipMPEG4) // 30 pictures at 10 fps
	units, c, err := runCapture(t, CaptureConfig{URL: path, Loop: true, Width: 160}, 75)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	if !c.Stats.Transcoded.Load() || c.Stats.Loops.Load() < 2 {
		t.Fatalf("transcoded %v loops %d", c.Stats.Transcoded.Load(), c.Stats.Loops.Load())
	}
	checkUnits(t, units, 160, 120)
	decoded := 0
	for i, u := range units {
		decoded += u.decoded
		if i > 0 && u.pts <= units[i-1].pts {
			t.Fatalf("pts not increasing at %d: %d after %d", i, u.pts, units[i-1].pts)
		}
		// 10 fps: each unit 100 ms after the previous one, loop point included.
		if i > 0 && u.pts-units[i-1].pts != int64(100*time.Millisecond) {
			t.Fatalf("pts step at %d = %v", i, time.Duration(u.pts-units[i-1].pts))
		}
	}
	if decoded != len(units) {
		t.Fatalf("decoded %d of %d", decoded, len(units))
	}
	// GOP defaults to 2 s = 20 pictures, and each loop restarts on an IDR.
	if !units[20].key || !units[30].key {
		t.Fatalf("keyframes at 20 %v, 30 (loop) %v", units[20].key, units[30].key)
	}

	// A second run continues the clock.
	last := units[len(units)-1].pts
	c.OnUnit = func(u *CaptureUnit) error {
		if u.PTS <= last {
			t.Errorf("reopened run starts at %d, before %d", u.PTS, last)
		}
		return io.ErrShortWrite
	}
	if err := c.Run(context.Background()); !errors.Is(err, io.ErrShortWrite) {
		t.Fatalf("OnUnit error not returned: %v", err)
	}
}

// H264 with B-frames passes through unchanged; without Loop Run ends with
// io.EOF after every packet.
func TestCapturePassthrough(t *testing.T) {
	units, c, err := runCapture(t, CaptureConfig{URL: clip(t, clipH264B)}, 0)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("Run = %v", err)
	}
	if c.Stats.Transcoded.Load() {
		t.Fatal("H264 was transcoded")
	}
	if len(units) != clipH264B.frames {
		t.Fatalf("%d units, want %d", len(units), clipH264B.frames)
	}
	checkUnits(t, units, 352, 288)
	keys := 0
	for _, u := range units {
		if u.key {
			keys++
		}
	}
	if keys != 4 { // 40 pictures, GOP 12
		t.Fatalf("%d keyframes", keys)
	}
}

// Realtime paces by timestamps: 12 units of a 10 fps clip take ~1.1 s.
func TestCaptureRealtime(t *testing.T) {
	start := time.Now()
	units, _, err := runCapture(t, CaptureConfig{URL: clip(t, clipMPEG4), Realtime: true, Loop: true}, 12)
	el := time.Since(start)
	if !errors.Is(err, context.Canceled) || len(units) != 12 {
		t.Fatalf("Run = %v, %d units", err, len(units))
	}
	if el < 1000*time.Millisecond || el > 3*time.Second {
		t.Fatalf("12 units at 10 fps took %v", el)
	}
}

func TestCaptureMissingFile(t *testing.T) {
	c := &Capture{CaptureConfig: CaptureConfig{URL: "/nonexistent.mp4"}, OnUnit: func(*CaptureUnit) error { return nil }}
	if err := c.Run(context.Background()); err == nil {
		t.Fatal("missing file captured")
	}
}

// B-frame H265 and (forced) H264 mp4 files are re-encoded picture for
// picture: the decoder gets Annex-B parameters, and the pictures it still
// holds at the end are drained, none lost.
func TestCaptureTranscodeDrains(t *testing.T) {
	for _, tc := range []struct {
		spec clipSpec
		w, h int
	}{{clipH265, 320, 240}, {clipH264B, 352, 288}} {
		t.Run(tc.spec.name, func(t *testing.T) {
			units, c, err := runCapture(t, CaptureConfig{URL: clip(t, tc.spec), Transcode: true}, 0)
			if !errors.Is(err, io.EOF) {
				t.Fatalf("Run = %v", err)
			}
			if !c.Stats.Transcoded.Load() || len(units) != tc.spec.frames || c.Stats.DecodeErrors.Load() != 0 {
				t.Fatalf("transcoded %v, %d units of %d pictures, %d errors", c.Stats.Transcoded.Load(), len(units), tc.spec.frames, c.Stats.DecodeErrors.Load())
			}
			checkUnits(t, units, tc.w, tc.h)
			for i := 1; i < len(units); i++ {
				if units[i].pts <= units[i-1].pts {
					t.Fatalf("re-encoded pts not increasing at %d", i)
				}
			}
		})
	}
}
