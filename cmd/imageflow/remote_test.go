package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	streamv1 "github.com/imageflowcanvas/imageflow/proto/streamv1"
)

// startProcessor runs `imageflow processor serve` on addr and waits until it
// accepts connections.
func startProcessor(t *testing.T, addr, name string) *exec.Cmd {
	t.Helper()
	return startListening(t, addr, "processor "+name, binary(t), "processor", "serve", "--listen", addr, name)
}

// startListening runs a server process, killed at the end of the test, and
// waits until it accepts connections on addr.
func startListening(t *testing.T, addr, what, prog string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(prog, args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	waitListening(t, addr, what)
	return cmd
}

// TestRemoteStepMatchesBuiltin runs the Haar face detector as a separate
// `imageflow processor serve detect` process, uses it as a grpc:// pipeline
// step of `imageflow serve`, and compares with the built-in; then kills the
// remote (counted errors) and brings it back (results return).
func TestRemoteStepMatchesBuiltin(t *testing.T) {
	img, err := os.ReadFile("/usr/share/doc/opencv-doc/examples/data/messi5.jpg")
	if err != nil {
		t.Skip("opencv-doc not installed")
	}
	procAddr := freePort(t)
	proc := startProcessor(t, procAddr, "detect")
	_, li, _ := startBinary(t, t.TempDir())
	postPipelines(t, li.HTTP,
		`{"id":"local","steps":[{"id":"face","processor":"detect","params":{"backend":"haar"}}]}`,
		`{"id":"remote","steps":[{"id":"face","processor":"grpc://`+procAddr+`","params":{"backend":"haar"}}]}`)
	process := func(pipeline string) *streamv1.StreamResult { return streamOnce(t, li.GRPC, pipeline, img) }
	boxes := boxSet
	local := process("local")
	remote := process("remote")
	if local.Error != "" || remote.Error != "" || len(local.GetResult().GetDetections()) == 0 {
		t.Fatalf("local %+v remote %+v", local, remote)
	}
	if boxes(local) != boxes(remote) {
		t.Fatalf("remote step differs from the built-in:\nlocal  %s\nremote %s", boxes(local), boxes(remote))
	}

	_ = proc.Process.Kill()
	_ = proc.Wait()
	down := process("remote")
	if down.Error == "" {
		t.Fatalf("remote down but no error: %+v", down)
	}
	if n := metricValue(t, li.HTTP, `imageflow_remote_processor_errors_total{address="`+procAddr+`"}`); n < 1 {
		t.Fatalf("remote errors not counted: %v", n)
	}

	startProcessor(t, procAddr, "detect")
	deadline := time.Now().Add(20 * time.Second)
	for {
		back := process("remote")
		if back.Error == "" && boxes(back) == boxes(local) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("results did not return: %+v", back)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// metricValue reads one sample from /metrics.
func metricValue(t *testing.T, httpAddr, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, series+" ") {
			var v float64
			_ = json.Unmarshal([]byte(strings.TrimSpace(strings.TrimPrefix(line, series))), &v)
			return v
		}
	}
	return 0
}

// streamOnce sends one JPEG through a stored pipeline over StreamService.
func streamOnce(t *testing.T, grpcAddr, pipeline string, img []byte) *streamv1.StreamResult {
	t.Helper()
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := streamv1.NewStreamServiceClient(conn).Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&streamv1.StreamRequest{Pipeline: pipeline, Frame: &streamv1.StreamFrame{
		Sequence: 1, Format: busv1.PixelFormat_PIXEL_FORMAT_JPEG, Data: img}}); err != nil {
		t.Fatal(err)
	}
	_ = stream.CloseSend()
	res, err := stream.Recv()
	if err != nil {
		t.Fatalf("%s: %v", pipeline, err)
	}
	return res
}

// boxSet renders detections as a sorted set: the order of equal-rank
// detections is not part of the contract.
func boxSet(r *streamv1.StreamResult) string {
	var out []string
	for _, d := range r.GetResult().GetDetections() {
		b, _ := json.Marshal(d)
		out = append(out, string(b))
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// postPipelines stores pipelines through the REST API.
func postPipelines(t *testing.T, httpAddr string, bodies ...string) {
	t.Helper()
	for _, p := range bodies {
		resp, err := http.Post("http://"+httpAddr+"/api/v1/pipelines", "application/json", strings.NewReader(p))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 201 {
			t.Fatalf("pipeline: %d %s", resp.StatusCode, b)
		}
	}
}
