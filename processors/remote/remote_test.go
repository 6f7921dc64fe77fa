package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"gocv.io/x/gocv"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/imageflowcanvas/imageflow/processors"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	pb "github.com/imageflowcanvas/imageflow/proto/processorv1"
)

const testImage = "/usr/share/doc/opencv-doc/examples/data/messi5.jpg"

// grayProc turns the picture grey (kept 3-channel), reports its mean and
// passes upstream detections on shifted by one pixel, so every part of the
// round trip is checked.
type grayProc struct{ calls atomic.Int64 }

func (g *grayProc) Process(ctx context.Context, in *processors.Input, out *processors.Output) error {
	g.calls.Add(1)
	gray := gocv.NewMat()
	defer gray.Close()
	gocv.CvtColor(in.Image, &gray, gocv.ColorBGRToGray)
	out.Image = gocv.NewMat()
	gocv.CvtColor(gray, &out.Image, gocv.ColorGrayToBGR)
	mean := gray.Mean()
	out.Values = map[string]string{"mean": strconv.FormatFloat(mean.Val1, 'f', 3, 64), "upstream": in.Values["tag"]}
	for _, d := range in.Detections {
		out.Detections = append(out.Detections, &busv1.Detection{X: d.X + 1, Y: d.Y + 1, W: d.W, H: d.H, Label: d.Label, Score: d.Score})
	}
	out.Detections = append(out.Detections, &busv1.Detection{W: float32(in.Image.Cols()), H: float32(in.Image.Rows()), Label: "frame", Score: 1})
	return nil
}

func (g *grayProc) Close() error { return nil }

var graySpec = processors.Spec{Name: "gray", Description: "grey", Outputs: []string{"image", "values"},
	Params: []processors.ParamSpec{{Name: "k", Type: processors.ParamInt, Default: int64(3), Min: processors.Range(1)}}}

func startServe(t *testing.T, addr string, p processors.Processor) (stop func()) {
	t.Helper()
	var lis net.Listener
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for {
		lis, err = net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // the port is released asynchronously
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, lis, "gray", graySpec, p) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
}

func readImage(t testing.TB) gocv.Mat {
	img := gocv.IMRead(testImage, gocv.IMReadColor)
	if img.Empty() {
		t.Skipf("%s missing (opencv-doc)", testImage)
	}
	return img
}

func TestClientMatchesInProcess(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	img := readImage(t)
	defer img.Close()
	proc := &grayProc{}
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := lis.Addr().String()
	lis.Close()
	stop := startServe(t, addr, proc)

	var onErr atomic.Int64
	p, err := NewClient(addr, ClientOptions{Params: map[string]any{"k": int64(5)}, OnError: func(error) { onErr.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c := p.(*Client)

	in := &processors.Input{Image: img, Values: map[string]string{"tag": "x"},
		Detections: []*busv1.Detection{{X: 10, Y: 20, W: 30, H: 40, Label: "person", Score: 0.5}}}
	var direct, remote processors.Output
	if err := (&grayProc{}).Process(context.Background(), in, &direct); err != nil {
		t.Fatal(err)
	}
	defer direct.Image.Close()
	if err := c.Process(context.Background(), in, &remote); err != nil {
		t.Fatal(err)
	}
	defer remote.Image.Close()
	if !sameMat(direct.Image, remote.Image) {
		t.Error("remote picture differs from in-process")
	}
	if fmt.Sprint(direct.Values) != fmt.Sprint(remote.Values) {
		t.Errorf("values %v, want %v", remote.Values, direct.Values)
	}
	if len(remote.Detections) != 2 || remote.Detections[0].X != 11 || remote.Detections[1].W != float32(img.Cols()) {
		t.Errorf("detections %v", remote.Detections)
	}
	info, err := c.Info(context.Background())
	if err != nil || info.Name != "gray" || len(info.Params) != 1 || info.Params[0].Default.GetNumberValue() != 3 || info.Params[0].GetMin() != 1 {
		t.Errorf("info %v %v", info, err)
	}

	// The remote goes away: calls fail fast, retried and counted.
	stop()
	start := time.Now()
	var out processors.Output
	err = c.Process(context.Background(), in, &out)
	if err == nil || status.Code(errors.Unwrap(err)) != codes.Unavailable {
		t.Fatalf("with the server gone: %v", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("failing call took %v; want fail-fast", el)
	}
	if c.Failures.Load() != 1 || c.Retries.Load() != 2 || onErr.Load() != 3 {
		t.Errorf("failures %d retries %d onError %d, want 1 2 3", c.Failures.Load(), c.Retries.Load(), onErr.Load())
	}

	// It comes back on the same address: calls succeed again.
	stop = startServe(t, addr, proc)
	defer stop()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var out processors.Output
		err := c.Process(context.Background(), in, &out)
		if err == nil {
			same := sameMat(out.Image, direct.Image)
			out.Image.Close()
			if !same {
				t.Fatal("after reconnect: picture differs")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reconnect within 10 s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if c.Calls.Load() < 3 {
		t.Errorf("calls %d", c.Calls.Load())
	}
}

func sameMat(a, b gocv.Mat) bool {
	if a.Rows() != b.Rows() || a.Cols() != b.Cols() || a.Type() != b.Type() {
		return false
	}
	da, _ := a.DataPtrUint8()
	db, _ := b.DataPtrUint8()
	return bytes.Equal(da, db)
}

// TestServeBadInput talks to the service with a plain gRPC client.
func TestServeBadInput(t *testing.T) {
	proc := &grayProc{}
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := lis.Addr().String()
	lis.Close()
	stop := startServe(t, addr, proc)
	defer stop()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cl := pb.NewProcessorClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bgr := busv1.PixelFormat_PIXEL_FORMAT_BGR24
	for name, img := range map[string]*pb.Image{
		"none":      nil,
		"empty":     {},
		"garbage":   {Data: &pb.Image_Encoded{Encoded: &pb.EncodedImage{Format: busv1.PixelFormat_PIXEL_FORMAT_JPEG, Data: []byte("nope")}}},
		"short raw": {Data: &pb.Image_Raw{Raw: &pb.RawImage{Format: bgr, Width: 10, Height: 10, Data: make([]byte, 299)}}},
		"huge":      {Data: &pb.Image_Raw{Raw: &pb.RawImage{Format: bgr, Width: 1 << 30, Height: 1 << 30}}},
		"stride":    {Data: &pb.Image_Raw{Raw: &pb.RawImage{Format: bgr, Width: 10, Height: 2, Stride: 20, Data: make([]byte, 60)}}},
		"format":    {Data: &pb.Image_Raw{Raw: &pb.RawImage{Format: busv1.PixelFormat_PIXEL_FORMAT_I420, Width: 2, Height: 2, Data: make([]byte, 6)}}},
	} {
		_, err := cl.Process(ctx, &pb.ProcessRequest{Image: img})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	if n := proc.calls.Load(); n != 0 {
		t.Errorf("processor ran %d times on bad input", n)
	}
	// JPEG, padded-stride RGB and grey inputs are accepted.
	src := readImage(t)
	defer src.Close()
	small := gocv.NewMat()
	defer small.Close()
	gocv.Resize(src, &small, image.Pt(64, 48), 0, 0, gocv.InterpolationArea)
	jpg, _ := gocv.IMEncode(gocv.JPEGFileExt, small)
	defer jpg.Close()
	padded := make([]byte, 48*200)
	pix, _ := small.DataPtrUint8()
	for y := 0; y < 48; y++ {
		copy(padded[y*200:], pix[y*192:(y+1)*192])
	}
	for name, img := range map[string]*pb.Image{
		"jpeg": {Data: &pb.Image_Encoded{Encoded: &pb.EncodedImage{Format: busv1.PixelFormat_PIXEL_FORMAT_JPEG, Data: jpg.GetBytes()}}},
		"rgb":  {Data: &pb.Image_Raw{Raw: &pb.RawImage{Format: busv1.PixelFormat_PIXEL_FORMAT_RGB24, Width: 64, Height: 48, Stride: 200, Data: padded}}},
		"gray": {Data: &pb.Image_Raw{Raw: &pb.RawImage{Format: busv1.PixelFormat_PIXEL_FORMAT_GRAY8, Width: 64, Height: 48, Data: make([]byte, 64*48)}}},
	} {
		resp, err := cl.Process(ctx, &pb.ProcessRequest{Image: img, RequestId: name})
		if err != nil || resp.RequestId != name || resp.GetImage().GetRaw().GetWidth() != 64 {
			t.Errorf("%s: %v %v", name, resp, err)
		}
	}
	// The stream answers in order, and a bad frame does not end it.
	st, err := cl.ProcessStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	reqs := []*pb.ProcessRequest{
		{RequestId: "1", Image: &pb.Image{Data: &pb.Image_Encoded{Encoded: &pb.EncodedImage{Data: jpg.GetBytes()}}}},
		{RequestId: "2", Image: &pb.Image{Data: &pb.Image_Encoded{Encoded: &pb.EncodedImage{Data: []byte("bad")}}}},
		{RequestId: "3", Image: &pb.Image{Data: &pb.Image_Raw{Raw: &pb.RawImage{Format: bgr, Width: 64, Height: 48, Data: pix}}}},
	}
	for _, r := range reqs {
		if err := st.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	st.CloseSend()
	for i, r := range reqs {
		resp, err := st.Recv()
		if err != nil || resp.RequestId != r.RequestId || (i == 1) != (resp.Error != "") {
			t.Errorf("stream response %d: %v %v", i, resp, err)
		}
	}
}

func TestRunProcessorServer(t *testing.T) {
	reg := processors.NewRegistry()
	built := atomic.Int64{}
	spec := graySpec
	spec.New = func(p processors.Params) (processors.Processor, error) { built.Add(1); return &grayProc{}, nil }
	reg.Register(spec)
	if err := RunProcessorServer(context.Background(), "127.0.0.1:0", "nope", reg, nil); !errors.Is(err, processors.ErrUnknownProcessor) {
		t.Errorf("unknown processor: %v", err)
	}
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := lis.Addr().String()
	lis.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunProcessorServer(ctx, addr, "gray", reg, nil) }()
	defer func() { cancel(); <-done }()

	img := readImage(t)
	defer img.Close()
	for _, k := range []int64{2, 2, 7} {
		p, err := NewClient(addr, ClientOptions{Params: map[string]any{"k": k}, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		var out processors.Output
		deadline := time.Now().Add(5 * time.Second)
		for {
			err = p.Process(context.Background(), &processors.Input{Image: img}, &out)
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		out.Image.Close()
		p.Close()
	}
	if built.Load() != 2 {
		t.Errorf("built %d processors for 2 parameter sets", built.Load())
	}
	bad, _ := NewClient(addr, ClientOptions{Params: map[string]any{"k": 0}})
	defer bad.Close()
	var out processors.Output
	err := bad.Process(context.Background(), &processors.Input{Image: img}, &out)
	if status.Code(errors.Unwrap(err)) != codes.InvalidArgument {
		t.Errorf("k=0: %v, want InvalidArgument", err)
	}
}

// FuzzRawToMat feeds raw-image headers and data from the wire.
func FuzzRawToMat(f *testing.F) {
	f.Add(int32(busv1.PixelFormat_PIXEL_FORMAT_BGR24), 4, 2, 0, make([]byte, 24))
	f.Add(int32(busv1.PixelFormat_PIXEL_FORMAT_RGB24), 2, 2, 8, make([]byte, 14))
	f.Add(int32(busv1.PixelFormat_PIXEL_FORMAT_GRAY8), 3, 3, 0, make([]byte, 9))
	f.Add(int32(busv1.PixelFormat_PIXEL_FORMAT_I420), 2, 2, 0, make([]byte, 6))
	f.Add(int32(busv1.PixelFormat_PIXEL_FORMAT_BGR24), 1<<20, 1<<20, 0, []byte{1})
	f.Fuzz(func(t *testing.T, format int32, w, h, stride int, data []byte) {
		m, err := RawToMat(busv1.PixelFormat(format), w, h, stride, data)
		if err != nil {
			return
		}
		defer m.Close()
		if m.Cols() != w || m.Rows() != h || m.Type() != gocv.MatTypeCV8UC3 {
			t.Fatalf("%dx%d: got %dx%d type %v", w, h, m.Cols(), m.Rows(), m.Type())
		}
	})
}
