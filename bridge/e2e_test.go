package bridge

import (
	"bytes"
	"image/jpeg"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gocv.io/x/gocv"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/bus"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// TestPublishersThroughMirror runs the three components as the server wires
// them: frames and node metrics on the bus end up in Kafka as JSON records
// a data platform can read (the JPEG base64 in "data").
func TestPublishersThroughMirror(t *testing.T) {
	b := startBus(t)
	k := startKafka(t)
	s := b.Subjects()
	reg := prometheus.NewRegistry()
	m := newTestMirror(t, b, k, func(c *Config) { c.Registerer = reg })

	mp := &MetricsPublisher{Conn: b.Conn(), Subjects: s, Node: "edge-1", Gatherer: reg, Interval: time.Hour, Logger: quietLogger()}
	if err := mp.Start(); err != nil { // publishes one snapshot at once
		t.Fatal(err)
	}
	defer mp.Close()
	a := &Archiver{Conn: b.Conn(), Subjects: s, Camera: "door", Interval: time.Hour, Logger: quietLogger()}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	frame, _ := bgrFrame(t)
	frame.Camera = "door"
	publish(t, b, s.Frames("door"), frame)

	waitFor(t, 10*time.Second, "archive and metrics mirrored", func() bool {
		return m.Stats(StreamArchive).Mirrored == 1 && m.Stats(StreamMetrics).Mirrored >= 1
	})
	recs := readTopic(t, k.addr(), "imageflow.archive")
	var af busv1.ArchiveFrame
	if len(recs) != 1 || string(recs[0].Key) != "door" {
		t.Fatalf("archive records: %d", len(recs))
	}
	if err := protojson.Unmarshal(recs[0].Value, &af); err != nil {
		t.Fatal(err)
	}
	img, err := jpeg.Decode(bytes.NewReader(af.Data))
	if err != nil || img.Bounds().Dx() != int(frame.Width) {
		t.Fatalf("archived JPEG: %v", err)
	}
	recs = readTopic(t, k.addr(), "imageflow.metrics")
	var nm busv1.NodeMetrics
	if len(recs) < 1 || string(recs[0].Key) != "edge-1" || protojson.Unmarshal(recs[0].Value, &nm) != nil || nm.Node != "edge-1" {
		t.Fatalf("metrics records: %d", len(recs))
	}
	// The publisher saw the Mirror's own metrics in the registry.
	if _, ok := nm.Values[`imageflow_bridge_lag_messages{stream="progress"}`]; !ok {
		t.Fatalf("snapshot lacks the bridge's metrics: %v", nm.Values)
	}
}

// FuzzArchiverFrame feeds arbitrary bytes from the frames subject to the
// encoder: a clear error or a JPEG, never a panic. Without a connection a
// good frame fails only at publish.
func FuzzArchiverFrame(f *testing.F) {
	for _, fr := range []*busv1.Frame{
		{Width: 4, Height: 2, Format: busv1.PixelFormat_PIXEL_FORMAT_BGR24, Data: make([]byte, 24)},
		{Width: 4, Height: 2, Stride: 16, Format: busv1.PixelFormat_PIXEL_FORMAT_RGB24, Data: make([]byte, 28)},
		{Width: 3, Height: 3, Format: busv1.PixelFormat_PIXEL_FORMAT_GRAY8, Data: make([]byte, 9)},
		{Format: busv1.PixelFormat_PIXEL_FORMAT_JPEG, Data: []byte{0xff, 0xd8}},
		{Width: 100, Height: 100, Format: busv1.PixelFormat_PIXEL_FORMAT_BGR24, Data: make([]byte, 10)},
		{Width: 1 << 31, Height: 1 << 31, Format: busv1.PixelFormat_PIXEL_FORMAT_BGR24},
		{Width: 2, Height: 2, Stride: 1 << 31, Format: busv1.PixelFormat_PIXEL_FORMAT_GRAY8, Data: make([]byte, 4)},
	} {
		raw, err := proto.Marshal(fr)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Add([]byte{0xff, 0xff})
	a := &Archiver{Camera: "fuzz", Subjects: bus.Subjects{Prefix: "ifc"}, params: []int{gocv.IMWriteJpegQuality, 80}}
	f.Fuzz(func(t *testing.T, data []byte) {
		err := a.archive(data)
		if err == nil {
			t.Fatal("published without a connection")
		}
	})
}
