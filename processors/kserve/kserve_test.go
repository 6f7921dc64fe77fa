package kserve

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"gocv.io/x/gocv"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/processors/modelfiles"
	"github.com/imageflowcanvas/imageflow/processors/yolo"
	"github.com/imageflowcanvas/imageflow/processors/yolo/yolotest"
	pb "github.com/imageflowcanvas/imageflow/proto/kservev2"
)

var boxes = []yolotest.Box{
	{CX: 320, CY: 320, W: 200, H: 300, Class: 0, Score: 0.92},
	{CX: 330, CY: 310, W: 200, H: 300, Class: 0, Score: 0.6},
	{CX: 100, CY: 400, W: 60, H: 60, Class: 2, Score: 0.55},
	{CX: 500, CY: 200, W: 80, H: 40, Class: 1, Score: 0.05},
}

// repo writes a Triton-style repository with a v8 model "yolo" (versions 1
// and 3, 3 served) and a v5 model "yolov5", and returns its directory.
func repo(t *testing.T) string {
	dir := t.TempDir()
	write := func(name, version string, v5 bool) {
		out, shape := yolotest.V8Output(3, boxes)
		if v5 {
			out, shape = yolotest.V5Output(3, boxes)
		}
		b, err := yolotest.Model(640, out, shape)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name, version)
		os.MkdirAll(p, 0o755)
		if err := os.WriteFile(filepath.Join(p, "model.onnx"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("yolo", "1", false)
	write("yolo", "3", false)
	write("yolov5", "1", true)
	os.MkdirAll(filepath.Join(dir, "empty", "1"), 0o755) // no model.onnx: skipped
	return dir
}

func startServer(t *testing.T, repo string) *Server {
	s := &Server{Addr: "127.0.0.1:0", ModelRepo: repo}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestTritonMatchesONNX(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := repo(t)
	s := startServer(t, dir)
	defer s.Close() // before goleak looks
	img := gocv.IMRead("/usr/share/doc/opencv-doc/examples/data/messi5.jpg", gocv.IMReadColor)
	if img.Empty() {
		t.Skip("opencv-doc sample missing")
	}
	defer img.Close()
	spec := processors.Spec{Name: "detect", Params: yolo.ParamSpecs()}
	for _, name := range []string{"yolo", "yolov5"} {
		version := "1"
		if name == "yolo" {
			version = "3"
		}
		local, err := spec.Resolve(map[string]any{"model": filepath.Join(dir, name, version, "model.onnx"), "classes": "a,b,c"})
		if err != nil {
			t.Fatal(err)
		}
		onnx, err := yolo.NewONNX(local, modelfiles.New(dir))
		if err != nil {
			t.Fatal(err)
		}
		defer onnx.Close()
		remote, _ := spec.Resolve(map[string]any{"url": s.ListenAddr().String(), "model_name": name, "classes": "a,b,c", "timeout": "5s"})
		tri, err := yolo.NewTriton(remote, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tri.Close()
		var a, b processors.Output
		if err := onnx.Process(context.Background(), &processors.Input{Image: img}, &a); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2; i++ {
			b = processors.Output{}
			if err := tri.Process(context.Background(), &processors.Input{Image: img}, &b); err != nil {
				t.Fatal(err)
			}
		}
		if len(a.Detections) != 2 {
			t.Errorf("%s: in-process gave %d detections, want 2: %v", name, len(a.Detections), a.Detections)
		}
		if fmt.Sprint(a.Detections) != fmt.Sprint(b.Detections) {
			t.Errorf("%s: triton %v\nin-process %v", name, b.Detections, a.Detections)
		}
	}
	// An unknown model fails with the server's NotFound in the message.
	remote, _ := spec.Resolve(map[string]any{"url": s.ListenAddr().String(), "model_name": "nope"})
	tri, _ := yolo.NewTriton(remote, nil)
	defer tri.Close()
	var out processors.Output
	err := tri.Process(context.Background(), &processors.Input{Image: img}, &out)
	if !errors.Is(err, yolo.ErrServer) || !strings.Contains(err.Error(), "NotFound") {
		t.Errorf("unknown model: %v", err)
	}
}

func TestProtocol(t *testing.T) {
	s := startServer(t, repo(t))
	conn, err := grpc.NewClient(s.ListenAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := pb.NewGRPCInferenceServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	if r, err := c.ServerLive(ctx, &pb.ServerLiveRequest{}); err != nil || !r.Live {
		t.Fatalf("live %v %v", r, err)
	}
	if r, err := c.ServerReady(ctx, &pb.ServerReadyRequest{}); err != nil || !r.Ready {
		t.Fatalf("ready %v %v", r, err)
	}
	if r, err := c.ServerMetadata(ctx, &pb.ServerMetadataRequest{}); err != nil || r.Name == "" {
		t.Fatalf("metadata %v %v", r, err)
	}
	if r, err := c.ModelReady(ctx, &pb.ModelReadyRequest{Name: "yolo"}); err != nil || !r.Ready {
		t.Fatalf("model ready %v %v", r, err)
	}
	if _, err := c.ModelReady(ctx, &pb.ModelReadyRequest{Name: "yolo", Version: "1"}); status.Code(err) != codes.NotFound {
		t.Errorf("old version: %v", err)
	}
	md, err := c.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: "yolo"})
	if err != nil {
		t.Fatal(err)
	}
	if md.Versions[0] != "3" || len(md.Inputs) != 1 || md.Inputs[0].Name != "images" || fmt.Sprint(md.Inputs[0].Shape) != "[1 3 640 640]" ||
		md.Outputs[0].Name != "output0" || fmt.Sprint(md.Outputs[0].Shape) != "[1 7 4]" || md.Inputs[0].Datatype != "FP32" {
		t.Errorf("metadata %v", md)
	}
	for _, name := range []string{"nope", "empty"} {
		if _, err := c.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: name}); status.Code(err) != codes.NotFound {
			t.Errorf("metadata of %s: %v", name, err)
		}
		if _, err := c.ModelInfer(ctx, &pb.ModelInferRequest{ModelName: name}); status.Code(err) != codes.NotFound {
			t.Errorf("infer on %s: %v", name, err)
		}
	}

	n := 3 * 640 * 640
	input := func(shape ...int64) *pb.ModelInferRequest_InferInputTensor {
		return &pb.ModelInferRequest_InferInputTensor{Name: "images", Datatype: "FP32", Shape: shape}
	}
	raw := make([]byte, 4*n)
	want, _ := yolotest.V8Output(3, boxes)
	check := func(name string, r *pb.ModelInferResponse, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if r.Id != "req-1" || len(r.Outputs) != 1 || fmt.Sprint(r.Outputs[0].Shape) != "[1 7 4]" || len(r.RawOutputContents) != 1 {
			t.Fatalf("%s: %v", name, r)
		}
		for i, w := range want {
			if g := math.Float32frombits(binary.LittleEndian.Uint32(r.RawOutputContents[0][4*i:])); g != w {
				t.Fatalf("%s: output[%d] = %v, want %v", name, i, g, w)
			}
		}
	}
	r, err := c.ModelInfer(ctx, &pb.ModelInferRequest{ModelName: "yolo", Id: "req-1",
		Inputs: []*pb.ModelInferRequest_InferInputTensor{input(1, 3, 640, 640)}, RawInputContents: [][]byte{raw}})
	check("raw", r, err)
	in := input(1, 3, 640, 640)
	in.Contents = &pb.InferTensorContents{Fp32Contents: make([]float32, n)}
	r, err = c.ModelInfer(ctx, &pb.ModelInferRequest{ModelName: "yolo", Id: "req-1", Inputs: []*pb.ModelInferRequest_InferInputTensor{in},
		Outputs: []*pb.ModelInferRequest_InferRequestedOutputTensor{{Name: "output0"}}})
	check("fp32_contents", r, err)

	for name, req := range map[string]*pb.ModelInferRequest{
		"wrong shape":  {Inputs: []*pb.ModelInferRequest_InferInputTensor{input(1, 3, 320, 320)}, RawInputContents: [][]byte{raw[:4*3*320*320]}},
		"wrong rank":   {Inputs: []*pb.ModelInferRequest_InferInputTensor{input(3, 640, 640)}, RawInputContents: [][]byte{raw}},
		"short data":   {Inputs: []*pb.ModelInferRequest_InferInputTensor{input(1, 3, 640, 640)}, RawInputContents: [][]byte{raw[:100]}},
		"no data":      {Inputs: []*pb.ModelInferRequest_InferInputTensor{input(1, 3, 640, 640)}},
		"no inputs":    {},
		"wrong name":   {Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "FP32", Shape: []int64{1, 3, 640, 640}}}, RawInputContents: [][]byte{raw}},
		"wrong type":   {Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "images", Datatype: "UINT8", Shape: []int64{1, 3, 640, 640}}}, RawInputContents: [][]byte{raw[:n]}},
		"bad output":   {Inputs: []*pb.ModelInferRequest_InferInputTensor{input(1, 3, 640, 640)}, RawInputContents: [][]byte{raw}, Outputs: []*pb.ModelInferRequest_InferRequestedOutputTensor{{Name: "boxes"}}},
		"negative dim": {Inputs: []*pb.ModelInferRequest_InferInputTensor{input(1, 3, -640, 640)}, RawInputContents: [][]byte{raw}},
		"extra raw":    {Inputs: []*pb.ModelInferRequest_InferInputTensor{input(1, 3, 640, 640)}, RawInputContents: [][]byte{raw, raw}},
	} {
		req.ModelName = "yolo"
		_, err := c.ModelInfer(ctx, req)
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		} else {
			t.Logf("%s: %s", name, status.Convert(err).Message())
		}
	}
	// Still serving after all that.
	r, err = c.ModelInfer(ctx, &pb.ModelInferRequest{ModelName: "yolo", Id: "req-1",
		Inputs: []*pb.ModelInferRequest_InferInputTensor{input(1, 3, 640, 640)}, RawInputContents: [][]byte{raw}})
	check("after errors", r, err)
}

func TestRepoErrors(t *testing.T) {
	for name, repo := range map[string]string{
		"missing dir": filepath.Join(t.TempDir(), "nope"),
		"empty dir":   t.TempDir(),
		"bad list":    "yolo",
		"bad pair":    "=x.onnx",
		"bad file":    "m=" + filepath.Join(t.TempDir(), "none.onnx"),
	} {
		s := &Server{Addr: "127.0.0.1:0", ModelRepo: repo}
		if err := s.Start(); err == nil {
			s.Close()
			t.Errorf("%s: started", name)
		}
	}
	garbage := filepath.Join(t.TempDir(), "g.onnx")
	os.WriteFile(garbage, []byte("\x0a\x03abc not onnx"), 0o644)
	s := &Server{Addr: "127.0.0.1:0", ModelRepo: "g=" + garbage}
	if err := s.Start(); err == nil {
		s.Close()
		t.Error("garbage model served")
	}
	// The name=path form works.
	b, _ := yolotest.Model(64, []float32{1, 2, 3, 4, 5, 6}, []int64{1, 6, 1})
	good := filepath.Join(t.TempDir(), "m.onnx")
	os.WriteFile(good, b, 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunInferServer(ctx, "127.0.0.1:0", "m="+good, nil) }()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("RunInferServer: %v", err)
	}
}

func TestSignature(t *testing.T) {
	b, _ := yolotest.Model(64, []float32{1, 2, 3, 4, 5, 6}, []int64{1, 6, 1})
	in, out, err := ReadONNXSignature(b)
	if err != nil || len(in) != 1 || in[0].Name != "images" || fmt.Sprint(in[0].Shape) != "[1 3 64 64]" ||
		len(out) != 1 || out[0].Name != "output0" || fmt.Sprint(out[0].Shape) != "[1 6 1]" {
		t.Errorf("signature %v %v %v", in, out, err)
	}
	for _, bad := range [][]byte{nil, []byte("garbage"), b[:len(b)/2], {0x3a, 0x00}} {
		if _, _, err := ReadONNXSignature(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzSignature(f *testing.F) {
	b, _ := yolotest.Model(64, []float32{1, 2, 3, 4, 5, 6}, []int64{1, 6, 1})
	f.Add(b)
	f.Add([]byte{0x3a, 0x02, 0x5a, 0x00})
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		in, out, err := ReadONNXSignature(data)
		if err == nil && (len(in) == 0 || len(out) == 0) {
			t.Fatal("no error for a graph without inputs or outputs")
		}
	})
}

// TestTritonServerRestart: a dead server fails the call quickly with
// ErrServer; once a server is back on the address the backend learns the
// model again and detects.
func TestTritonServerRestart(t *testing.T) {
	dir := repo(t)
	s := &Server{Addr: "127.0.0.1:0", ModelRepo: dir}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	addr := s.ListenAddr().String()
	spec := processors.Spec{Name: "detect", Params: yolo.ParamSpecs()}
	params, _ := spec.Resolve(map[string]any{"url": addr, "model_name": "yolo", "classes": "a,b,c", "timeout": "1s"})
	tri, err := yolo.NewTriton(params, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tri.Close()
	img := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(50, 60, 70, 0), 480, 640, gocv.MatTypeCV8UC3)
	defer img.Close()
	run := func() (int, error) {
		var out processors.Output
		err := tri.Process(context.Background(), &processors.Input{Image: img}, &out)
		return len(out.Detections), err
	}
	if n, err := run(); err != nil || n != 2 {
		t.Fatalf("first call: %d %v", n, err)
	}
	s.Close()
	start := time.Now()
	if _, err := run(); !errors.Is(err, yolo.ErrServer) {
		t.Fatalf("server down: %v", err)
	}
	if el := time.Since(start); el > 1500*time.Millisecond {
		t.Errorf("failing call took %v", el)
	}
	var s2 *Server
	deadline := time.Now().Add(5 * time.Second)
	for {
		s2 = &Server{Addr: addr, ModelRepo: dir}
		if err := s2.Start(); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer s2.Close()
	deadline = time.Now().Add(10 * time.Second)
	for {
		n, err := run()
		if err == nil && n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery: %d %v", n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// BenchmarkDetectONNX and BenchmarkDetectTriton compare the same YOLO model
// (640 input) run in-process and through the KServe server on 127.0.0.1, on
// a 640x480 frame.
func BenchmarkDetectONNX(b *testing.B) {
	dir := benchRepo(b)
	spec := processors.Spec{Name: "detect", Params: yolo.ParamSpecs()}
	params, _ := spec.Resolve(map[string]any{"model": filepath.Join(dir, "yolo", "1", "model.onnx"), "classes": "a,b,c"})
	p, err := yolo.NewONNX(params, modelfiles.New(dir))
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	benchDetect(b, p)
}

func BenchmarkDetectTriton(b *testing.B) {
	dir := benchRepo(b)
	s := &Server{Addr: "127.0.0.1:0", ModelRepo: dir, Logger: slog.New(slog.DiscardHandler)}
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	spec := processors.Spec{Name: "detect", Params: yolo.ParamSpecs()}
	params, _ := spec.Resolve(map[string]any{"url": s.ListenAddr().String(), "model_name": "yolo", "classes": "a,b,c"})
	p, err := yolo.NewTriton(params, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	benchDetect(b, p)
}

func benchRepo(b *testing.B) string {
	dir := b.TempDir()
	out, shape := yolotest.V8Output(3, boxes)
	m, _ := yolotest.Model(640, out, shape)
	os.MkdirAll(filepath.Join(dir, "yolo", "1"), 0o755)
	os.WriteFile(filepath.Join(dir, "yolo", "1", "model.onnx"), m, 0o644)
	return dir
}

func benchDetect(b *testing.B, p processors.Processor) {
	img := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(50, 60, 70, 0), 480, 640, gocv.MatTypeCV8UC3)
	defer img.Close()
	run := func() time.Duration {
		start := time.Now()
		var out processors.Output
		if err := p.Process(context.Background(), &processors.Input{Image: img}, &out); err != nil || len(out.Detections) != 2 {
			b.Fatal(err, out.Detections)
		}
		return time.Since(start)
	}
	run()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		lat = append(lat, run())
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// TestRepoReadsOnlyInside: a model file that is a symbolic link out of the
// repository, or a device, is refused (it used to be read whole: /dev/zero
// until memory ran out).
func TestRepoReadsOnlyInside(t *testing.T) {
	for _, target := range []string{"/dev/zero", "/etc/passwd"} {
		dir := repo(t)
		os.MkdirAll(filepath.Join(dir, "evil", "1"), 0o755)
		if err := os.Symlink(target, filepath.Join(dir, "evil", "1", "model.onnx")); err != nil {
			t.Fatal(err)
		}
		_, err := loadRepo(dir)
		if !errors.Is(err, modelfiles.ErrNotAllowed) {
			t.Errorf("model linked to %s: %v, want ErrNotAllowed", target, err)
		}
	}
	if _, err := loadRepo("zero=/dev/zero"); !errors.Is(err, modelfiles.ErrNotAllowed) {
		t.Errorf("zero=/dev/zero: %v, want ErrNotAllowed", err)
	}
}
