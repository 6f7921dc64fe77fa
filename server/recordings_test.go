package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/imageflowcanvas/imageflow/internal/testkit"
	"github.com/imageflowcanvas/imageflow/server/blob/blobtest"
)

// recordingCamera creates a camera looping a 25 fps H264 clip (a keyframe
// every second) with recording on.
func recordingCamera(t *testing.T, ts *testServer, media, id string, extra map[string]any) {
	t.Helper()
	clip := testkit.H264File(t, "320x240", "high", 6)
	dst := filepath.Join(media, id+".mp4")
	raw, err := os.ReadFile(clip)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	body := map[string]any{"id": id, "source": "file://" + dst, "record": true}
	for k, v := range extra {
		body[k] = v
	}
	if st, b, _ := ts.do("POST", "/api/v1/cameras", "", body); st != 201 {
		t.Fatalf("create camera: %d %s", st, b)
	}
}

func (ts *testServer) recordings(id string) recordingList {
	ts.t.Helper()
	st, b, _ := ts.do("GET", "/api/v1/cameras/"+id+"/recordings", "", nil)
	if st != 200 {
		ts.t.Fatalf("recordings: %d %s", st, b)
	}
	var l recordingList
	if err := json.Unmarshal(b, &l); err != nil {
		ts.t.Fatal(err)
	}
	return l
}

// recordedSpan is the time the complete segments cover.
func recordedSpan(l recordingList) time.Duration {
	var d time.Duration
	for _, s := range l.Segments {
		if s.Complete {
			d += s.End.Sub(s.Start)
		}
	}
	return d
}

// probeResult is what ffprobe says of a file: duration, frame count, first
// frame's keyframe flag.
type probeResult struct {
	duration  float64
	frames    int
	firstKey  bool
	rawOutput string
}

func ffprobe(t *testing.T, data []byte) probeResult {
	t.Helper()
	testkit.NeedCommand(t, "ffprobe")
	path := filepath.Join(t.TempDir(), "probeResult.mp4")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
		"-show_entries", "stream=nb_read_frames:format=duration", "-of", "json", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe: %v: %s", err, out)
	}
	var res struct {
		Streams []struct {
			Frames string `json:"nb_read_frames"`
		} `json:"streams"`
		Format struct {
			Duration string `json:"duration"`
		} `json:"format"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.Streams) == 0 {
		t.Fatalf("ffprobe output %s: %v", out, err)
	}
	var p probeResult
	p.rawOutput = string(out)
	p.duration, _ = strconv.ParseFloat(res.Format.Duration, 64)
	p.frames, _ = strconv.Atoi(res.Streams[0].Frames)
	first, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0", "-read_intervals", "%+#1",
		"-show_entries", "frame=key_frame", "-of", "csv=p=0", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe first frame: %v: %s", err, first)
	}
	p.firstKey = strings.HasPrefix(strings.TrimSpace(string(first)), "1")
	// Decoding every frame must not report errors.
	dec, err := exec.Command("ffmpeg", "-v", "error", "-i", path, "-f", "null", "-").CombinedOutput()
	if err != nil || len(bytes.TrimSpace(dec)) > 0 {
		t.Fatalf("ffmpeg decode: %v: %s", err, dec)
	}
	return p
}

func (ts *testServer) export(id string, since, until time.Time, header http.Header) (int, []byte, http.Header) {
	ts.t.Helper()
	q := url.Values{"since": {since.UTC().Format(time.RFC3339Nano)}, "until": {until.UTC().Format(time.RFC3339Nano)}}
	req, _ := http.NewRequest("GET", ts.base+"/api/v1/cameras/"+id+"/recordings/export?"+q.Encode(), nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header
}

// checkRecording records a looping clip, exports a range from its middle
// and checks the file and every stored segment with ffprobe and ffmpeg.
func checkRecording(t *testing.T, ts *testServer, media string) {
	recordingCamera(t, ts, media, "rec", nil)
	testkit.WaitFor(t, 60*time.Second, "8 s recorded", func() bool { return recordedSpan(ts.recordings("rec")) >= 8*time.Second })
	l := ts.recordings("rec")
	if !l.Recording || l.Camera != "rec" {
		t.Fatalf("list: %+v", l)
	}
	for _, s := range l.Segments {
		if s.Codec != "h264" || s.Size <= 0 || !s.End.After(s.Start) {
			t.Fatalf("segment %+v", s)
		}
	}
	if len(l.Gaps) != 0 {
		t.Fatalf("gaps while the camera played: %+v", l.Gaps)
	}
	first := l.Segments[0].Start
	since := first.Add(2500 * time.Millisecond)
	until := since.Add(4 * time.Second)
	st, data, hdr := ts.export("rec", since, until, nil)
	if st != 200 || hdr.Get("Content-Type") != "video/mp4" || hdr.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("export: %d %v %.200s", st, hdr, data)
	}
	p := ffprobe(t, data)
	// From the keyframe at or before since (one a second): 4 to 5 s.
	if p.duration < 3.9 || p.duration > 5.1 {
		t.Fatalf("export duration %.2f s, want 4 to 5: %s", p.duration, p.rawOutput)
	}
	if want := p.duration * 25; float64(p.frames) < want-2 || float64(p.frames) > want+2 {
		t.Fatalf("export has %d frames for %.2f s at 25 fps", p.frames, p.duration)
	}
	if !p.firstKey {
		t.Fatal("export does not start on a keyframe")
	}
	t.Logf("export: %d bytes, %.2f s, %d frames", len(data), p.duration, p.frames)

	st, part, hdr := ts.export("rec", since, until, http.Header{"Range": {"bytes=100-299"}})
	if st != 206 || !bytes.Equal(part, data[100:300]) || hdr.Get("Content-Range") != fmt.Sprintf("bytes 100-299/%d", len(data)) {
		t.Fatalf("range: %d %v %d bytes", st, hdr, len(part))
	}
	st, body, _ := ts.export("rec", since, until, http.Header{"Range": {fmt.Sprintf("bytes=%d-", len(data)+10)}})
	expectError(t, st, body, 416, "not satisfiable")

	// Every segment the index names is a readable fMP4 on its own.
	for _, s := range ts.srv.recorder.Segments("rec", first, time.Now()) {
		if !s.Complete {
			continue
		}
		f, err := ts.srv.recorder.SegmentFile(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		sp := ffprobe(t, f)
		if !sp.firstKey || sp.frames == 0 {
			t.Fatalf("segment %s: %+v", s.Start, sp)
		}
	}

	// Bad input: clear 4xx, nothing else.
	for _, q := range []string{"since=yesterday&until=2024-01-01T00:00:00Z", "since=2024-01-02T00:00:00Z&until=2024-01-01T00:00:00Z", "until=2024-01-01T00:00:00Z", "since=2024-01-01T00:00:00Z&until=2024-01-01T02:00:00Z"} {
		st, body, _ := ts.do("GET", "/api/v1/cameras/rec/recordings/export?"+q, "", nil)
		expectError(t, st, body, 400, "")
	}
	st, body, _ = ts.do("GET", "/api/v1/cameras/rec/recordings?since=nope", "", nil)
	expectError(t, st, body, 400, "since")
	st, body, _ = ts.do("GET", "/api/v1/cameras/nobody/recordings/export?since=2024-01-01T00:00:00Z&until=2024-01-01T00:01:00Z", "", nil)
	expectError(t, st, body, 404, "no recording")
	st, body, _ = ts.do("GET", "/api/v1/cameras/a.b/recordings", "", nil)
	expectError(t, st, body, 400, "")
}

func recordingConfig(t *testing.T) (Config, string) {
	media := t.TempDir()
	cfg := testConfig(t.TempDir())
	cfg.MediaDirs = []string{media}
	cfg.RecordSegment = 2 * time.Second
	return cfg, media
}

// TestRecordingExport records a camera into the embedded object store and
// exports a range from the middle of it.
func TestRecordingExport(t *testing.T) {
	cfg, media := recordingConfig(t)
	checkRecording(t, startServer(t, cfg), media)
}

// TestRecordingExportMinIO does the same against a real MinIO.
func TestRecordingExportMinIO(t *testing.T) {
	mc := blobtest.StartMinIO(t)
	cfg, media := recordingConfig(t)
	cfg.S3Endpoint, cfg.S3Bucket, cfg.S3AccessKey, cfg.S3SecretKey = mc.Endpoint, mc.Bucket, mc.AccessKey, mc.SecretKey
	checkRecording(t, startServer(t, cfg), media)
}

// TestRecordingRetention keeps a camera's recordings within a short
// retention and a size cap, oldest first, with index and store agreeing.
func TestRecordingRetention(t *testing.T) {
	cfg, media := recordingConfig(t)
	ts := startServer(t, cfg)
	recordingCamera(t, ts, media, "short", map[string]any{"record_retention": "3s"})
	// A segment is deleted once it ended more than 3 s ago: the oldest
	// segment start moves forward while recording goes on.
	var firstStart time.Time
	testkit.WaitFor(t, 60*time.Second, "a first segment", func() bool {
		l := ts.recordings("short")
		if len(l.Segments) > 0 && l.Segments[0].Complete {
			firstStart = l.Segments[0].Start
			return true
		}
		return false
	})
	testkit.WaitFor(t, 60*time.Second, "the oldest segment deleted", func() bool {
		l := ts.recordings("short")
		return len(l.Segments) > 0 && l.Segments[0].Start.After(firstStart)
	})
	l := ts.recordings("short")
	for _, s := range l.Segments {
		if s.Complete && time.Since(s.End) > 3*time.Second+5*time.Second {
			t.Fatalf("segment ended %s ago still kept", time.Since(s.End))
		}
	}
	checkIndexMatchesStore(t, ts, "short")
	if n := metricValue(t, ts, `imageflow_record_retention_deletions_total{reason="age"}`); n < 1 {
		t.Fatalf("retention deletions metric %v", n)
	}
	for _, m := range []string{"imageflow_record_bytes_total{camera=\"short\"}", "imageflow_record_segments_total{camera=\"short\"}", "imageflow_record_write_seconds_count"} {
		if v := metricValue(t, ts, m); v <= 0 {
			t.Fatalf("%s = %v", m, v)
		}
	}
}

// checkIndexMatchesStore compares every indexed segment with the blobs.
func checkIndexMatchesStore(t *testing.T, ts *testServer, cam string) {
	t.Helper()
	ctx := context.Background()
	blobs, err := ts.srv.blobs.List(ctx, "recordings/")
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]bool{}
	for _, b := range blobs {
		stored[b.Key] = true
	}
	named := map[string]bool{}
	open := map[string]bool{}
	for _, s := range ts.srv.recorder.Segments(cam, time.Time{}, time.Now().Add(time.Hour)) {
		keys := s.Keys()
		if !s.Complete {
			open[keys[0][:strings.LastIndex(keys[0], "/")+1]] = true
		}
		for _, k := range keys {
			named[k] = true
		}
	}
	for k := range named {
		if !stored[k] {
			t.Errorf("index names %s, the store lacks it", k)
		}
	}
	for k := range stored {
		dir := k[:strings.LastIndex(k, "/")+1]
		if !named[k] && !open[dir] && !strings.HasSuffix(k, "init.mp4") {
			t.Errorf("store holds %s, the index does not name it", k)
		}
	}
}

const recordHelperEnv = "IFC_RECORD_HELPER_DIR"

// TestRecordingHelperProcess is not a test: run by TestRecordingKill9 as a
// child process, it serves on a data directory until killed.
func TestRecordingHelperProcess(t *testing.T) {
	dir := os.Getenv(recordHelperEnv)
	if dir == "" {
		t.Skip("helper process for TestRecordingKill9")
	}
	cfg := testConfig(filepath.Join(dir, "data"))
	cfg.MediaDirs = []string{filepath.Join(dir, "media")}
	cfg.RecordSegment = 2 * time.Second
	srv := &Server{Config: cfg}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {} // until SIGKILL
}

// TestRecordingKill9 kills the server with SIGKILL while it records, starts
// it again on the same data directory and checks that the open segment was
// closed, every indexed segment plays in ffprobe and ffmpeg, and the index
// and the store agree.
func TestRecordingKill9(t *testing.T) {
	dir := t.TempDir()
	media := filepath.Join(dir, "media")
	if err := os.MkdirAll(media, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestRecordingHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), recordHelperEnv+"="+dir)
	var childLog bytes.Buffer
	cmd.Stdout, cmd.Stderr = &syncWriter{w: &childLog}, &syncWriter{w: &childLog}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	var base string
	testkit.WaitFor(t, 60*time.Second, "the child serving", func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "data", "listen.json"))
		if err != nil {
			return false
		}
		var l Listen
		if json.Unmarshal(b, &l) != nil || l.HTTP == "" {
			return false
		}
		base = "http://" + l.HTTP
		return true
	})
	child := &testServer{t: t, base: base}
	recordingCamera(t, child, media, "crash", nil)
	// Kill once two segments are complete and the third has fragments
	// stored: the kill lands in the middle of a segment.
	testkit.WaitFor(t, 60*time.Second, "a segment in progress", func() bool {
		l := child.recordings("crash")
		return len(l.Segments) >= 3 && !l.Segments[len(l.Segments)-1].Complete
	})
	time.Sleep(300 * time.Millisecond) // somewhere inside a fragment
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited

	cfg := testConfig(filepath.Join(dir, "data"))
	cfg.MediaDirs = []string{media}
	cfg.RecordSegment = 2 * time.Second
	ts := startServer(t, cfg)
	if !strings.Contains(ts.log.String(), "segments_closed=1") {
		t.Fatalf("no repair after the kill:\n%s", ts.log.String())
	}
	segs := ts.srv.recorder.Segments("crash", time.Time{}, time.Now())
	if len(segs) < 3 {
		t.Fatalf("%d segments after the restart", len(segs))
	}
	for _, s := range segs {
		if !s.Complete {
			continue // recording again since the restart
		}
		f, err := ts.srv.recorder.SegmentFile(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		p := ffprobe(t, f)
		if !p.firstKey || p.frames == 0 {
			t.Fatalf("segment %s after the kill: %+v", s.Start, p)
		}
	}
	checkIndexMatchesStore(t, ts, "crash")
}

// TestRecordingPlayerInBrowser plays a recorded range in headless Chromium
// through the camera page's player: frames are decoded
// (requestVideoFrameCallback), and picking another time loads and plays
// that range.
func TestRecordingPlayerInBrowser(t *testing.T) {
	needBrowser(t)
	cfg, media := recordingConfig(t)
	ts := startServer(t, cfg)
	recordingCamera(t, ts, media, "play", nil)
	testkit.WaitFor(t, 60*time.Second, "8 s recorded", func() bool { return recordedSpan(ts.recordings("play")) >= 8*time.Second })

	tab, cancel := chromedp.NewContext(newBrowser(t))
	defer cancel()
	if err := chromedp.Do(tab, chromedp.Navigate(ts.base+"/cameras/play")); err != nil {
		t.Fatalf("navigate: %v", err)
	}
	// The timeline of the last 10 minutes shows the recorded span.
	selectValue(t, tab, "recording-window", "600000")
	waitJS(t, tab, `window.__ifcPlayback && window.__ifcPlayback.spans >= 1 && !!document.querySelector('[data-testid="timeline-span"]')`, 30*time.Second)

	// clickSpanAt clicks the recorded span at fraction f of its width.
	clickSpanAt := func(f float64) {
		t.Helper()
		js := fmt.Sprintf(`(() => { const el = document.querySelector('[data-testid="timeline-span"]'); el.scrollIntoView({block: 'center'}); const r = el.getBoundingClientRect(); return [r.left + r.width * %f, r.top + r.height / 2]; })()`, f)
		xy, err := chromedp.Run(tab, chromedp.Evaluate[[]float64](js))
		if err != nil || len(xy) != 2 {
			t.Fatalf("span position: %v %v", xy, err)
		}
		if err := chromedp.Do(tab, chromedp.MouseClickXY(xy[0], xy[1])); err != nil {
			t.Fatal(err)
		}
	}
	clickSpanAt(0.2)
	defer func() {
		if t.Failed() {
			state, _ := chromedp.Run(tab, chromedp.Evaluate[string](`JSON.stringify({p: window.__ifcPlayback, v: (() => { const v = document.querySelector('[data-testid="recording-video"]'); return v && {t: v.currentTime, rs: v.readyState, err: v.error && v.error.message, src: v.currentSrc}; })()})`))
			t.Logf("player: %s", state)
		}
	}()
	waitJS(t, tab, `window.__ifcPlayback.loads === 1 && window.__ifcPlayback.frames >= 10 && !window.__ifcPlayback.error`, 30*time.Second)
	first, err := chromedp.Run(tab, chromedp.Evaluate[float64](`window.__ifcPlayback.since`))
	if err != nil {
		t.Fatal(err)
	}
	// Another time: a new range loads and plays from there.
	clickSpanAt(0.7)
	waitJS(t, tab, `window.__ifcPlayback.loads === 2 && window.__ifcPlayback.since > `+strconv.FormatFloat(first, 'f', 0, 64)+
		` && document.querySelector('[data-testid="recording-video"]').currentTime > 0.3 && window.__ifcPlayback.frames >= 5 && !window.__ifcPlayback.error`, 30*time.Second)
	// Speed applies to the element.
	selectValue(t, tab, "recording-speed", "2")
	waitJS(t, tab, `document.querySelector('[data-testid="recording-video"]').playbackRate === 2`, 10*time.Second)
	// The download link names the range and answers an MP4.
	href, err := chromedp.Run(tab, chromedp.Evaluate[string](`document.querySelector('[data-testid="download-range"]').getAttribute('href')`))
	if err != nil || !strings.Contains(href, "/recordings/export?") {
		t.Fatalf("download link %q (%v)", href, err)
	}
	st, data, _ := ts.do("GET", href, "", nil)
	if st != 200 || ffprobe(t, data).frames == 0 {
		t.Fatalf("download: %d", st)
	}
}

// selectValue picks an option of a <select> by test id as a user would:
// the value changes and a change event follows.
func selectValue(t *testing.T, tab context.Context, testID, value string) {
	t.Helper()
	js := fmt.Sprintf(`(() => { const s = document.querySelector('[data-testid=%q]'); s.value = %q; s.dispatchEvent(new Event('change', {bubbles: true})); return s.value; })()`, testID, value)
	if got, err := chromedp.Run(tab, chromedp.Evaluate[string](js)); err != nil || got != value {
		t.Fatalf("select %s = %s: got %q (%v)", testID, value, got, err)
	}
}
