package media

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// benchClip is the 1080p H264 clip: IFC_BENCH_CLIP names one (the bench
// script passes the clip it also gives ffmpeg), else one is made.
func benchClip(b *testing.B) string {
	if p := os.Getenv("IFC_BENCH_CLIP"); p != "" {
		return p
	}
	return clip(b, clip1080)
}

// BenchmarkDecode1080p decodes a 1080p H264 clip on one thread, one op per
// access unit, looping the clip (flush at each end).
func BenchmarkDecode1080p(b *testing.B) { benchDecode(b, false) }

// BenchmarkDecode1080pNoDeblock is BenchmarkDecode1080p without the loop
// filter, as the frame source decodes for detection.
func BenchmarkDecode1080pNoDeblock(b *testing.B) { benchDecode(b, true) }

func benchDecode(b *testing.B, noDeblock bool) {
	info, pkts := readPackets(b, benchClip(b))
	d, err := NewDecoder(CodecH264, 1)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	d.SetSkipLoopFilter(noDeblock)
	var bytes int64
	for _, p := range pkts {
		bytes += int64(len(p.Data))
	}
	b.SetBytes(bytes / int64(len(pkts)))
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	frames := 0
	for i := 0; i < b.N; i++ {
		k := i % len(pkts)
		p := &pkts[k]
		n, err := d.Decode(p.Data, int64(i), p.Keyframe)
		if err != nil {
			b.Fatal(err)
		}
		frames += n
		if k == len(pkts)-1 {
			n, _ := d.Flush()
			frames += n
		}
	}
	b.StopTimer()
	// CPU time (user+system of the whole process) is what the bench script
	// compares: on a shared machine wall time measures the neighbours.
	cpu := cpuTime() - cpu0
	b.ReportMetric(float64(frames)/b.Elapsed().Seconds(), "frames/s")
	b.ReportMetric(float64(frames)/cpu.Seconds(), "frames/cpu-s")
	b.ReportMetric(float64(info.Width), "width")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkDecodeScale1080pTo640 adds the BGR24 scale to 640 wide that the
// frame source does for each sampled picture.
func BenchmarkDecodeScale1080pTo640(b *testing.B) {
	_, pkts := readPackets(b, benchClip(b))
	d, err := NewDecoder(CodecH264, 1)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	var buf []byte
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := i % len(pkts)
		p := &pkts[k]
		if _, err := d.Decode(p.Data, int64(i), p.Keyframe); err != nil {
			b.Fatal(err)
		}
		if _, ok := d.Picture(); ok {
			if buf, _, _, err = d.ScaleBGR(buf, 640); err != nil {
				b.Fatal(err)
			}
		}
		if k == len(pkts)-1 {
			_, _ = d.Flush()
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
}

// BenchmarkScaleBGR1080pTo640 is the frame source's scale of one decoded
// 1080p picture to 640 wide BGR24, alone.
func BenchmarkScaleBGR1080pTo640(b *testing.B) {
	_, pkts := readPackets(b, benchClip(b))
	d, err := NewDecoder(CodecH264, 1)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	for i := 0; i < len(pkts); i++ {
		if _, err := d.Decode(pkts[i].Data, int64(i), pkts[i].Keyframe); err != nil {
			b.Fatal(err)
		}
		if _, ok := d.Picture(); ok {
			break
		}
	}
	var buf []byte
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if buf, _, _, err = d.ScaleBGR(buf, 640); err != nil {
			b.Fatal(err)
		}
	}
}
