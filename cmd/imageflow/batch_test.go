package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
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
	app := fiber.New(fiber.Config{DisableStartupMessage: true, BodyLimit: m.MaxRequestBytes()})
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
