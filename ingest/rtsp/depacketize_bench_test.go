package rtsp

import (
	"testing"

	"github.com/bluenviron/gortsplib/v4/pkg/format"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

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
	pkts := fuzzPackets(seedAUs(b, smallAUs(b)))
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
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := i % len(pkts)
		p := *pkts[k]
		// Timestamps keep rising across loops of the clip.
		p.Timestamp += uint32(i/len(pkts)) * 90000 * 3
		vt.writePacket(&p)
	}
	b.StopTimer()
	b.ReportMetric(float64(sink.aus)/b.Elapsed().Seconds(), "AUs/s")
}
