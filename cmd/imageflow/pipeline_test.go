package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"github.com/imageflowcanvas/imageflow/server"
)

// TestPipelineTryCLI runs `imageflow pipeline try` against a server in this
// process: an inline face pipeline on messi5.jpg prints each step's time and
// the faces, and writes every step's picture; a bad pipeline fails with the
// server's message naming the step.
func TestPipelineTryCLI(t *testing.T) {
	const img = "/usr/share/doc/opencv-doc/examples/data/messi5.jpg"
	if _, err := os.Stat(img); err != nil {
		t.Skipf("opencv-doc sample missing: %v", err)
	}
	cfg := server.Defaults()
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr, cfg.GRPCAddr, cfg.WebRTCUDPAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.RTSPAddr, cfg.RTSPUDPAddr = "", ""
	cfg.Demo = false
	srv := &server.Server{Config: cfg, Logger: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	base := "http://" + srv.Addrs().HTTP

	dir := t.TempDir()
	spec := filepath.Join(dir, "faces.json")
	_ = os.WriteFile(spec, []byte(`{"id":"faces","steps":[
		{"id":"small","processor":"resize","params":{"width":400}},
		{"id":"face","processor":"detect","params":{"backend":"haar"},"inputs":["small"]}]}`), 0o644)
	out := filepath.Join(dir, "out")
	var stdout, stderr bytes.Buffer
	if err := runPipeline(ctx, []string{"try", "--server", base, "--pipeline-json", spec, "--out", out, img}, &stdout, &stderr); err != nil {
		t.Fatalf("pipeline try: %v\n%s%s", err, &stdout, &stderr)
	}
	t.Logf("output:\n%s", &stdout)
	text := stdout.String()
	if !strings.Contains(text, "pipeline faces on messi5.jpg (548x342)") || !strings.Contains(text, "face ") || !strings.Contains(text, " ms") {
		t.Errorf("output lacks the run's summary or steps:\n%s", text)
	}
	if !strings.Contains(text, "      face ") {
		t.Errorf("no face listed:\n%s", text)
	}
	for _, step := range []string{"small", "face"} {
		m := gocv.IMRead(filepath.Join(out, step+".jpg"), gocv.IMReadColor)
		if m.Empty() || m.Cols() != 400 {
			t.Errorf("%s.jpg: %dx%d, want 400 wide", step, m.Cols(), m.Rows())
		}
		m.Close()
	}

	_ = os.WriteFile(spec, []byte(`{"id":"bad","steps":[{"id":"face","processor":"detect","params":{"backend":"haar","cascade":"missing.xml"}}]}`), 0o644)
	err := runPipeline(ctx, []string{"try", "--server", base, "--pipeline-json", spec, img}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "missing.xml") || !strings.Contains(err.Error(), "face") {
		t.Errorf("bad pipeline: %v", err)
	}
}
