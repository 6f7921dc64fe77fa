package media

import "testing"

// Clips of an H.265 camera for the live view's H.264 transcode benchmarks
// (no B-frames, a keyframe a second, like cameras send).
var (
	clipH265At720  = clipSpec{"h265-720.hevc", "1280x720", 30, 30, []string{"-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=none:bframes=0:keyint=30", "-b:v", "3M"}}
	clipH265At1080 = clipSpec{"h265-1080.hevc", "1920x1080", 30, 30, []string{"-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=none:bframes=0:keyint=30", "-b:v", "5M"}}
)

// benchTranscode is what the live view does per camera picture for a
// browser without H.265: decode on one thread, encode H.264 at width (the
// transcode's default is 1280) at 2 Mbit/s. cpu-%/camera@fps is the share
// of one core a 30 fps camera costs.
func benchTranscode(b *testing.B, spec clipSpec, width int) {
	_, pkts := readPackets(b, clip(b, spec))
	d, err := NewDecoder(CodecH265, 1)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	var enc *Encoder
	defer func() {
		if enc != nil {
			enc.Close()
		}
	}()
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := i % len(pkts)
		if _, err := d.Decode(pkts[k].Data, int64(i), pkts[k].Keyframe); err != nil {
			b.Fatal(err)
		}
		p, ok := d.Picture()
		if !ok {
			continue
		}
		if enc == nil {
			w, h := ScaledSize(p.Width, p.Height, min(width, p.Width))
			if enc, err = NewH264Encoder(w, h, 30, 2_000_000, 60); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := enc.EncodePicture(d, int64(i)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	b.ReportMetric(float64(b.N)/cpu.Seconds(), "frames/cpu-s")
	b.ReportMetric(100*cpu.Seconds()/float64(b.N)*30, "cpu-%/camera@30fps")
}

func BenchmarkTranscodeH265To264At720p(b *testing.B)        { benchTranscode(b, clipH265At720, 1280) }
func BenchmarkTranscodeH265To264At1080pTo720p(b *testing.B) { benchTranscode(b, clipH265At1080, 1280) }
func BenchmarkTranscodeH265To264At1080p(b *testing.B)       { benchTranscode(b, clipH265At1080, 1920) }
