package rtsp

import (
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/bus/hub"
	"github.com/imageflowcanvas/imageflow/ingest"
	"github.com/imageflowcanvas/imageflow/media/h26x/h26xtest"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// recSink keeps copies of what a track writes (the track reuses its
// message).
type recSink struct {
	aus    []*busv1.AccessUnit
	tracks int
}

func (s *recSink) WriteAccessUnit(au *busv1.AccessUnit) error {
	s.aus = append(s.aus, proto.Clone(au).(*busv1.AccessUnit))
	return nil
}
func (s *recSink) SetState(string, error)         {}
func (s *recSink) SetTrack(busv1.Codec, int, int) { s.tracks++ }

// Cameras without marker bits: rtph264 closes a unit on the next timestamp,
// and the unit keeps its own timestamp, not the next one.
func TestTimestampSplit(t *testing.T) {
	sink := &recSink{}
	vt, err := newVideoTrack(&format.H264{PayloadTyp: 96, PacketizationMode: 1}, sink, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, ts := range []uint32{1000, 4000, 7000, 10000} {
		vt.writePacket(&rtp.Packet{
			Header:  rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: uint16(i), Timestamp: ts, Marker: ts >= 7000},
			Payload: []byte{0x41, byte(i)},
		})
	}
	var got []uint32
	for _, au := range sink.aus {
		got = append(got, au.RtpTimestamp)
	}
	if len(got) != 3 || got[0] != 1000 || got[1] != 4000 || got[2] != 7000 {
		t.Fatalf("access unit timestamps %v, want [1000 4000 7000]", got)
	}
	if sink.aus[1].Pts != 3000*1_000_000_000/90000 { // 3000 ticks at 90 kHz
		t.Fatalf("pts %d", sink.aus[1].Pts)
	}
}

// countSink counts access units without keeping them.
type countSink struct{ aus, nalus int }

func (s *countSink) WriteAccessUnit(au *busv1.AccessUnit) error {
	s.aus++
	s.nalus += len(au.Nalus)
	return nil
}
func (s *countSink) SetState(string, error)         {}
func (s *countSink) SetTrack(busv1.Codec, int, int) {}

// BenchmarkDepacketizeH264 feeds the RTP packets of a 640x360 clip (FU-A at
// 300 bytes) through the RTSP video track, one op per packet: the per-packet
// cost of RTSP ingest before the bus.
func BenchmarkDepacketizeH264(b *testing.B) {
	pkts := h26xtest.Packets(h26xtest.EncodeAUs(b, smallAUs(b)))
	sink := &countSink{}
	vt, err := newVideoTrack(&format.H264{PayloadTyp: 96, PacketizationMode: 1}, sink, nil)
	if err != nil {
		b.Fatal(err)
	}
	var bytes int64
	for _, p := range pkts {
		bytes += int64(len(p.Payload))
	}
	b.SetBytes(bytes / int64(len(pkts)))
	b.ReportAllocs()
	// One packet variable for the whole loop: a copy per op would count
	// as the track's garbage.
	var p rtp.Packet
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := i % len(pkts)
		p = *pkts[k]
		// Timestamps keep rising across loops of the clip.
		p.Timestamp += uint32(i/len(pkts)) * 90000 * 3
		vt.writePacket(&p)
	}
	b.StopTimer()
	b.ReportMetric(float64(sink.aus)/b.Elapsed().Seconds(), "AUs/s")
}

// BenchmarkPublishH264 is BenchmarkDepacketizeH264 with the real publish
// path behind the track: a BusSink marshalling every access unit onto the
// embedded NATS bus (nothing subscribed), one op per packet. allocs/op is
// the publish side's garbage per packet.
func BenchmarkPublishH264(b *testing.B) {
	pkts := h26xtest.Packets(h26xtest.EncodeAUs(b, smallAUs(b)))
	bb := startBus(b)
	sink := ingest.NewBusSink(bb.Conn(), bb.Subjects(), "bench", nil)
	vt, err := newVideoTrack(&format.H264{PayloadTyp: 96, PacketizationMode: 1}, sink, nil)
	if err != nil {
		b.Fatal(err)
	}
	var bytes int64
	for _, p := range pkts {
		bytes += int64(len(p.Payload))
	}
	b.SetBytes(bytes / int64(len(pkts)))
	b.ReportAllocs()
	// One packet variable for the whole loop: a copy per op would count
	// as the track's garbage.
	var p rtp.Packet
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := i % len(pkts)
		p = *pkts[k]
		p.Timestamp += uint32(i/len(pkts)) * 90000 * 3
		vt.writePacket(&p)
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	frames, _ := sink.Totals()
	if frames > 0 {
		// Per access unit, including the embedded NATS server's share.
		b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(frames), "allocs/AU")
		b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(frames), "B/AU")
	}
	b.ReportMetric(float64(frames)/b.Elapsed().Seconds(), "AUs/s")
	if frames > 0 {
		// allocs/op times pkts/AU is the garbage per access unit.
		b.ReportMetric(float64(b.N)/float64(frames), "pkts/AU")
	}
}

// BenchmarkRelayH264 is BenchmarkPublishH264 with a hub reader behind the
// bus, as a relayed camera runs: "bus" is the hub subscribed to the
// camera's video over the embedded NATS server, "local" the sink feeding
// the hub in-process (hub.KeepLocal) and publishing nothing, since nobody
// else listens. One op per packet; cpu-ns/AU is the whole process's CPU
// time (every goroutine of the NATS hop included) per access unit.
func BenchmarkRelayH264(b *testing.B) {
	for _, mode := range []string{"bus", "local"} {
		b.Run(mode, func(b *testing.B) {
			pkts := h26xtest.Packets(h26xtest.EncodeAUs(b, smallAUs(b)))
			bb := startBus(b)
			h := hub.New(bb.Conn(), bb.Subjects())
			defer h.Close()
			sink := ingest.NewBusSink(bb.Conn(), bb.Subjects(), "bench", nil)
			if mode == "local" {
				feed, release := h.KeepLocal("bench")
				defer release()
				sink.FeedLocal(feed, bb.Interest)
			}
			r, err := h.Subscribe("bench", "bench", 1<<16)
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			_ = bb.Conn().Flush()
			var received atomic.Int64
			go func() {
				for range r.C() {
					received.Add(1)
				}
			}()
			vt, err := newVideoTrack(&format.H264{PayloadTyp: 96, PacketizationMode: 1}, sink, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			var p rtp.Packet
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			cpu0 := processCPU()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				k := i % len(pkts)
				p = *pkts[k]
				p.Timestamp += uint32(i/len(pkts)) * 90000 * 3
				vt.writePacket(&p)
			}
			frames, _ := sink.Totals()
			// The reader starts at the first keyframe: wait for what it
			// will get.
			deadline := time.Now().Add(10 * time.Second)
			for received.Load() < int64(frames)-int64(len(pkts)) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			cpu := processCPU() - cpu0
			runtime.ReadMemStats(&after)
			if frames > 0 {
				b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(frames), "allocs/AU")
				b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(frames), "B/AU")
				b.ReportMetric(float64(cpu.Nanoseconds())/float64(frames), "cpu-ns/AU")
			}
		})
	}
}

// processCPU is this process's user and system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
