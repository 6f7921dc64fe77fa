package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"image/jpeg"
	"mime/multipart"
	"os"
	"strings"
	"testing"
)

const messiPath = "/usr/share/doc/opencv-doc/examples/data/messi5.jpg"

// tryForm builds a try request body: fields and, when img is not nil, the picture.
func tryForm(t *testing.T, fields map[string]string, img []byte) (string, string) {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for k, v := range fields {
		_ = w.WriteField(k, v)
	}
	if img != nil {
		fw, err := w.CreateFormFile("image", "messi5.jpg")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = fw.Write(img)
	}
	_ = w.Close()
	return w.FormDataContentType(), buf.String()
}

// TestTryPipeline runs an inline and a stored pipeline on messi5.jpg through
// POST /api/v1/pipelines/try: every step answers a decodable picture of the
// size it made and its time, the Haar face step finds a face, and bad
// requests get a 400 naming the problem.
func TestTryPipeline(t *testing.T) {
	img, err := os.ReadFile(messiPath)
	if err != nil {
		t.Skipf("opencv-doc not installed: %v", err)
	}
	ts := startServer(t, testConfig(t.TempDir()))
	p := pipelineBody("faces",
		step("small", "resize", map[string]any{"width": 400}),
		step("face", "detect", map[string]any{"backend": "haar"}, "small"),
		step("boxes", "overlay", nil, "face"))
	inline, _ := json.Marshal(p)

	ct, body := tryForm(t, map[string]string{"pipeline": string(inline)}, img)
	st, out, _ := ts.doRaw("POST", "/api/v1/pipelines/try", ct, body)
	if st != 200 {
		t.Fatalf("try: %d %s", st, out)
	}
	var res tryResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	if res.Width != 548 || res.Height != 342 || len(res.Steps) != 3 {
		t.Fatalf("answer: %dx%d with %d steps", res.Width, res.Height, len(res.Steps))
	}
	for i, want := range []string{"small", "face", "boxes"} {
		s := res.Steps[i]
		if s.ID != want || s.Error != "" || s.MS <= 0 {
			t.Errorf("step %d: id %q error %q ms %v", i, s.ID, s.Error, s.MS)
		}
		pic, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s.Image, "data:image/jpeg;base64,"))
		if err != nil {
			t.Fatalf("step %s picture: %v", s.ID, err)
		}
		cfg, err := jpeg.DecodeConfig(bytes.NewReader(pic))
		if err != nil || cfg.Width != 400 || cfg.Width != s.Width || cfg.Height != s.Height {
			t.Errorf("step %s picture: %v %dx%d (says %dx%d), want 400 wide", s.ID, err, cfg.Width, cfg.Height, s.Width, s.Height)
		}
		t.Logf("step %s: %.2f ms, %d detections", s.ID, s.MS, len(s.Detection))
	}
	if len(res.Steps[0].Detection) != 0 || len(res.Steps[1].Detection) == 0 {
		t.Errorf("detections: resize %d, face %d; want 0 and at least 1", len(res.Steps[0].Detection), len(res.Steps[1].Detection))
	}
	for _, d := range res.Steps[1].Detection {
		// Source pixels: the box lies inside the 548x342 original.
		if d.X < 0 || d.Y < 0 || d.X+d.W > 548 || d.Y+d.H > 342 || d.Label != "face" {
			t.Errorf("face box %+v outside the source picture or mislabelled", d)
		}
	}

	// A stored pipeline by id runs the same.
	if st, b, _ := ts.do("POST", "/api/v1/pipelines", "", p); st != 201 {
		t.Fatalf("store: %d %s", st, b)
	}
	ct, body = tryForm(t, map[string]string{"pipeline_id": "faces"}, img)
	if st, out, _ := ts.doRaw("POST", "/api/v1/pipelines/try", ct, body); st != 200 || !strings.Contains(string(out), `"id":"face"`) {
		t.Fatalf("try stored: %d %.200s", st, out)
	}

	bad, _ := json.Marshal(pipelineBody("x", step("face", "detect", map[string]any{"backend": "haar", "cascade": "missing.xml"})))
	cases := []struct {
		name   string
		fields map[string]string
		img    []byte
		status int
		want   string
	}{
		{"no picture", map[string]string{"pipeline_id": "faces"}, nil, 400, "image"},
		{"not a picture", map[string]string{"pipeline_id": "faces"}, []byte("hello"), 400, "image"},
		{"no pipeline", nil, img, 400, "pipeline"},
		{"both", map[string]string{"pipeline_id": "faces", "pipeline": string(inline)}, img, 400, "not both"},
		{"unknown stored", map[string]string{"pipeline_id": "nope"}, img, 404, "nope"},
		{"bad param", map[string]string{"pipeline": string(bad)}, img, 400, "missing.xml"},
	}
	for _, c := range cases {
		ct, body := tryForm(t, c.fields, c.img)
		st, out, _ := ts.doRaw("POST", "/api/v1/pipelines/try", ct, body)
		expectError(t, st, out, c.status, c.want)
	}
	if st, out, _ := ts.doRaw("POST", "/api/v1/pipelines/try", "application/json", "{}"); st != 400 {
		t.Errorf("JSON body: %d %s", st, out)
	}
}

// TestTryOnCameraFrame runs an inline pipeline on the demo camera's next
// live frame instead of an upload.
func TestTryOnCameraFrame(t *testing.T) {
	img, err := os.ReadFile(messiPath)
	if err != nil {
		t.Skipf("opencv-doc not installed: %v", err)
	}
	cfg := testConfig(t.TempDir())
	cfg.Demo = true
	ts := startServer(t, cfg)
	waitCameraOnline(t, ts, DemoCamera)
	inline, _ := json.Marshal(pipelineBody("t", step("small", "resize", map[string]any{"width": 320})))
	ct, body := tryForm(t, map[string]string{"pipeline": string(inline), "camera": DemoCamera}, nil)
	st, out, _ := ts.doRaw("POST", "/api/v1/pipelines/try", ct, body)
	if st != 200 {
		t.Fatalf("try on camera: %d %s", st, out)
	}
	var res tryResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	// The live frames are the camera's picture scaled to detect_width.
	if res.Width != cfg.DetectWidth || res.Height != cfg.DetectWidth*576/768 || len(res.Steps) != 1 || res.Steps[0].Width != 320 || !strings.HasPrefix(res.Steps[0].Image, "data:image/jpeg;base64,") {
		t.Fatalf("try on camera: %dx%d, %d steps", res.Width, res.Height, len(res.Steps))
	}
	ct, body = tryForm(t, map[string]string{"pipeline": string(inline), "camera": "nope"}, nil)
	st, out, _ = ts.doRaw("POST", "/api/v1/pipelines/try", ct, body)
	expectError(t, st, out, 404, "nope")
	ct, body = tryForm(t, map[string]string{"pipeline": string(inline), "camera": DemoCamera}, img)
	st, out, _ = ts.doRaw("POST", "/api/v1/pipelines/try", ct, body)
	expectError(t, st, out, 400, "not both")
}
