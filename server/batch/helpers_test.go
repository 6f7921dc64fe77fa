package batch_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/processors/builtin"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	"github.com/imageflowcanvas/imageflow/server/batch"
	"github.com/imageflowcanvas/imageflow/server/blob"
)

const dataDir = "/usr/share/doc/opencv-doc/examples/data/"

func mustStruct(m map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(m)
	if err != nil {
		panic(err)
	}
	return s
}

// storedPipelines are what the test's Config.Pipelines knows.
var storedPipelines = map[string]*busv1.Pipeline{
	"resize-filter": {Id: "resize-filter", Steps: []*busv1.Step{
		{Id: "small", Processor: "resize", Params: mustStruct(map[string]any{"width": 320})},
		{Id: "gray", Processor: "filter", Params: mustStruct(map[string]any{"mode": "blur"}), Inputs: []string{"small"}},
	}},
	"faces": {Id: "faces", Steps: []*busv1.Step{
		{Id: "faces", Processor: "detect", Params: mustStruct(map[string]any{"backend": "blazeface"})},
	}},
}

func lookupPipeline(_ context.Context, id string) (*busv1.Pipeline, error) {
	if p, ok := storedPipelines[id]; ok {
		return p, nil
	}
	return nil, fmt.Errorf("stored pipeline %q: %w", id, batch.ErrPipelineNotFound)
}

type env struct {
	t    testing.TB
	bus  *bus.Bus
	m    *batch.Manager
	base string
	app  *fiber.App
}

type envOpts struct {
	dataDir string
	store   func(*bus.Bus) blob.Store
	mod     func(*batch.Config)
	addr    string
}

// startEnv starts a bus, a Manager and a fiber app with the batch routes on
// a loopback port; everything stops when the test ends.
func startEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	if o.dataDir == "" {
		o.dataDir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := &bus.Bus{Config: bus.Config{DataDir: o.dataDir, Logger: slog.New(slog.DiscardHandler)}}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var store blob.Store = blob.NewJetStream(b.Objects())
	if o.store != nil {
		store = o.store(b)
	}
	reg := processors.NewRegistry()
	builtin.Register(reg)
	cfg := batch.Config{Bus: b, Blobs: store, Registry: reg, Pipelines: lookupPipeline, Logger: slog.New(slog.DiscardHandler)}
	if o.mod != nil {
		o.mod(&cfg)
	}
	m, err := batch.New(cfg)
	if err != nil {
		b.Close()
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		m.Close()
		b.Close()
		t.Fatal(err)
	}
	app := fiber.New(fiber.Config{DisableStartupMessage: true, BodyLimit: m.MaxRequestBytes(), DisablePreParseMultipartForm: true})
	for _, r := range m.Routes() {
		app.Add(r.Method, r.Path, r.Handler)
	}
	addr := o.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	e := &env{t: t, bus: b, m: m, app: app, base: "http://" + ln.Addr().String()}
	if c, ok := t.(interface{ Cleanup(func()) }); ok {
		c.Cleanup(e.stop)
	}
	return e
}

func (e *env) stop() {
	// The manager first: it ends progress streams the server waits for.
	e.m.Close()
	_ = e.app.ShutdownWithTimeout(5 * time.Second)
	e.bus.Close()
}

type upFile struct {
	name string
	data []byte
}

func readImage(t testing.TB, name string) upFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, name))
	if err != nil {
		t.Skipf("opencv-doc sample %s missing: %v", name, err)
	}
	return upFile{name: name, data: b}
}

// upload posts files with the given form values and returns status and body.
func (e *env) upload(files []upFile, values map[string]string) (int, []byte) {
	e.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range values {
		_ = mw.WriteField(k, v)
	}
	for _, f := range files {
		w, _ := mw.CreateFormFile("files", f.name)
		_, _ = w.Write(f.data)
	}
	_ = mw.Close()
	resp, err := http.Post(e.base+"/api/v1/executions", mw.FormDataContentType(), &buf)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

func (e *env) mustUpload(files []upFile, pipeline string) string {
	e.t.Helper()
	st, body := e.upload(files, map[string]string{"pipeline": pipeline})
	if st != http.StatusAccepted {
		e.t.Fatalf("upload: %d %s", st, body)
	}
	var c struct{ ID string }
	if err := json.Unmarshal(body, &c); err != nil || c.ID == "" {
		e.t.Fatalf("upload answer %s: %v", body, err)
	}
	return c.ID
}

func (e *env) get(path string) (int, []byte, http.Header) {
	e.t.Helper()
	resp, err := http.Get(e.base + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body, resp.Header
}

func (e *env) execution(id string) *batch.Execution {
	e.t.Helper()
	st, body, _ := e.get("/api/v1/executions/" + id)
	if st != 200 {
		e.t.Fatalf("get execution: %d %s", st, body)
	}
	x := &batch.Execution{}
	if err := json.Unmarshal(body, x); err != nil {
		e.t.Fatal(err)
	}
	return x
}

// waitFor polls the execution until cond holds or the deadline passes.
func (e *env) waitFor(id string, d time.Duration, cond func(*batch.Execution) bool) *batch.Execution {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for {
		x := e.execution(id)
		if cond(x) {
			return x
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("execution %s: condition not met within %v: state %s done %d failed %d of %d", id, d, x.State, x.Done, x.Failed, x.Total)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func finished(x *batch.Execution) bool {
	return x.State == batch.StateDone || x.State == batch.StateFailed || x.State == batch.StateCancelled
}

// progressMsg is a busv1.Progress as clients receive it.
type progressMsg struct {
	Execution string  `json:"execution"`
	State     string  `json:"state"`
	Index     int     `json:"index"`
	FileState string  `json:"file_state"`
	Error     string  `json:"error"`
	Done      int     `json:"done"`
	Failed    int     `json:"failed"`
	Total     int     `json:"total"`
	Percent   float64 `json:"percent"`
}

// readSSE reads a text/event-stream until it ends, returning the progress
// messages.
func readSSE(t testing.TB, url string, timeout time.Duration) []progressMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("sse: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	var out []progressMsg
	sc := bufio.NewScanner(resp.Body)
	event := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: ") && event == "progress":
			var p progressMsg
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &p); err != nil {
				t.Fatalf("sse data %q: %v", line, err)
			}
			out = append(out, p)
		case strings.HasPrefix(line, "data: ") && event == "end":
			return out
		}
	}
	if ctx.Err() != nil {
		t.Fatalf("sse stream did not end within %v (%d messages)", timeout, len(out))
	}
	t.Fatalf("sse stream closed without end event: %v", sc.Err())
	return nil
}
