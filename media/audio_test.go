package media

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// aacFrames encodes seconds of a 440 Hz tone at rate Hz with FFmpeg's AAC
// encoder and returns the raw AAC frames (ADTS headers stripped), as the
// bus carries them.
func aacFrames(tb testing.TB, rate, channels, seconds int) [][]byte {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "tone.aac")
	out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
		"-i", "sine=frequency=440:sample_rate="+itoa(rate), "-t", itoa(seconds), "-ac", itoa(channels),
		"-c:a", "aac", "-b:a", "64k", "-f", "adts", p).CombinedOutput()
	if err != nil {
		tb.Fatalf("ffmpeg: %v: %s", err, out)
	}
	raw, err := os.ReadFile(p)
	if err != nil {
		tb.Fatal(err)
	}
	var frames [][]byte
	for len(raw) >= 7 {
		if raw[0] != 0xff || raw[1]&0xf0 != 0xf0 {
			tb.Fatalf("bad ADTS sync")
		}
		hdr := 7
		if raw[1]&1 == 0 {
			hdr = 9 // with CRC
		}
		n := int(raw[3]&3)<<11 | int(raw[4])<<3 | int(raw[5])>>5
		if n < hdr || n > len(raw) {
			tb.Fatalf("bad ADTS length %d", n)
		}
		frames = append(frames, raw[hdr:n])
		raw = raw[n:]
	}
	return frames
}

// AAC at 44.1 kHz comes out as 20 ms Opus packets on a 48 kHz timeline that
// starts at the source's time and runs without gaps.
func TestAudioTranscoderAACToOpus(t *testing.T) {
	frames := aacFrames(t, 44100, 1, 2)
	tr, err := NewAudioTranscoder(AudioAAC, 44100, 1, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	const start = 1 << 33 // past 32 bits: the timeline is 64-bit
	var pts []int64
	var bytes int
	for i, f := range frames {
		src := int64(i) * 1024 // 44.1 kHz samples
		err := tr.Transcode(f, start+src*OpusRate/44100, func(opus []byte, p int64) {
			pts = append(pts, p)
			bytes += len(opus)
		})
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	// 2 s of sound (plus the AAC encoder's priming, less what the encoders
	// still hold): ~100 packets of 20 ms.
	packetsWant := len(frames) * 1024 * 50 / 44100
	if len(pts) < packetsWant-5 || len(pts) > packetsWant+1 {
		t.Fatalf("%d Opus packets for 2 s", len(pts))
	}
	for i := 1; i < len(pts); i++ {
		if pts[i]-pts[i-1] != 960 {
			t.Fatalf("packet %d at %d, previous at %d: want 960 apart", i, pts[i], pts[i-1])
		}
	}
	if d := pts[0] - start; d < -2000 || d > 2000 {
		t.Fatalf("first packet at %d, source started at %d", pts[0], int64(start))
	}
	t.Logf("%d AAC frames -> %d Opus packets, %d bytes (%.0f kbit/s)", len(frames), len(pts), bytes, float64(bytes*8)/float64(len(pts))/0.02/1000)

	// A frame after a 1 s gap restarts the timeline at its own time.
	var after []int64
	for i := 0; i < 10; i++ {
		_ = tr.Transcode(frames[i], start+3*OpusRate+int64(i)*1024*OpusRate/44100, func(_ []byte, p int64) { after = append(after, p) })
	}
	if len(after) == 0 || after[len(after)-1] < start+3*OpusRate {
		t.Fatalf("after a gap: packets at %v", after)
	}
}

// G.711 (8 kHz) is resampled to 48 kHz Opus too.
func TestAudioTranscoderPCMU(t *testing.T) {
	tr, err := NewAudioTranscoder(AudioPCMU, 8000, 1, nil, 32000)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	frame := make([]byte, 160) // 20 ms
	for i := range frame {
		frame[i] = byte(i * 7)
	}
	n := 0
	for i := 0; i < 50; i++ {
		if err := tr.Transcode(frame, int64(i)*960, func([]byte, int64) { n++ }); err != nil {
			t.Fatal(err)
		}
	}
	if n < 45 {
		t.Fatalf("%d Opus packets for 1 s of G.711", n)
	}
}

// Bad arguments and frames are errors, never crashes.
func TestAudioTranscoderBadInput(t *testing.T) {
	for _, c := range []struct {
		codec          AudioCodec
		rate, channels int
	}{{AudioAAC, 0, 1}, {AudioAAC, 44100, 0}, {AudioAAC, 12345, 1}, {AudioUnknown, 8000, 1}, {AudioAAC, 1 << 30, 2}} {
		if tr, err := NewAudioTranscoder(c.codec, c.rate, c.channels, nil, 0); err == nil {
			tr.Close()
			t.Errorf("codec %d %d Hz %d ch: opened", c.codec, c.rate, c.channels)
		}
	}
	tr, err := NewAudioTranscoder(AudioAAC, 48000, 2, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Transcode(nil, 0, func([]byte, int64) {}); err == nil {
		t.Error("empty frame accepted")
	}
	if err := tr.Transcode(make([]byte, maxAudioFrame+1), 0, func([]byte, int64) {}); err == nil {
		t.Error("oversized frame accepted")
	}
	_ = tr.Transcode([]byte{0xde, 0xad, 0xbe, 0xef}, 0, func([]byte, int64) {})
	tr.Close()
	tr.Close()
	if err := tr.Transcode([]byte{1}, 0, func([]byte, int64) {}); err != ErrClosed {
		t.Errorf("after Close: %v", err)
	}
}

// FuzzAudioTranscodeAAC feeds mutated AAC frames after real ones: errors
// are values, nothing crashes.
func FuzzAudioTranscodeAAC(f *testing.F) {
	for _, fr := range aacFrames(f, 48000, 2, 1)[:8] {
		f.Add(fr)
	}
	f.Add([]byte{0})
	f.Add([]byte{0xff, 0xf1, 0x50, 0x80})
	good := aacFrames(f, 48000, 2, 1)[:4]
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := NewAudioTranscoder(AudioAAC, 48000, 2, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		for i, g := range good {
			_ = tr.Transcode(g, int64(i)*1024, func([]byte, int64) {})
		}
		_ = tr.Transcode(data, 4*1024, func([]byte, int64) {})
		_ = tr.Transcode(good[0], 5*1024, func([]byte, int64) {})
	})
}

// BenchmarkAACToOpus is the cost of one camera's AAC→Opus transcode: one op
// per AAC frame (1024 samples at 48 kHz, 21.3 ms of sound). cpu-%/camera is
// the share of one core a live camera's audio takes.
func BenchmarkAACToOpus(b *testing.B) {
	frames := aacFrames(b, 48000, 2, 4)
	tr, err := NewAudioTranscoder(AudioAAC, 48000, 2, nil, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	emit := func([]byte, int64) {}
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := tr.Transcode(frames[i%len(frames)], int64(i)*1024, emit); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	audio := float64(b.N) * 1024 / 48000
	b.ReportMetric(100*cpu.Seconds()/audio, "cpu-%/camera")
}
