package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gocv.io/x/gocv"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/processors/builtin"
	"github.com/imageflowcanvas/imageflow/processors/remote"
	"github.com/imageflowcanvas/imageflow/processors/yolo/yolotest"
	pb "github.com/imageflowcanvas/imageflow/proto/processorv1"
)

// systemPython is Debian's interpreter: the kit needs its python3-grpcio,
// python3-opencv and python3-numpy, which a pyenv python3 on PATH lacks.
const systemPython = "/usr/bin/python3"

// pythonKitDir is processors/python from this package's directory.
var pythonKitDir = filepath.Join("..", "..", "processors", "python")

// needPython skips when Debian's Python modules are missing (scripts/lib.sh
// TEST_APT installs them).
func needPython(t *testing.T) {
	t.Helper()
	out, err := exec.Command(systemPython, "-c", "import grpc, google.protobuf, cv2, numpy").CombinedOutput()
	if err != nil {
		t.Skipf("%s lacks the kit's modules (apt-get install python3-grpcio python3-protobuf python3-opencv python3-numpy): %v %s", systemPython, err, out)
	}
}

// startPython runs one of the kit's example processors on addr and waits
// until it takes connections.
func startPython(t *testing.T, example, addr string) *exec.Cmd {
	t.Helper()
	return startListening(t, addr, example, systemPython, filepath.Join(pythonKitDir, "examples", example), "--listen", addr, "--workers", "4")
}

func waitListening(t *testing.T, addr, what string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not listening on %s", what, addr)
}

// runCheck runs `imageflow processor check` and returns its output and
// whether it exited 0.
func runCheck(t *testing.T, addr string, extra ...string) (string, bool) {
	t.Helper()
	args := append([]string{"processor", "check"}, extra...)
	args = append(args, "grpc://"+addr)
	cmd := exec.Command(binary(t), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if _, exited := err.(*exec.ExitError); err != nil && !exited {
		t.Fatal(err)
	}
	return out.String(), err == nil
}

// TestProcessorCheckBuiltins: every built-in served by `processor serve`
// keeps the contract.
func TestProcessorCheckBuiltins(t *testing.T) {
	reg := processors.NewRegistry()
	builtin.Register(reg)
	for _, spec := range reg.Specs() {
		t.Run(spec.Name, func(t *testing.T) {
			addr := freePort(t)
			startProcessor(t, addr, spec.Name)
			out, ok := runCheck(t, addr)
			if !ok || !strings.Contains(out, "all checks passed") {
				t.Fatalf("check failed:\n%s", out)
			}
			for _, c := range []string{"process png", "process bgr24-stride", "corrupt image", "deadline", "health", "concurrency x8"} {
				if !strings.Contains(out, c) {
					t.Fatalf("check %q missing from the table:\n%s", c, out)
				}
			}
			t.Logf("\n%s", out)
		})
	}
}

// TestProcessorCheckInferServe: `infer serve` speaks KServe v2, not the
// Processor contract; processors reach it through the detect step's triton
// backend, so that is what is checked (with the parameters a pipeline would
// give), plus the health service infer serve answers itself.
func TestProcessorCheckInferServe(t *testing.T) {
	out, shape := yolotest.V8Output(3, []yolotest.Box{{CX: 320, CY: 300, W: 120, H: 240, Class: 0, Score: 0.9}})
	model, err := yolotest.Model(640, out, shape)
	if err != nil {
		t.Fatal(err)
	}
	repo := t.TempDir()
	if err := os.MkdirAll(filepath.Join(repo, "people", "1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, "people", "1", "model.onnx"), model, 0o644); err != nil {
		t.Fatal(err)
	}
	inferAddr := freePort(t)
	infer := exec.Command(binary(t), "infer", "serve", "--listen", inferAddr, "--models", repo)
	infer.Stderr = os.Stderr
	if err := infer.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = infer.Process.Kill(); _ = infer.Wait() }()
	waitListening(t, inferAddr, "infer serve")
	conn, err := grpc.NewClient(inferAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hctx, hcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer hcancel()
	if h, err := healthpb.NewHealthClient(conn).Check(hctx, &healthpb.HealthCheckRequest{}); err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("infer serve health: %v %v", h, err)
	}

	procAddr := freePort(t)
	startProcessor(t, procAddr, "detect")
	report, ok := runCheck(t, procAddr, "--params",
		`{"backend":"triton","url":"`+inferAddr+`","model_name":"people","classes":"person,bike,car","layout":"v8"}`)
	if !ok || !strings.Contains(report, "all checks passed") {
		t.Fatalf("check failed:\n%s", report)
	}
	if !strings.Contains(report, "1 detections") {
		t.Fatalf("the model's person was not found through infer serve:\n%s", report)
	}
	t.Logf("\n%s", report)
}

// TestProcessorCheckPythonExamples: both examples of the Python kit pass.
func TestProcessorCheckPythonExamples(t *testing.T) {
	needPython(t)
	for _, ex := range []string{"clahe.py", "aruco.py"} {
		t.Run(ex, func(t *testing.T) {
			addr := freePort(t)
			startPython(t, ex, addr)
			out, ok := runCheck(t, addr)
			if !ok || !strings.Contains(out, "all checks passed") {
				t.Fatalf("check failed:\n%s", out)
			}
			t.Logf("\n%s", out)
		})
	}
}

// TestPythonKitUnitTests runs the kit's own unittest suite, so `go test`
// covers it.
func TestPythonKitUnitTests(t *testing.T) {
	needPython(t)
	cmd := exec.Command(systemPython, "-m", "unittest", "discover", "-s", filepath.Join(pythonKitDir, "tests"), "-v")
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("\nOK")) {
		t.Fatalf("python unittest: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

// brokenProcessor breaks the contract the way careless processors do: a
// corrupt image gives INTERNAL (or, with crash set, takes the server down),
// and each call works 200 ms whatever its deadline, one at a time.
type brokenProcessor struct {
	pb.UnimplementedProcessorServer
	mu    sync.Mutex
	crash func()
}

func (b *brokenProcessor) Info(context.Context, *pb.InfoRequest) (*pb.InfoResponse, error) {
	return remote.SpecToInfo(processors.Spec{Name: "broken", Outputs: []string{"values"},
		Params: []processors.ParamSpec{{Name: "level", Type: processors.ParamInt, Default: int64(1), Min: processors.Range(0), Max: processors.Range(9)}}}), nil
}

func (b *brokenProcessor) Process(ctx context.Context, req *pb.ProcessRequest) (*pb.ProcessResponse, error) {
	if v, ok := req.GetParams().AsMap()["level"]; ok {
		if f, isNum := v.(float64); !isNum || f < 0 || f > 9 {
			return nil, status.Error(codes.InvalidArgument, "level")
		}
	}
	var mat gocv.Mat
	var err error
	switch raw := req.GetImage().GetRaw(); {
	case req.Image == nil:
		err = remote.ErrBadImage
	case raw != nil:
		mat, err = remote.RawToMat(raw.Format, int(raw.Width), int(raw.Height), int(raw.Stride), raw.Data)
	default:
		mat, err = remote.DecodeToMat(req.Image.GetEncoded().GetData())
	}
	if err == nil {
		mat.Close()
	}
	if err != nil {
		if b.crash != nil {
			b.crash()
		}
		return nil, status.Error(codes.Internal, "panic: "+err.Error())
	}
	b.mu.Lock()
	time.Sleep(200 * time.Millisecond) // deaf to ctx
	b.mu.Unlock()
	return &pb.ProcessResponse{RequestId: req.RequestId, Values: map[string]string{"ok": "1"}}, nil
}

func serveBroken(t *testing.T, crash bool) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	b := &brokenProcessor{}
	if crash {
		var once sync.Once
		b.crash = func() { once.Do(func() { go g.Stop() }) }
	}
	pb.RegisterProcessorServer(g, b)
	healthpb.RegisterHealthServer(g, health.NewServer())
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}

// TestProcessorCheckFailsBrokenProcessor: the checker fails, naming the
// checks, on a processor that returns INTERNAL for a corrupt image and
// ignores deadlines, and on one that dies on a corrupt image.
func TestProcessorCheckFailsBrokenProcessor(t *testing.T) {
	t.Run("internal and deaf to deadlines", func(t *testing.T) {
		out, ok := runCheck(t, serveBroken(t, false), "--parallel", "2", "--rounds", "2")
		t.Logf("\n%s", out)
		if ok {
			t.Fatal("check passed a broken processor")
		}
		if !strings.Contains(out, "processor check failed: corrupt image, deadline") {
			t.Fatalf("want exactly corrupt image and deadline named as failed:\n%s", out)
		}
		if !strings.Contains(out, "Internal") || !strings.Contains(out, "expired work was not dropped") {
			t.Fatalf("details missing:\n%s", out)
		}
	})
	t.Run("crashes", func(t *testing.T) {
		out, ok := runCheck(t, serveBroken(t, true), "--parallel", "2", "--rounds", "2")
		t.Logf("\n%s", out)
		if ok || !strings.Contains(out, "processor check failed: corrupt image") || !strings.Contains(out, "a good call after bad input: Unavailable") {
			t.Fatalf("a crash on a corrupt image was not named:\n%s", out)
		}
	})
}
