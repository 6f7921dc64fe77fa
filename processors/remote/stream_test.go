package remote

import (
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"gocv.io/x/gocv"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/processors/modelfiles"
	"github.com/imageflowcanvas/imageflow/processors/yolo"
	"github.com/imageflowcanvas/imageflow/processors/yolo/yolotest"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	streamv1 "github.com/imageflowcanvas/imageflow/proto/streamv1"
)

// detectPipeline is a resize + detect pipeline: the frame is halved, a YOLO
// ONNX model (built by yolotest, run by OpenCV DNN) finds boxes on the small
// picture, and they are scaled back to the frame's pixels.
type detectPipeline struct {
	det   processors.Processor
	small gocv.Mat
}

func newDetectPipeline(t testing.TB) *detectPipeline {
	out, shape := yolotest.V8Output(2, []yolotest.Box{
		{CX: 320, CY: 320, W: 160, H: 200, Class: 0, Score: 0.9},
		{CX: 100, CY: 300, W: 60, H: 60, Class: 1, Score: 0.7},
	})
	b, err := yolotest.Model(640, out, shape)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "m.onnx")
	os.WriteFile(path, b, 0o644)
	spec := processors.Spec{Name: "detect", Params: yolo.ParamSpecs()}
	params, err := spec.Resolve(map[string]any{"model": path, "classes": "person,dog"})
	if err != nil {
		t.Fatal(err)
	}
	det, err := yolo.NewONNX(params, modelfiles.New(filepath.Dir(path)))
	if err != nil {
		t.Fatal(err)
	}
	return &detectPipeline{det: det, small: gocv.NewMat()}
}

func (p *detectPipeline) Run(ctx context.Context, img gocv.Mat) (*busv1.Result, error) {
	gocv.Resize(img, &p.small, image.Pt(img.Cols()/2, img.Rows()/2), 0, 0, gocv.InterpolationArea)
	var out processors.Output
	if err := p.det.Process(ctx, &processors.Input{Image: p.small}, &out); err != nil {
		return nil, err
	}
	for _, d := range out.Detections {
		d.X, d.Y, d.W, d.H = d.X*2, d.Y*2, d.W*2, d.H*2
	}
	return &busv1.Result{Detections: out.Detections, Width: uint32(img.Cols()), Height: uint32(img.Rows())}, nil
}

func (p *detectPipeline) Close() error { p.small.Close(); return p.det.Close() }

var errNoPipeline = errors.New("no such pipeline")

// startStream runs a StreamServer over real gRPC on 127.0.0.1.
func startStream(t testing.TB) (streamv1.StreamServiceClient, func()) {
	s := &StreamServer{
		Compile: func(ctx context.Context, id string) (Pipeline, error) {
			if id != "detect" {
				return nil, errNoPipeline
			}
			return newDetectPipeline(t), nil
		},
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveGRPC(ctx, lis, s.Register) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(MaxMessageSize)))
	if err != nil {
		t.Fatal(err)
	}
	return streamv1.NewStreamServiceClient(conn), func() { conn.Close(); cancel(); <-done }
}

// testJPEG is messi5.jpg scaled to 640x480, JPEG-encoded.
func testJPEG(t testing.TB) ([]byte, gocv.Mat) {
	src := readImage(t)
	defer src.Close()
	img := gocv.NewMat()
	gocv.Resize(src, &img, image.Pt(640, 480), 0, 0, gocv.InterpolationArea)
	buf, err := gocv.IMEncode(gocv.JPEGFileExt, img)
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	return append([]byte(nil), buf.GetBytes()...), img
}

func TestStreamProcess(t *testing.T) {
	jpg, _ := testJPEG(t)
	client, stop := startStream(t)
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// What the same pipeline gives in-process on the decoded JPEG.
	decoded, err := DecodeToMat(jpg)
	if err != nil {
		t.Fatal(err)
	}
	defer decoded.Close()
	local := newDetectPipeline(t)
	want, err := local.Run(ctx, decoded)
	local.Close()
	if err != nil || len(want.Detections) != 2 {
		t.Fatalf("in-process: %v %v", want, err)
	}

	st, err := client.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := decoded.DataPtrUint8()
	frames := []*streamv1.StreamFrame{
		{Sequence: 10, Timestamp: 111, Format: busv1.PixelFormat_PIXEL_FORMAT_JPEG, Data: jpg},
		{Sequence: 11, Timestamp: 112, Format: busv1.PixelFormat_PIXEL_FORMAT_JPEG, Data: []byte("not a jpeg")},
		{Sequence: 12, Timestamp: 113, Format: busv1.PixelFormat_PIXEL_FORMAT_BGR24, Width: 640, Height: 480, Data: raw},
		{Sequence: 13, Timestamp: 114, Format: busv1.PixelFormat_PIXEL_FORMAT_BGR24, Width: 640, Height: 480, Data: raw[:100]},
	}
	if err := st.Send(&streamv1.StreamRequest{Pipeline: "detect", Frame: frames[0]}); err != nil {
		t.Fatal(err)
	}
	for _, f := range frames[1:] {
		if err := st.Send(&streamv1.StreamRequest{Frame: f}); err != nil {
			t.Fatal(err)
		}
	}
	st.CloseSend()
	for i, f := range frames {
		r, err := st.Recv()
		if err != nil {
			t.Fatalf("result %d: %v", i, err)
		}
		if r.Sequence != f.Sequence || r.Timestamp != f.Timestamp {
			t.Errorf("result %d: sequence %d ts %d, want %d %d", i, r.Sequence, r.Timestamp, f.Sequence, f.Timestamp)
		}
		bad := i == 1 || i == 3
		if bad != (r.Error != "") {
			t.Errorf("result %d: error %q", i, r.Error)
		}
		if !bad && fmt.Sprint(r.Result.Detections) != fmt.Sprint(want.Detections) {
			t.Errorf("result %d: %v, want %v", i, r.Result.Detections, want.Detections)
		}
		if !bad && (r.Result.Width != 640 || r.Result.Height != 480 || r.LatencyNs <= 0) {
			t.Errorf("result %d: %v", i, r)
		}
	}
	if _, err := st.Recv(); err != io.EOF {
		t.Errorf("after the last result: %v", err)
	}

	for id, code := range map[string]codes.Code{"nope": codes.NotFound, "": codes.InvalidArgument} {
		st, _ := client.Process(ctx)
		st.Send(&streamv1.StreamRequest{Pipeline: id, Frame: frames[0]})
		if _, err := st.Recv(); status.Code(err) != code {
			t.Errorf("pipeline %q: %v, want %v", id, err, code)
		}
	}
}

// BenchmarkStreamRoundTrip sends a 640x480 JPEG through the resize + detect
// pipeline over the StreamService on 127.0.0.1, one frame in flight, and
// reports the round-trip percentiles.
func BenchmarkStreamRoundTrip(b *testing.B) {
	jpg, img := testJPEG(b)
	img.Close()
	client, stop := startStream(b)
	defer stop()
	st, err := client.Process(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	send := func(i int, first bool) time.Duration {
		req := &streamv1.StreamRequest{Frame: &streamv1.StreamFrame{Sequence: uint64(i), Format: busv1.PixelFormat_PIXEL_FORMAT_JPEG, Data: jpg}}
		if first {
			req.Pipeline = "detect"
		}
		start := time.Now()
		if err := st.Send(req); err != nil {
			b.Fatal(err)
		}
		r, err := st.Recv()
		if err != nil || r.Error != "" || len(r.Result.Detections) != 2 {
			b.Fatalf("%v %v", r, err)
		}
		return time.Since(start)
	}
	send(0, true) // compile and warm up
	lat := make([]time.Duration, 0, b.N)
	b.SetBytes(int64(len(jpg)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		lat = append(lat, send(i+1, false))
	}
	b.StopTimer()
	st.CloseSend()
	reportPercentiles(b, lat)
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// BenchmarkProcessInProcess and BenchmarkProcessRemote measure what the gRPC
// hop costs: the same grey processor on a 640x480 frame, called directly and
// through Serve + NewClient on 127.0.0.1 (raw BGR both ways).
func BenchmarkProcessInProcess(b *testing.B) {
	_, img := testJPEG(b)
	defer img.Close()
	benchProcess(b, &grayProc{}, img)
}

func BenchmarkProcessRemote(b *testing.B) {
	_, img := testJPEG(b)
	defer img.Close()
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, lis, "gray", graySpec, &grayProc{}) }()
	defer func() { cancel(); <-done }()
	p, err := NewClient(lis.Addr().String(), ClientOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	benchProcess(b, p, img)
}

func benchProcess(b *testing.B, p processors.Processor, img gocv.Mat) {
	run := func() time.Duration {
		start := time.Now()
		var out processors.Output
		if err := p.Process(context.Background(), &processors.Input{Image: img}, &out); err != nil {
			b.Fatal(err)
		}
		out.Image.Close()
		return time.Since(start)
	}
	run()
	lat := make([]time.Duration, 0, b.N)
	b.SetBytes(int64(img.Total() * img.Channels()))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		lat = append(lat, run())
	}
	b.StopTimer()
	reportPercentiles(b, lat)
}
