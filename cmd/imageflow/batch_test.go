package main

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"gocv.io/x/gocv"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/processors/builtin"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	"github.com/imageflowcanvas/imageflow/server/batch"
	"github.com/imageflowcanvas/imageflow/server/blob"
)

// startBatchServer runs a bus, a batch Manager and its routes behind a
// bearer-token check on a loopback port.
func startBatchServer(t *testing.T, token string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := &bus.Bus{Config: bus.Config{DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)}}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	reg := processors.NewRegistry()
	builtin.Register(reg)
	params, _ := structpb.NewStruct(map[string]any{"width": 200})
	stored := &busv1.Pipeline{Id: "thumb", Steps: []*busv1.Step{
		{Id: "small", Processor: "resize", Params: params},
		{Id: "edges", Processor: "filter", Inputs: []string{"small"}},
	}}
	m, err := batch.New(batch.Config{Bus: b, Blobs: blob.NewJetStream(b.Objects()), Registry: reg, Logger: slog.New(slog.DiscardHandler),
		Pipelines: func(_ context.Context, id string) (*busv1.Pipeline, error) {
			if id == stored.Id {
				return stored, nil
			}
			return nil, batch.ErrPipelineNotFound
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	app := fiber.New(fiber.Config{DisableStartupMessage: true, BodyLimit: m.MaxRequestBytes(), DisablePreParseMultipartForm: true})
	app.Use(func(c *fiber.Ctx) error {
		if c.Get("Authorization") != "Bearer "+token {
			return c.Status(401).JSON(fiber.Map{"error": fiber.Map{"status": 401, "code": "unauthorized", "message": "invalid bearer token"}})
		}
		return c.Next()
	})
	for _, r := range m.Routes() {
		app.Add(r.Method, r.Path, r.Handler)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() {
		m.Close()
		_ = app.ShutdownWithTimeout(5 * time.Second)
		b.Close()
	})
	return "http://" + ln.Addr().String()
}

func TestBatchCLI(t *testing.T) {
	const data = "/usr/share/doc/opencv-doc/examples/data/"
	imgs := []string{data + "messi5.jpg", data + "baboon.jpg", data + "smarties.png"}
	for _, f := range imgs {
		if _, err := os.Stat(f); err != nil {
			t.Skipf("opencv-doc sample missing: %v", err)
		}
	}
	base := startBatchServer(t, "s3cret")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	// The token comes from the environment; flags may follow the files.
	t.Setenv("IFC_TOKEN", "s3cret")
	args := append([]string{"run", "--server", base}, imgs...)
	args = append(args, "--pipeline", "thumb", "--out", out)
	if err := runBatch(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("batch run: %v\nstdout:\n%s\nstderr:\n%s", err, &stdout, &stderr)
	}
	if !strings.Contains(stdout.String(), "done: 3 done, 0 failed") || !strings.Contains(stderr.String(), "100.0%") {
		t.Fatalf("output:\n%s\nprogress:\n%s", &stdout, &stderr)
	}
	entries, _ := os.ReadDir(out)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	want := "[0000_messi5.jpg 0000_messi5.json 0001_baboon.jpg 0001_baboon.json 0002_smarties.json 0002_smarties.png]"
	if fmt.Sprint(names) != want {
		t.Fatalf("--out holds %v, want %s", names, want)
	}
	for _, n := range []string{"0000_messi5.jpg", "0002_smarties.png"} {
		m := gocv.IMRead(filepath.Join(out, n), gocv.IMReadUnchanged)
		if m.Empty() || m.Cols() != 200 {
			t.Fatalf("%s: %dx%d", n, m.Cols(), m.Rows())
		}
		m.Close()
	}
	var r struct {
		Width  int `json:"width"`
		Height int `json:"height"`
	}
	b, _ := os.ReadFile(filepath.Join(out, "0001_baboon.json"))
	if err := json.Unmarshal(b, &r); err != nil || r.Width != 512 || r.Height != 512 {
		t.Fatalf("baboon result %s: %v", b, err)
	}
	id := strings.Fields(stdout.String())[0]

	stdout.Reset()
	if err := runBatch(ctx, []string{"status", "--server", base, id}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "state     done (100%)") || !strings.Contains(stdout.String(), "baboon.jpg") {
		t.Fatalf("status:\n%s", &stdout)
	}
	stdout.Reset()
	if err := runBatch(ctx, []string{"ls", "--server", base, "--state", "done"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(stdout.String()), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[1], id) {
		t.Fatalf("ls:\n%s", &stdout)
	}

	// Errors carry the server's message.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--server", base, "--pipeline", "nope", imgs[0]}, "404 pipeline not found"},
		{[]string{"run", "--server", base, "--token", "wrong", "--pipeline", "thumb", imgs[0]}, "401 invalid bearer token"},
		{[]string{"run", "--server", base, "--pipeline", "thumb"}, "no files"},
		{[]string{"run", "--server", base, "--pipeline", "thumb", "/nonexistent.jpg"}, "no such file"},
		{[]string{"status", "--server", base, "ffffffffffffffff00000000"}, "404"},
		{[]string{"frobnicate"}, "unknown subcommand"},
	} {
		err := runBatch(ctx, tc.args, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}

// syncBuffer is a bytes.Buffer safe to read while a process writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestBatchBinaryKill9 is the user's view of durability: `imageflow batch
// run` uploads 100 full-HD pictures to `imageflow serve`, the server is
// killed with SIGKILL mid-run and started again on the same data directory
// and port; the CLI rides it out and downloads exactly 100 results, and the
// server's record and zip hold each file once.
func TestBatchBinaryKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	src := gocv.IMRead("/usr/share/doc/opencv-doc/examples/data/messi5.jpg", gocv.IMReadColor)
	if src.Empty() {
		t.Skip("messi5.jpg missing")
	}
	hd := gocv.NewMat()
	gocv.Resize(src, &hd, image.Pt(1920, 1080), 0, 0, gocv.InterpolationCubic)
	buf, err := gocv.IMEncode(gocv.JPEGFileExt, hd)
	src.Close()
	hd.Close()
	if err != nil {
		t.Fatal(err)
	}
	jpeg := bytes.Clone(buf.GetBytes())
	buf.Close()
	in := t.TempDir()
	const n = 100
	files := make([]string, n)
	for i := range files {
		files[i] = filepath.Join(in, fmt.Sprintf("hd%03d.jpg", i))
		if err := os.WriteFile(files[i], jpeg, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	srv, _, logs := startBinary(t, dir, "--http", addr)
	base := "http://" + addr
	pipeline := `{"id":"hd","steps":[{"id":"small","processor":"resize","params":{"width":1280}},{"id":"blur","processor":"filter","params":{"mode":"blur"},"inputs":["small"]}]}`
	resp, err := http.Post(base+"/api/v1/pipelines", "application/json", strings.NewReader(pipeline))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("create pipeline: %d", resp.StatusCode)
	}

	out := t.TempDir()
	var cliOut, cliErr syncBuffer
	cli := exec.Command(binary(t), append([]string{"batch", "run", "--server", base, "--pipeline", "hd", "--out", out, "--quiet"}, files...)...)
	cli.Stdout, cli.Stderr = &cliOut, &cliErr
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	cliDone := make(chan error, 1)
	go func() { cliDone <- cli.Wait() }()
	t.Cleanup(func() {
		if cli.ProcessState == nil {
			_ = cli.Process.Kill()
			<-cliDone
		}
	})

	get := func(id string) (x batchExecution, err error) {
		resp, err := http.Get(base + "/api/v1/executions/" + id)
		if err != nil {
			return x, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			return x, fmt.Errorf("status %d", resp.StatusCode)
		}
		return x, json.NewDecoder(resp.Body).Decode(&x)
	}
	var id string
	deadline := time.Now().Add(60 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatalf("no progress; cli stderr:\n%s\nserver:\n%s", cliErr.String(), logs.String())
		}
		if id == "" {
			if f := strings.Fields(cliErr.String()); len(f) >= 2 && f[0] == "execution" {
				id = strings.TrimSuffix(f[1], ":")
			}
		} else if x, err := get(id); err == nil && x.Done >= 20 {
			if x.Done >= n {
				t.Fatal("finished before the kill: the test proves nothing")
			}
			t.Logf("SIGKILL with %d of %d done", x.Done, n)
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = srv.Process.Signal(syscall.SIGKILL)
	_ = srv.Wait()

	startBinary(t, dir, "--http", addr)
	select {
	case err := <-cliDone:
		if err != nil {
			t.Fatalf("cli: %v\nstdout:\n%s\nstderr:\n%s", err, cliOut.String(), cliErr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("cli did not finish; stderr:\n%s", cliErr.String())
	}
	if !strings.Contains(cliOut.String(), "done: 100 done, 0 failed") {
		t.Fatalf("cli output:\n%s", cliOut.String())
	}
	entries, _ := os.ReadDir(out)
	var jpgs, jsons int
	for _, e := range entries {
		switch filepath.Ext(e.Name()) {
		case ".jpg":
			jpgs++
		case ".json":
			jsons++
		}
	}
	if jpgs != n || jsons != n || len(entries) != 2*n {
		t.Fatalf("--out holds %d images, %d results, %d entries", jpgs, jsons, len(entries))
	}
	x, err := get(id)
	if err != nil || x.State != "done" || x.Done != n || len(x.Files) != n {
		t.Fatalf("record: %+v %v", x, err)
	}
	resp, err = http.Get(base + "/api/v1/executions/" + id + "/results.zip")
	if err != nil {
		t.Fatal(err)
	}
	z, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	zr, err := zip.NewReader(bytes.NewReader(z), int64(len(z)))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, f := range zr.File {
		seen[f.Name]++
	}
	if len(zr.File) != 2*n+1 || len(seen) != 2*n+1 {
		t.Fatalf("zip: %d entries, %d distinct, want %d", len(zr.File), len(seen), 2*n+1)
	}
}

// TestClientWaitsOutRateLimit: a GET refused with 429 is asked again after
// the server's Retry-After (as server/auth.go sends it), an upload is not
// sent twice, and a client that is always refused gives up with the error.
func TestClientWaitsOutRateLimit(t *testing.T) {
	var mu sync.Mutex
	refuse := map[string]int{"/api/v1/x": 2, "/api/v1/never": 1 << 30, "/api/v1/upload": 1}
	calls := map[string]int{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls[r.URL.Path]++
		n := calls[r.URL.Path]
		mu.Unlock()
		if n <= refuse[r.URL.Path] {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"error":{"status":429,"code":"too_many_requests","message":"too many requests: over 100 requests per second"}}`))
			return
		}
		_, _ = w.Write([]byte(`{"ok":true}`))
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	c, err := newAPIClient("http://"+ln.Addr().String(), "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var v map[string]bool
	if err := c.getJSON(ctx, "/api/v1/x", &v); err != nil || !v["ok"] {
		t.Fatalf("GET after two 429s: %v %v", v, err)
	}
	if err := c.getJSON(ctx, "/api/v1/never", &v); err == nil || !strings.Contains(err.Error(), "429") {
		t.Fatalf("GET always refused: %v, want the 429 error", err)
	}
	if _, err := c.do(ctx, http.MethodPost, "/api/v1/upload", strings.NewReader("body"), "text/plain"); err == nil {
		t.Fatal("an upload refused with 429 was sent again")
	}
	mu.Lock()
	defer mu.Unlock()
	if calls["/api/v1/x"] != 3 || calls["/api/v1/never"] != maxRateWaits+1 || calls["/api/v1/upload"] != 1 {
		t.Fatalf("calls %v", calls)
	}
}
