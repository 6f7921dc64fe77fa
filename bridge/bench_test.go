package bridge

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/imageflowcanvas/imageflow/bus"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// BenchmarkMirror measures how fast a Mirror drains a backlog from JetStream
// into Kafka (franz-go's kfake over TCP on 127.0.0.1, acks=all): b.N
// messages are queued first, then the clock runs from Start until Kafka
// confirmed the last one. Progress messages are ~200 bytes of JSON; archive
// frames carry a 33 KiB JPEG-sized payload.
func BenchmarkMirror(b *testing.B) {
	for _, bc := range []struct {
		name, stream, format string
		payload              int
	}{
		{"progress-json", StreamProgress, FormatJSON, 0},
		{"progress-protobuf", StreamProgress, FormatProtobuf, 0},
		{"archive-json", StreamArchive, FormatJSON, 33 << 10},
		{"archive-protobuf", StreamArchive, FormatProtobuf, 33 << 10},
	} {
		b.Run(bc.name, func(b *testing.B) {
			bs := &bus.Bus{Config: bus.Config{DataDir: b.TempDir(), Logger: quietLogger()}}
			if err := bs.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			defer bs.Close()
			kc, err := kfake.NewCluster(kfake.NumBrokers(1))
			if err != nil {
				b.Fatal(err)
			}
			defer kc.Close()
			s := bs.Subjects()
			af := &busv1.ArchiveFrame{ContentType: "image/jpeg", Data: make([]byte, bc.payload)}
			var bytes int
			for i := range b.N {
				id := "id-" + strconv.Itoa(i%16)
				var err error
				if bc.stream == StreamArchive {
					af.Camera, af.Pts = id, int64(i)
					err = bus.Publish(bs.Conn(), s.Archive(id), af)
				} else {
					err = bus.Publish(bs.Conn(), s.Progress(id), progress(id, i))
				}
				if err != nil {
					b.Fatal(err)
				}
				if i%1000 == 999 {
					_ = bs.Conn().Flush()
				}
			}
			if bc.stream == StreamArchive {
				bytes = bc.payload
			}
			_ = bs.Conn().Flush()
			m, err := NewMirror(Config{Bus: bs, Brokers: kc.ListenAddrs(), Streams: []string{bc.stream},
				Format: bc.format, Logger: quietLogger(), MaxMessageBytes: 1 << 20})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			b.SetBytes(int64(bytes))
			b.ResetTimer()
			start := time.Now()
			if err := m.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			deadline := time.Now().Add(2 * time.Minute)
			for m.Stats(bc.stream).Mirrored < uint64(b.N) {
				if time.Now().After(deadline) {
					b.Fatalf("mirrored %d of %d", m.Stats(bc.stream).Mirrored, b.N)
				}
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}
