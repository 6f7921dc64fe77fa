package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/imageflowcanvas/imageflow/processors/yolo/yolotest"
)

// TestTritonBackendAgainstInferServe runs `imageflow infer serve` (our
// KServe v2 gRPC server, the protocol Triton speaks) on a model repository
// holding a YOLOv8-shaped ONNX model built by the test, and checks that the
// detect step's triton backend gives what its onnx backend gives in-process.
func TestTritonBackendAgainstInferServe(t *testing.T) {
	img, err := os.ReadFile("/usr/share/doc/opencv-doc/examples/data/messi5.jpg")
	if err != nil {
		t.Skip("opencv-doc not installed")
	}
	out, shape := yolotest.V8Output(3, []yolotest.Box{
		{CX: 320, CY: 300, W: 120, H: 240, Class: 0, Score: 0.9},
		{CX: 330, CY: 310, W: 118, H: 236, Class: 0, Score: 0.7}, // overlaps the first: NMS drops it
		{CX: 100, CY: 120, W: 60, H: 40, Class: 2, Score: 0.8},
	})
	model, err := yolotest.Model(640, out, shape)
	if err != nil {
		t.Fatal(err)
	}
	// The repository is the server's default models_dir, <data>/models:
	// the onnx backend reads models only from there.
	dataDir := t.TempDir()
	repo := filepath.Join(dataDir, "models")
	dir := filepath.Join(repo, "people", "1")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	modelPath := filepath.Join(dir, "model.onnx")
	if err := os.WriteFile(modelPath, model, 0o644); err != nil {
		t.Fatal(err)
	}
	inferAddr := freePort(t)
	infer := exec.Command(binary(t), "infer", "serve", "--listen", inferAddr, "--models", repo)
	infer.Stderr = os.Stderr
	if err := infer.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = infer.Process.Kill(); _ = infer.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("tcp", inferAddr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("infer serve not listening")
		}
		time.Sleep(50 * time.Millisecond)
	}

	_, li, _ := startBinary(t, dataDir)
	postPipelines(t, li.HTTP,
		`{"id":"onnx","steps":[{"id":"d","processor":"detect","params":{"backend":"onnx","model":"`+modelPath+`","classes":"person,bike,car","layout":"v8"}}]}`,
		`{"id":"triton","steps":[{"id":"d","processor":"detect","params":{"backend":"triton","url":"`+inferAddr+`","model_name":"people","classes":"person,bike,car","layout":"v8"}}]}`,
		`{"id":"missing","steps":[{"id":"d","processor":"detect","params":{"backend":"triton","url":"`+inferAddr+`","model_name":"nope","classes":"person,bike,car"}}]}`)
	local := streamOnce(t, li.GRPC, "onnx", img)
	remote := streamOnce(t, li.GRPC, "triton", img)
	if local.Error != "" || remote.Error != "" {
		t.Fatalf("onnx: %q, triton: %q", local.Error, remote.Error)
	}
	if n := len(local.GetResult().GetDetections()); n != 2 {
		t.Fatalf("onnx backend: %d detections, want 2 after NMS: %v", n, local.GetResult().GetDetections())
	}
	if boxSet(local) != boxSet(remote) {
		t.Fatalf("triton backend differs from onnx:\nonnx   %s\ntriton %s", boxSet(local), boxSet(remote))
	}
	if bad := streamOnce(t, li.GRPC, "missing", img); bad.Error == "" {
		t.Fatalf("unknown model gave no error: %+v", bad)
	} else {
		t.Logf("unknown model: %s", bad.Error)
	}
}
