package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/imageflowcanvas/imageflow/media/imagedecode/imagetest"
	pb "github.com/imageflowcanvas/imageflow/proto/processorv1"
)

// procMemory reads a process's current and peak resident set in MiB.
func procMemory(t *testing.T, pid int) (rss, peak int) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("process %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "VmHWM:":
			peak = kb / 1024
		}
	}
	return rss, peak
}

// alive fails the test when the server process has exited.
func alive(t *testing.T, cmd *exec.Cmd, logs *strings.Builder) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the server died: %v\n%s", err, logs.String())
	}
}

type errorAnswer struct {
	Error struct {
		Status  int    `json:"status"`
		Message string `json:"message"`
		Step    string `json:"step"`
	} `json:"error"`
}

// TestHostileImages sends pictures whose headers claim huge sizes to a
// running server: a 70-byte BMP claiming 40000x40000 and 38-byte lossless
// WebPs that really decode to 10000x10000 as batch files, and a PNG
// claiming 100000x100000 and a JPEG claiming 65000x65000 through gRPC
// StreamService.Process. OpenCV used to throw an exception nothing caught
// on the first three (the process aborted, and the batch item killed it
// again at every restart) and to decode the WebPs (+600 MB). Now each is
// refused from its header with a clear error, the server stays up and its
// peak memory barely moves.
func TestHostileImages(t *testing.T) {
	cmd, li, logs := startBinary(t, t.TempDir())
	postPipelines(t, li.HTTP, `{"id":"small","steps":[{"id":"r","processor":"resize","params":{"width":64}}]}`)
	good, err := os.ReadFile("/usr/share/doc/opencv-doc/examples/data/messi5.jpg")
	if err != nil {
		t.Skip("opencv-doc not installed")
	}
	// Warm up (one good file through each path) so the baseline includes
	// what any first picture costs.
	if r := streamOnce(t, li.GRPC, "small", good); r.Error != "" {
		t.Fatalf("good picture: %s", r.Error)
	}
	_, peak0 := procMemory(t, cmd.Process.Pid)

	bomb, err := imagetest.WebPLossless(10000, 10000)
	if err != nil {
		t.Fatal(err)
	}
	files := []struct {
		name string
		data []byte
	}{{"good.jpg", good}, {"bomb.bmp", imagetest.BMP(40000, 40000)}}
	for i := 0; i < 4; i++ {
		files = append(files, struct {
			name string
			data []byte
		}{fmt.Sprintf("bomb%d.webp", i), bomb})
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	_ = mw.WriteField("pipeline", "small")
	for _, f := range files {
		w, _ := mw.CreateFormFile("files", f.name)
		_, _ = w.Write(f.data)
	}
	_ = mw.Close()
	resp, err := http.Post("http://"+li.HTTP+"/api/v1/executions", mw.FormDataContentType(), &body)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("upload: %d %s", resp.StatusCode, b)
	}
	var created struct{ ID string }
	if err := json.Unmarshal(b, &created); err != nil {
		t.Fatal(err)
	}
	type file struct {
		Name, State, Error string
	}
	var x struct {
		State string
		Files []file
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		alive(t, cmd, logs)
		resp, err := http.Get("http://" + li.HTTP + "/api/v1/executions/" + created.ID)
		if err != nil {
			t.Fatalf("server not answering: %v\n%s", err, logs.String())
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err := json.Unmarshal(b, &x); err != nil {
			t.Fatal(err)
		}
		if x.State == "done" || x.State == "failed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("execution not finished: %s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if x.State != "done" || x.Files[0].State != "done" {
		t.Errorf("execution %s, good file %+v", x.State, x.Files[0])
	}
	for _, f := range x.Files[1:] {
		if f.State != "failed" || !strings.Contains(f.Error, "image too large") || !strings.Contains(f.Error, "over the limit") {
			t.Errorf("%s: %s %q, want failed as too large", f.Name, f.State, f.Error)
		}
	}
	t.Logf("batch: %s: %q", x.Files[1].Name, x.Files[1].Error)

	for _, c := range []struct {
		name string
		data []byte
	}{{"png", imagetest.PNG(100000, 100000)}, {"jpeg", imagetest.JPEG(65000, 65000)}, {"bmp", imagetest.BMP(40000, 40000)}, {"webp", bomb}} {
		r := streamOnce(t, li.GRPC, "small", c.data)
		if !strings.Contains(r.Error, "image too large") {
			t.Errorf("gRPC Process %s bomb: %+v, want an image too large error", c.name, r)
		}
		alive(t, cmd, logs)
	}
	if r := streamOnce(t, li.GRPC, "small", good); r.Error != "" {
		t.Fatalf("good picture after the bombs: %s", r.Error)
	}
	rss, peak := procMemory(t, cmd.Process.Pid)
	t.Logf("memory: peak %d MiB before, %d MiB after (current %d MiB)", peak0, peak, rss)
	// One 10000x10000 decode alone is 286 MiB.
	if peak-peak0 > 150 {
		t.Errorf("peak memory grew by %d MiB", peak-peak0)
	}
}

// TestHostileImagesProcessorService sends the same headers to a remote
// processor (`imageflow processor serve`): InvalidArgument, and it stays up.
func TestHostileImagesProcessorService(t *testing.T) {
	addr := freePort(t)
	proc := startProcessor(t, addr, "resize")
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := pb.NewProcessorClient(conn)
	for _, c := range []struct {
		name string
		data []byte
	}{{"png", imagetest.PNG(100000, 100000)}, {"jpeg", imagetest.JPEG(65000, 65000)}, {"bmp", imagetest.BMP(40000, 40000)}} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := client.Process(ctx, &pb.ProcessRequest{Image: &pb.Image{Data: &pb.Image_Encoded{Encoded: &pb.EncodedImage{Data: c.data}}}})
		cancel()
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "image too large") {
			t.Errorf("%s bomb: %v, want InvalidArgument: image too large", c.name, err)
		}
		if err := proc.Process.Signal(syscall.Signal(0)); err != nil {
			t.Fatalf("the processor died on the %s bomb", c.name)
		}
	}
}

// TestHostileModelPaths saves pipelines whose detect step names files
// outside models_dir: /dev/zero as a model (read until memory ran out, at
// every restart), /etc/passwd and /etc/shadow as class lists (their lines
// came back as labels), and cascades where the error told whether the
// path exists. Each is now a 400 naming the step, with no file content and
// the same answer for a path that exists and one that does not.
func TestHostileModelPaths(t *testing.T) {
	dataDir := t.TempDir()
	cmd, li, logs := startBinary(t, dataDir)
	_, peak0 := procMemory(t, cmd.Process.Pid)
	n := 0
	post := func(params string) errorAnswer {
		t.Helper()
		n++
		body := `{"id":"evil` + strconv.Itoa(n) + `","steps":[{"id":"det","processor":"detect","params":` + params + `}]}`
		resp, err := http.Post("http://"+li.HTTP+"/api/v1/pipelines", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatalf("server not answering: %v\n%s", err, logs.String())
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e errorAnswer
		_ = json.Unmarshal(b, &e)
		if resp.StatusCode != http.StatusBadRequest || e.Error.Step != "det" {
			t.Errorf("%s: %d %s, want 400 naming step det", params, resp.StatusCode, b)
		}
		if strings.Contains(string(b), "root:") || strings.Contains(string(b), "no such file or directory") || strings.Contains(string(b), "permission denied") {
			t.Errorf("%s: the answer tells about the file: %s", params, b)
		}
		return e
	}
	post(`{"backend":"onnx","model":"/dev/zero"}`)
	post(`{"backend":"onnx","model":"../../../../dev/zero"}`)
	post(`{"backend":"triton","classes":"/etc/shadow"}`)
	post(`{"backend":"triton","classes":"/etc/passwd"}`)
	post(`{"backend":"onnx","model":"x.onnx","classes":"../../etc/passwd"}`)
	exists := post(`{"backend":"haar","cascade":"/etc/passwd"}`)
	missing := post(`{"backend":"haar","cascade":"/etc/no-such-file"}`)
	if strings.ReplaceAll(exists.Error.Message, "/etc/passwd", "X") != strings.ReplaceAll(missing.Error.Message, "/etc/no-such-file", "X") {
		t.Errorf("existence oracle:\n%s\n%s", exists.Error.Message, missing.Error.Message)
	}
	t.Logf("model outside: %s", exists.Error.Message)
	alive(t, cmd, logs)
	_, peak := procMemory(t, cmd.Process.Pid)
	if peak-peak0 > 100 {
		t.Errorf("peak memory grew by %d MiB", peak-peak0)
	}

	// Inside models_dir (<data>/models by default) relative names work.
	models := filepath.Join(dataDir, "models")
	if err := os.MkdirAll(models, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(models, "pets.names"), []byte("cat\ndog\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	postPipelines(t, li.HTTP, `{"id":"pets","steps":[{"id":"det","processor":"detect","params":{"backend":"triton","classes":"pets.names"}}]}`,
		`{"id":"faces","steps":[{"id":"det","processor":"detect","params":{"backend":"haar","cascade":"haarcascade_frontalface_default.xml"}}]}`)
}
