package batch_test

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"gocv.io/x/gocv"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/server/batch"
	"github.com/imageflowcanvas/imageflow/server/blob"
	"github.com/imageflowcanvas/imageflow/server/blob/blobtest"
)

func decodeSize(t *testing.T, data []byte) (int, int) {
	t.Helper()
	m, err := gocv.IMDecode(data, gocv.IMReadColor)
	if err != nil || m.Empty() {
		t.Fatalf("not a decodable image (%d bytes): %v", len(data), err)
	}
	defer m.Close()
	return m.Cols(), m.Rows()
}

// fileResultJSON mirrors the result JSON of one file.
type fileResultJSON struct {
	Index      int    `json:"index"`
	File       string `json:"file"`
	Width      int    `json:"width"`
	Height     int    `json:"height"`
	Detections []struct {
		X, Y, W, H float64
		Label      string
	}
	Values map[string]string `json:"values"`
	Steps  []struct {
		ID         string  `json:"id"`
		DurationMS float64 `json:"duration_ms"`
	} `json:"steps"`
}

// runEndToEnd uploads three real images through resize+blur, follows the
// SSE stream to the end and checks every result and the zip.
func runEndToEnd(t *testing.T, e *env) {
	files := []upFile{readImage(t, "messi5.jpg"), readImage(t, "baboon.jpg"), readImage(t, "fruits.jpg")}
	id := e.mustUpload(files, "resize-filter")
	msgs := readSSE(t, e.base+"/api/v1/executions/"+id+"/events", 60*time.Second)
	last := msgs[len(msgs)-1]
	if last.State != batch.StateDone || last.Done != 3 || last.Total != 3 || last.Percent != 100 {
		t.Fatalf("last progress %+v", last)
	}
	x := e.execution(id)
	if x.State != batch.StateDone || x.Done != 3 || len(x.Files) != 3 {
		t.Fatalf("execution %+v", x)
	}
	for i, f := range files {
		rec := x.Files[i]
		if rec.State != batch.FileDone || rec.Name != f.name || len(rec.Steps) != 2 || rec.DurationMS <= 0 || rec.Output != "image/jpeg" {
			t.Fatalf("file %d record %+v", i, rec)
		}
		st, body, hdr := e.get(fmt.Sprintf("/api/v1/executions/%s/files/%d", id, i))
		if st != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
			t.Fatalf("result %d: %d %s", i, st, body)
		}
		var r fileResultJSON
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatal(err)
		}
		w, h := decodeSize(t, f.data)
		if r.Index != i || r.File != f.name || r.Width != w || r.Height != h || len(r.Steps) != 2 || r.Steps[0].ID != "small" {
			t.Fatalf("result %d: %+v (source %dx%d)", i, r, w, h)
		}
		st, img, hdr := e.get(fmt.Sprintf("/api/v1/executions/%s/files/%d/image", id, i))
		if st != 200 || hdr.Get("Content-Type") != "image/jpeg" {
			t.Fatalf("image %d: %d %s", i, st, hdr.Get("Content-Type"))
		}
		if ow, oh := decodeSize(t, img); ow != 320 || oh != h*320/w && oh != (h*320+w-1)/w {
			t.Fatalf("image %d is %dx%d, want 320 wide from %dx%d", i, ow, oh, w, h)
		}
	}
	st, z, hdr := e.get("/api/v1/executions/" + id + "/results.zip")
	if st != 200 || hdr.Get("Content-Type") != "application/zip" {
		t.Fatalf("zip: %d %s", st, hdr.Get("Content-Type"))
	}
	zr, err := zip.NewReader(bytes.NewReader(z), int64(len(z)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
		rc, _ := f.Open()
		data, _ := io.ReadAll(rc)
		rc.Close()
		if strings.HasPrefix(f.Name, "outputs/") {
			if w, _ := decodeSize(t, data); w != 320 {
				t.Fatalf("zip %s width %d", f.Name, w)
			}
		}
	}
	sort.Strings(names)
	want := []string{"execution.json", "outputs/0000_messi5.jpg", "outputs/0001_baboon.jpg", "outputs/0002_fruits.jpg", "results/0000.json", "results/0001.json", "results/0002.json"}
	if fmt.Sprint(names) != fmt.Sprint(want) {
		t.Fatalf("zip entries %v, want %v", names, want)
	}
}

func TestEndToEndJetStreamStore(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	runEndToEnd(t, startEnv(t, envOpts{mod: func(c *batch.Config) { c.Registerer = reg }}))
	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			switch {
			case m.Counter != nil:
				got[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				got[key] = m.Gauge.GetValue()
			case m.Histogram != nil:
				got[key] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	want := map[string]float64{
		"imageflow_batch_executions_total{state=created}": 1,
		"imageflow_batch_executions_total{state=done}":    1,
		"imageflow_batch_files_total{state=done}":         3,
		"imageflow_batch_files_running":                   0,
		"imageflow_batch_file_duration_seconds":           3,
		"imageflow_batch_retries_total":                   0,
		"imageflow_batch_dead_letters_total":              0,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("metrics %v, want %v", got, want)
	}
}

func TestEndToEndMinIO(t *testing.T) {
	cfg := blobtest.StartMinIO(t)
	var store *blob.MinIO
	e := startEnv(t, envOpts{store: func(*bus.Bus) blob.Store {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		s, err := blob.NewMinIO(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		store = s
		return s
	}})
	runEndToEnd(t, e)
	// The blobs really are in MinIO: 3 inputs, 3 outputs, 3 results.
	infos, err := store.List(context.Background(), "executions/")
	if err != nil || len(infos) != 9 {
		t.Fatalf("minio holds %d blobs (%v), want 9", len(infos), err)
	}
}

func TestDetectionsInResult(t *testing.T) {
	e := startEnv(t, envOpts{})
	id := e.mustUpload([]upFile{readImage(t, "messi5.jpg")}, "faces")
	x := e.waitFor(id, 60*time.Second, finished)
	if x.State != batch.StateDone || x.Files[0].Detections < 1 {
		t.Fatalf("execution %+v", x.Files[0])
	}
	_, body, _ := e.get("/api/v1/executions/" + id + "/files/0")
	var r fileResultJSON
	_ = json.Unmarshal(body, &r)
	if len(r.Detections) != x.Files[0].Detections || r.Detections[0].Label != "face" || r.Detections[0].W <= 0 {
		t.Fatalf("result %s", body)
	}
	// Messi's face in the 548x342 picture is around x 225..260, y 95..130
	// (see processors/builtin's test); boxes are in source pixels.
	found := false
	for _, d := range r.Detections {
		cx, cy := d.X+d.W/2, d.Y+d.H/2
		if cx > 215 && cx < 275 && cy > 85 && cy < 140 {
			found = true
		}
	}
	if !found || r.Width != 548 || r.Height != 342 {
		t.Fatalf("no face box near Messi's face: %s", body)
	}
	// This pipeline draws nothing: no output image.
	if st, body, _ := e.get("/api/v1/executions/" + id + "/files/0/image"); st != 404 || !strings.Contains(string(body), "no image") {
		t.Fatalf("image of a detection-only pipeline: %d %s", st, body)
	}
}

// TestProgressWebSocketAndLateSubscriber follows a 20-file execution over
// WebSocket from a client that joins after some files finished: it must
// first get those (the current state), then the rest live, then a close.
func TestProgressWebSocketAndLateSubscriber(t *testing.T) {
	e := startEnv(t, envOpts{mod: func(c *batch.Config) { c.Workers = 1 }})
	img := readImage(t, "baboon.jpg")
	files := make([]upFile, 20)
	for i := range files {
		files[i] = upFile{name: fmt.Sprintf("b%02d.jpg", i), data: img.data}
	}
	id := e.mustUpload(files, "resize-filter")
	e.waitFor(id, 30*time.Second, func(x *batch.Execution) bool { return x.Done >= 2 })

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.base, "http")+"/api/v1/executions/"+id+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	var msgs []progressMsg
	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
				t.Fatalf("ws ended with %v after %d messages", err, len(msgs))
			}
			break
		}
		if typ != websocket.MessageText {
			t.Fatalf("message type %v", typ)
		}
		var p progressMsg
		if err := json.Unmarshal(data, &p); err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, p)
	}
	// The first messages are the snapshot: at least the two files done
	// before connecting, then an overall message.
	if len(msgs) < 3 || msgs[0].FileState != "FILE_STATE_DONE" || msgs[1].FileState != "FILE_STATE_DONE" {
		t.Fatalf("snapshot missing: first messages %+v", msgs[:min(3, len(msgs))])
	}
	done := map[int]bool{}
	sawLiveRunning := false
	for _, p := range msgs {
		if p.Execution != id || p.Total != 20 {
			t.Fatalf("message %+v", p)
		}
		if p.FileState == "FILE_STATE_DONE" {
			done[p.Index] = true
		}
		if p.FileState == "FILE_STATE_RUNNING" {
			sawLiveRunning = true
		}
	}
	last := msgs[len(msgs)-1]
	if len(done) != 20 || last.State != batch.StateDone || last.Done != 20 || !sawLiveRunning {
		t.Fatalf("saw %d files done, last %+v, running seen %v", len(done), last, sawLiveRunning)
	}

	// A subscriber after the end gets the final state and the end at once,
	// over SSE too.
	sse := readSSE(t, e.base+"/api/v1/executions/"+id+"/events", 10*time.Second)
	if len(sse) != 21 || sse[20].FileState != "FILE_STATE_UNSPECIFIED" || sse[20].State != batch.StateDone {
		t.Fatalf("late SSE: %d messages, last %+v", len(sse), sse[len(sse)-1])
	}
	// Plain GET on the ws endpoint explains itself.
	if st, body, _ := e.get("/api/v1/executions/" + id + "/ws"); st != http.StatusUpgradeRequired {
		t.Fatalf("GET ws without upgrade: %d %s", st, body)
	}
	if st, _, _ := e.get("/api/v1/executions/0000000000000000nope/ws"); st != 404 {
		t.Fatalf("ws unknown execution: %d", st)
	}
}

func TestSSELive(t *testing.T) {
	e := startEnv(t, envOpts{})
	img := readImage(t, "fruits.jpg")
	files := []upFile{img, img, img, img, img}
	id := e.mustUpload(files, "resize-filter")
	msgs := readSSE(t, e.base+"/api/v1/executions/"+id+"/events", 30*time.Second)
	last := msgs[len(msgs)-1]
	if last.State != batch.StateDone || last.Done != 5 {
		t.Fatalf("last %+v", last)
	}
	prev := -1.0
	for _, p := range msgs {
		if p.Percent < prev {
			t.Fatalf("percent went back: %+v", msgs)
		}
		prev = p.Percent
	}
}

func TestBadInputAndLimits(t *testing.T) {
	e := startEnv(t, envOpts{mod: func(c *batch.Config) { c.MaxFiles = 5; c.MaxFileBytes = 600 << 10 }})
	img := readImage(t, "messi5.jpg") // 73 KB
	big := readImage(t, "baboon.jpg") // over 600 KiB? checked below
	if int64(len(big.data)) <= 600<<10 {
		big = upFile{name: "big.jpg", data: append(append([]byte{}, img.data...), make([]byte, 700<<10)...)}
	}
	errOf := func(body []byte) (int, string, string, string) {
		var eb struct {
			Error struct {
				Status        int
				Code, Message string
				Step          string
			}
		}
		if err := json.Unmarshal(body, &eb); err != nil {
			t.Fatalf("error body %s: %v", body, err)
		}
		return eb.Error.Status, eb.Error.Code, eb.Error.Message, eb.Error.Step
	}
	cases := []struct {
		name   string
		files  []upFile
		values map[string]string
		status int
		msg    string
		step   string
	}{
		{"no files", nil, map[string]string{"pipeline": "resize-filter"}, 400, "no files", ""},
		{"too many files", []upFile{img, img, img, img, img, img}, map[string]string{"pipeline": "resize-filter"}, 413, "at most 5 per execution (MaxFiles)", ""},
		{"file too big", []upFile{img, big}, map[string]string{"pipeline": "resize-filter"}, 413, "at most 614400 per file (MaxFileBytes)", ""},
		{"unknown pipeline", []upFile{img}, map[string]string{"pipeline": "nope"}, 404, "nope", ""},
		{"no pipeline", []upFile{img}, nil, 400, "no pipeline", ""},
		{"both pipelines", []upFile{img}, map[string]string{"pipeline": "resize-filter", "pipeline_json": "{}"}, 400, "not both", ""},
		{"malformed inline", []upFile{img}, map[string]string{"pipeline_json": "{steps:"}, 400, "malformed JSON", ""},
		{"bad inline step", []upFile{img}, map[string]string{"pipeline_json": `{"steps":[{"id":"ok","processor":"resize"},{"id":"bad","processor":"resize","params":{"width":-5},"inputs":["ok"]}]}`}, 400, "width", "bad"},
		{"unknown field", []upFile{img}, map[string]string{"pipeline": "resize-filter", "color": "blue"}, 400, `unknown form field "color"`, ""},
		{"remote without factory", []upFile{img}, map[string]string{"pipeline_json": `{"steps":[{"id":"far","processor":"grpc://127.0.0.1:9"}]}`}, 400, "remote processors are not available", "far"},
		{"unknown processor", []upFile{img}, map[string]string{"pipeline_json": `{"steps":[{"id":"x","processor":"teleport"}]}`}, 400, "teleport", "x"},
	}
	for _, tc := range cases {
		st, body := e.upload(tc.files, tc.values)
		if st != tc.status {
			t.Errorf("%s: status %d, want %d: %s", tc.name, st, tc.status, body)
			continue
		}
		status, _, msg, step := errOf(body)
		if status != tc.status || !strings.Contains(msg, tc.msg) || step != tc.step {
			t.Errorf("%s: error %d %q step %q, want %q step %q", tc.name, status, msg, step, tc.msg, tc.step)
		}
	}
	// Nothing was created by the rejected uploads.
	_, body, _ := e.get("/api/v1/executions")
	var l struct{ Executions []json.RawMessage }
	_ = json.Unmarshal(body, &l)
	if len(l.Executions) != 0 {
		t.Fatalf("rejected uploads created executions: %s", body)
	}

	// A text file and a corrupt JPEG fail with a reason; the others go on.
	corrupt := append([]byte{}, img.data[:600]...)
	corrupt = append(corrupt, bytes.Repeat([]byte{0x55}, 2000)...)
	corrupt[300] ^= 0xff
	// A JPEG header claiming 30000x30000 pixels, in a few bytes.
	bomb := []byte{0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0x75, 0x30, 0x75, 0x30, 0x03, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1, 0xFF, 0xD9}
	files := []upFile{img, {name: "notes.txt", data: []byte("hello, not an image\n")}, {name: "broken.jpg", data: []byte("\xff\xd8\xff\xe0garbage that is no jpeg at all")}, img, {name: "bomb.jpg", data: bomb}}
	st, body := e.upload(files, map[string]string{"pipeline_json": `{"id":"inline1","steps":[{"id":"r","processor":"resize","params":{"width":100}}]}`})
	if st != 202 {
		t.Fatalf("upload: %d %s", st, body)
	}
	var c struct{ ID string }
	_ = json.Unmarshal(body, &c)
	x := e.waitFor(c.ID, 30*time.Second, finished)
	if x.State != batch.StateDone || x.Done != 2 || x.Failed != 3 || x.Pipeline != "inline1" {
		t.Fatalf("execution %+v", x)
	}
	if f := x.Files[1]; f.State != batch.FileFailed || !strings.Contains(f.Error, "not an image") {
		t.Fatalf("text file: %+v", f)
	}
	if f := x.Files[2]; f.State != batch.FileFailed || !strings.Contains(f.Error, "corrupt image") {
		t.Fatalf("corrupt file: %+v", f)
	}
	if f := x.Files[4]; f.State != batch.FileFailed || !strings.Contains(f.Error, "30000x30000, over the limit of 67108864 pixels") {
		t.Fatalf("pixel bomb: %+v", f)
	}
	if st, body, _ := e.get("/api/v1/executions/" + c.ID + "/files/1"); st != 409 || !strings.Contains(string(body), "not an image") {
		t.Fatalf("result of failed file: %d %s", st, body)
	}
	for path, want := range map[string]int{
		"/api/v1/executions/" + c.ID + "/files/9":       404,
		"/api/v1/executions/" + c.ID + "/files/x":       400,
		"/api/v1/executions/" + c.ID + "/files/0":       200,
		"/api/v1/executions/" + c.ID + "/files/3/image": 200,
		"/api/v1/executions/bad.id":                     400,
		"/api/v1/executions/ffffffffffffffff00000000":   404,
		"/api/v1/executions?state=bogus":                400,
		"/api/v1/executions?limit=0":                    400,
	} {
		if st, body, _ := e.get(path); st != want {
			t.Errorf("GET %s: %d, want %d: %s", path, st, want, body)
		}
	}
}

func TestListPagination(t *testing.T) {
	e := startEnv(t, envOpts{})
	img := readImage(t, "fruits.jpg")
	var ids []string
	for i := 0; i < 5; i++ {
		ids = append(ids, e.mustUpload([]upFile{img}, "resize-filter"))
	}
	for _, id := range ids {
		e.waitFor(id, 30*time.Second, finished)
	}
	type page struct {
		Executions []struct{ ID, State string }
		NextCursor string `json:"next_cursor"`
		Total      int
	}
	var seen []string
	cursor := ""
	for n := 0; n < 5; n++ {
		_, body, _ := e.get("/api/v1/executions?limit=2&state=done&cursor=" + cursor)
		var p page
		if err := json.Unmarshal(body, &p); err != nil {
			t.Fatal(err)
		}
		for _, x := range p.Executions {
			seen = append(seen, x.ID)
		}
		if p.NextCursor == "" {
			break
		}
		cursor = p.NextCursor
	}
	// Newest first, each once.
	want := []string{ids[4], ids[3], ids[2], ids[1], ids[0]}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("cursor pages %v, want %v", seen, want)
	}
	_, body, _ := e.get("/api/v1/executions?limit=2&page=3")
	var p page
	_ = json.Unmarshal(body, &p)
	if len(p.Executions) != 1 || p.Executions[0].ID != ids[0] || p.Total != 5 {
		t.Fatalf("page 3: %s", body)
	}
	_, body, _ = e.get("/api/v1/executions?state=cancelled")
	_ = json.Unmarshal(body, &p)
	if len(p.Executions) != 0 {
		t.Fatalf("state filter: %s", body)
	}
}

func TestCancel(t *testing.T) {
	dir := t.TempDir()
	e := startEnv(t, envOpts{dataDir: dir, mod: func(c *batch.Config) { c.Workers = 1 }})
	img := readImage(t, "baboon.jpg")
	files := make([]upFile, 30)
	for i := range files {
		files[i] = upFile{name: fmt.Sprintf("f%d.jpg", i), data: img.data}
	}
	id := e.mustUpload(files, "resize-filter")
	e.waitFor(id, 30*time.Second, func(x *batch.Execution) bool { return x.Done >= 1 })
	req, _ := http.NewRequest(http.MethodDelete, e.base+"/api/v1/executions/"+id, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"state":"cancelled"`) {
		t.Fatalf("cancel: %d %s", resp.StatusCode, body)
	}
	// Every file ends done (finished before the cancel) or cancelled.
	x := e.waitFor(id, 10*time.Second, func(x *batch.Execution) bool { return x.Done+x.Cancelled == 30 })
	if x.State != batch.StateCancelled || x.Done >= 30 || x.Cancelled == 0 {
		t.Fatalf("after cancel: %+v", x)
	}
	doneAtCancel := x.Done
	// Cancelling again is harmless; the stream ends at once.
	resp, _ = http.DefaultClient.Do(req)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("second cancel: %d", resp.StatusCode)
	}
	if msgs := readSSE(t, e.base+"/api/v1/executions/"+id+"/events", 10*time.Second); msgs[len(msgs)-1].State != batch.StateCancelled {
		t.Fatalf("stream of a cancelled execution: %+v", msgs[len(msgs)-1])
	}
	// A restart does not resume it.
	e.stop()
	e2 := startEnv(t, envOpts{dataDir: dir})
	time.Sleep(300 * time.Millisecond) // give a wrongly resumed execution time to show
	if x := e2.execution(id); x.State != batch.StateCancelled || x.Done != doneAtCancel {
		t.Fatalf("after restart: %+v", x)
	}
	// A finished execution cannot be cancelled.
	id2 := e2.mustUpload(files[:1], "resize-filter")
	e2.waitFor(id2, 30*time.Second, finished)
	req2, _ := http.NewRequest(http.MethodDelete, e2.base+"/api/v1/executions/"+id2, nil)
	resp, _ = http.DefaultClient.Do(req2)
	resp.Body.Close()
	if resp.StatusCode != 409 {
		t.Fatalf("cancel finished: %d", resp.StatusCode)
	}
}

// TestStreamsEndOnClose: an open progress stream must not hold a shutting
// down server; Close ends it and returns.
func TestStreamsEndOnClose(t *testing.T) {
	e := startEnv(t, envOpts{mod: func(c *batch.Config) { c.Workers = 1 }})
	img := readImage(t, "baboon.jpg")
	files := make([]upFile, 200)
	for i := range files {
		files[i] = upFile{name: fmt.Sprintf("f%d.jpg", i), data: img.data}
	}
	id := e.mustUpload(files, "resize-filter")
	resp, err := http.Get(e.base + "/api/v1/executions/" + id + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 1)
	if _, err := resp.Body.Read(buf); err != nil { // the stream is open
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() { e.m.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close blocked with a stream open")
	}
	rest, err := io.ReadAll(resp.Body)
	if err != nil || !strings.Contains(string(rest), "event: end") {
		t.Fatalf("stream after Close: %v, tail %q", err, rest[max(0, len(rest)-80):])
	}
}

// TestThousandFiles: the default MaxFiles (1000) fits in one upload (more
// parts than mime/multipart's ReadForm allows), one more is a 413.
func TestThousandFiles(t *testing.T) {
	e := startEnv(t, envOpts{mod: func(c *batch.Config) { c.Workers = 1 }})
	img := readImage(t, "messi5.jpg")
	files := make([]upFile, batch.DefaultMaxFiles+1)
	for i := range files {
		files[i] = upFile{name: fmt.Sprintf("m%04d.jpg", i), data: img.data[:1024]} // truncated: fails fast
	}
	st, body := e.upload(files, map[string]string{"pipeline": "resize-filter"})
	if st != 413 || !strings.Contains(string(body), "at most 1000 per execution (MaxFiles)") {
		t.Fatalf("1001 files: %d %s", st, body)
	}
	id := e.mustUpload(files[:batch.DefaultMaxFiles], "resize-filter")
	if x := e.execution(id); x.Total != batch.DefaultMaxFiles || len(x.Files) != batch.DefaultMaxFiles {
		t.Fatalf("total %d", x.Total)
	}
	req, _ := http.NewRequest(http.MethodDelete, e.base+"/api/v1/executions/"+id, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}
