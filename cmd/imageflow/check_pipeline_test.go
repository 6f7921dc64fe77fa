package main

import (
	"context"
	"encoding/json"
	"fmt"
	"image"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"gocv.io/x/gocv"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/processors/builtin"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	streamv1 "github.com/imageflowcanvas/imageflow/proto/streamv1"
	"github.com/imageflowcanvas/imageflow/server"
)

// goClahe is the Go twin of processors/python/examples/clahe.py, built in
// for this test only: CLAHE on the L channel of Lab.
type goClahe struct {
	clahe     gocv.CLAHE
	lab, l    gocv.Mat
	chans     []gocv.Mat
	clip      float64
	tilesSide int
}

func goClaheSpec() processors.Spec {
	return processors.Spec{Name: "clahe_go", Description: "test twin of the Python CLAHE example", Outputs: []string{"image"},
		Params: []processors.ParamSpec{
			{Name: "clip_limit", Type: processors.ParamFloat, Default: 2.0, Min: processors.Range(0.1), Max: processors.Range(40)},
			{Name: "tile_grid", Type: processors.ParamInt, Default: int64(8), Min: processors.Range(1), Max: processors.Range(64)},
		},
		New: func(p processors.Params) (processors.Processor, error) {
			return &goClahe{clahe: gocv.NewCLAHEWithParams(p.Float("clip_limit"), image.Pt(p.Int("tile_grid"), p.Int("tile_grid"))),
				lab: gocv.NewMat(), l: gocv.NewMat()}, nil
		}}
}

func (g *goClahe) Process(_ context.Context, in *processors.Input, out *processors.Output) error {
	gocv.CvtColor(in.Image, &g.lab, gocv.ColorBGRToLab)
	for _, c := range g.chans {
		c.Close()
	}
	g.chans = gocv.Split(g.lab)
	g.clahe.Apply(g.chans[0], &g.l)
	g.l.CopyTo(&g.chans[0])
	gocv.Merge(g.chans, &g.lab)
	if out.Image.Ptr() == nil {
		out.Image = gocv.NewMat()
	}
	gocv.CvtColor(g.lab, &out.Image, gocv.ColorLabToBGR)
	return nil
}

func (g *goClahe) Close() error {
	for _, c := range g.chans {
		c.Close()
	}
	g.lab.Close()
	g.l.Close()
	return g.clahe.Close()
}

// mixedPipeline is resize (built-in) → CLAHE (contrast) → Haar faces
// (built-in detect).
func mixedPipeline(id, contrast string) string {
	return `{"id":"` + id + `","steps":[
		{"id":"small","processor":"resize","params":{"width":480}},
		{"id":"contrast","processor":"` + contrast + `","inputs":["small"],"params":{"clip_limit":3.0,"tile_grid":8}},
		{"id":"face","processor":"detect","inputs":["contrast"],"params":{"backend":"haar","min_neighbors":3}}]}`
}

// startInProcessServer runs `imageflow serve` in this process with the
// built-ins and the Go CLAHE twin registered.
func startInProcessServer(t *testing.T) *server.Server {
	t.Helper()
	reg := processors.NewRegistry()
	builtin.Register(reg)
	reg.Register(goClaheSpec())
	cfg := server.Defaults()
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr, cfg.GRPCAddr, cfg.WebRTCUDPAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.RTSPAddr, cfg.RTSPUDPAddr = "", ""
	cfg.Demo = true // the demo camera, repointed to a pipeline with the Python step
	srv := &server.Server{Config: cfg, Registry: reg, Logger: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

// darker writes a dimmed copy of a JPEG, where CLAHE changes the most.
func darker(t *testing.T, path, out string) []byte {
	t.Helper()
	m := gocv.IMRead(path, gocv.IMReadColor)
	defer m.Close()
	d := gocv.NewMat()
	defer d.Close()
	m.ConvertToWithParams(&d, gocv.MatTypeCV8UC3, 0.35, 10)
	buf, err := gocv.IMEncode(gocv.JPEGFileExt, d)
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	b := append([]byte(nil), buf.GetBytes()...)
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

// sameBoxes compares detections within tol pixels, ignoring order.
func sameBoxes(a, b []*busv1.Detection, tol float32) string {
	if len(a) != len(b) {
		return fmt.Sprintf("%d detections vs %d", len(a), len(b))
	}
	key := func(d *busv1.Detection) float32 { return d.X*10000 + d.Y }
	sa, sb := append([]*busv1.Detection(nil), a...), append([]*busv1.Detection(nil), b...)
	sort.Slice(sa, func(i, j int) bool { return key(sa[i]) < key(sa[j]) })
	sort.Slice(sb, func(i, j int) bool { return key(sb[i]) < key(sb[j]) })
	abs := func(f float32) float32 { return float32(math.Abs(float64(f))) }
	for i := range sa {
		x, y := sa[i], sb[i]
		if x.Label != y.Label || abs(x.X-y.X) > tol || abs(x.Y-y.Y) > tol || abs(x.W-y.W) > tol || abs(x.H-y.H) > tol {
			return fmt.Sprintf("%v vs %v", x, y)
		}
	}
	return ""
}

// TestPythonStepInPipelines runs resize → Python CLAHE (grpc://) → Haar
// detect over StreamService, in a batch execution, live on a published
// camera and on the demo camera (with HOG people), and compares each with
// the same pipeline whose CLAHE is the Go twin built in; then kills the Python process (counted errors) and brings
// it back (results return). It logs the latency of the Python step against
// the built-in one.
func TestPythonStepInPipelines(t *testing.T) {
	needPython(t)
	const messi = "/usr/share/doc/opencv-doc/examples/data/messi5.jpg"
	img, err := os.ReadFile(messi)
	if err != nil {
		t.Skip("opencv-doc not installed")
	}
	inputs := t.TempDir()
	dark := darker(t, messi, filepath.Join(inputs, "dark.jpg"))
	if err := os.WriteFile(filepath.Join(inputs, "messi.jpg"), img, 0o644); err != nil {
		t.Fatal(err)
	}

	pyAddr := freePort(t)
	py := startPython(t, "clahe.py", pyAddr)
	srv := startInProcessServer(t)
	addrs := srv.Addrs()
	postPipelines(t, addrs.HTTP,
		mixedPipeline("py", "grpc://"+pyAddr), mixedPipeline("go", "clahe_go"),
		`{"id":"py_only","steps":[{"id":"contrast","processor":"grpc://`+pyAddr+`","params":{"clip_limit":3.0}}]}`,
		`{"id":"go_only","steps":[{"id":"contrast","processor":"clahe_go","params":{"clip_limit":3.0}}]}`)

	// StreamService: the same detections, frame by frame.
	faces := 0
	for name, frame := range map[string][]byte{"messi": img, "dark": dark} {
		p, g := streamOnce(t, addrs.GRPC, "py", frame), streamOnce(t, addrs.GRPC, "go", frame)
		if p.Error != "" || g.Error != "" {
			t.Fatalf("%s: py %q go %q", name, p.Error, g.Error)
		}
		if d := sameBoxes(p.GetResult().GetDetections(), g.GetResult().GetDetections(), 2); d != "" {
			t.Fatalf("%s: Python step differs from the Go twin: %s", name, d)
		}
		faces += len(g.GetResult().GetDetections())
		t.Logf("stream %s: %d faces, equal", name, len(g.GetResult().GetDetections()))
	}
	if faces == 0 {
		t.Fatal("no faces found at all: the comparison would prove nothing")
	}

	// A batch execution through the CLI: same result files, same pictures.
	t.Run("batch", func(t *testing.T) { compareBatch(t, addrs.HTTP, inputs) })
	// Live: a published camera per pipeline, results from the bus.
	t.Run("camera", func(t *testing.T) { compareCameras(t, srv, addrs, dark) })

	// The demo camera (opencv-doc's people clip) with the mixed pipeline and
	// the HOG people detector, beside a second camera on the same clip with
	// the Go twin.
	t.Run("demo camera", func(t *testing.T) { compareDemoCameras(t, srv, addrs.HTTP, pyAddr) })

	// Latency of the CLAHE step alone and inside the mixed pipeline.
	for _, pair := range [][2]string{{"py_only", "go_only"}, {"py", "go"}} {
		const frames = 30
		pp50, pp99 := streamLatency(t, addrs.GRPC, pair[0], img, frames)
		gp50, gp99 := streamLatency(t, addrs.GRPC, pair[1], img, frames)
		t.Logf("latency over %d frames of 548x342 (server time per frame): %-8s p50 %6.2fms p99 %6.2fms | %-8s p50 %6.2fms p99 %6.2fms | Python costs %+.2fms at p50",
			frames, pair[0], ms(pp50), ms(pp99), pair[1], ms(gp50), ms(gp99), ms(pp50-gp50))
	}

	// Kill the Python process: frames fail and the errors are counted.
	_ = py.Process.Kill()
	_ = py.Wait()
	down := streamOnce(t, addrs.GRPC, "py", img)
	if down.Error == "" {
		t.Fatalf("Python step down but no error: %+v", down)
	}
	series := `imageflow_remote_processor_errors_total{address="` + pyAddr + `"}`
	if n := metricValue(t, addrs.HTTP, series); n < 1 {
		t.Fatalf("%s = %v, want counted errors", series, n)
	}
	t.Logf("Python step down: %q, %s counted", down.Error, series)
	// Restarted on the same address, results come back equal to the twin.
	startPython(t, "clahe.py", pyAddr)
	want := streamOnce(t, addrs.GRPC, "go", img)
	deadline := time.Now().Add(20 * time.Second)
	for {
		back := streamOnce(t, addrs.GRPC, "py", img)
		if back.Error == "" && sameBoxes(back.GetResult().GetDetections(), want.GetResult().GetDetections(), 2) == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("results did not return after the restart: %+v", back)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// streamLatency sends n frames one after another on one stream and returns
// the p50 and p99 of the server's time per frame.
func streamLatency(t *testing.T, grpcAddr, pipeline string, img []byte, n int) (time.Duration, time.Duration) {
	t.Helper()
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := streamv1.NewStreamServiceClient(conn).Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var lat []time.Duration
	for i := 0; i < n+3; i++ { // the first frames warm up the step
		if err := st.Send(&streamv1.StreamRequest{Pipeline: pipeline, Frame: &streamv1.StreamFrame{
			Sequence: uint64(i + 1), Format: busv1.PixelFormat_PIXEL_FORMAT_JPEG, Data: img}}); err != nil {
			t.Fatal(err)
		}
		res, err := st.Recv()
		if err != nil || res.Error != "" {
			t.Fatalf("%s frame %d: %v %s", pipeline, i, err, res.GetError())
		}
		if i >= 3 {
			lat = append(lat, time.Duration(res.LatencyNs))
		}
	}
	_ = st.CloseSend()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat[len(lat)/2], lat[(len(lat)*99-1)/100]
}

// batchResult is the part of a result file the comparison reads.
type batchResult struct {
	Detections []*busv1.Detection `json:"detections"`
}

func compareBatch(t *testing.T, httpAddr, inputs string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	files, _ := filepath.Glob(filepath.Join(inputs, "*.jpg"))
	sort.Strings(files)
	outs := map[string]string{}
	for _, pl := range []string{"py", "go"} {
		outs[pl] = t.TempDir()
		var stdout, stderr strings.Builder
		args := append([]string{"run", "--server", "http://" + httpAddr, "--pipeline", pl, "--out", outs[pl]}, files...)
		if err := runBatch(ctx, args, &stdout, &stderr); err != nil {
			t.Fatalf("batch %s: %v\n%s\n%s", pl, err, stdout.String(), stderr.String())
		}
		if !strings.Contains(stdout.String(), fmt.Sprintf("done: %d done, 0 failed", len(files))) {
			t.Fatalf("batch %s:\n%s", pl, stdout.String())
		}
	}
	entries, _ := os.ReadDir(outs["go"])
	compared := 0
	for _, e := range entries {
		a, b := filepath.Join(outs["py"], e.Name()), filepath.Join(outs["go"], e.Name())
		switch filepath.Ext(e.Name()) {
		case ".json":
			var ra, rb batchResult
			ba, _ := os.ReadFile(a)
			bb, _ := os.ReadFile(b)
			if json.Unmarshal(ba, &ra) != nil || json.Unmarshal(bb, &rb) != nil {
				t.Fatalf("%s: %s / %s", e.Name(), ba, bb)
			}
			if d := sameBoxes(ra.Detections, rb.Detections, 2); d != "" {
				t.Fatalf("batch %s: Python differs from the Go twin: %s", e.Name(), d)
			}
			t.Logf("batch %s: %d faces, equal", e.Name(), len(rb.Detections))
		case ".jpg", ".png":
			ma, mb := gocv.IMRead(a, gocv.IMReadColor), gocv.IMRead(b, gocv.IMReadColor)
			if ma.Empty() || ma.Rows() != mb.Rows() || ma.Cols() != mb.Cols() || ma.Cols() != 480 {
				t.Fatalf("batch %s: %dx%d vs %dx%d", e.Name(), ma.Cols(), ma.Rows(), mb.Cols(), mb.Rows())
			}
			diff := gocv.NewMat()
			gocv.AbsDiff(ma, mb, &diff)
			mean := diff.Mean()
			ma.Close()
			mb.Close()
			diff.Close()
			if m := (mean.Val1 + mean.Val2 + mean.Val3) / 3; m > 1.0 {
				t.Fatalf("batch %s: output pictures differ by %.2f on average", e.Name(), m)
			} else {
				t.Logf("batch %s: mean pixel difference %.3f", e.Name(), m)
			}
		default:
			continue
		}
		compared++
	}
	if compared != 4 {
		t.Fatalf("compared %d result files, want 4 (2 pictures, 2 JSON)", compared)
	}
}

func compareCameras(t *testing.T, srv *server.Server, addrs server.Listen, frame []byte) {
	postCameras(t, addrs.HTTP, `{"id":"cam_py","source":"publish","pipeline":"py"}`, `{"id":"cam_go","source":"publish","pipeline":"go"}`)
	var mu sync.Mutex
	got := map[string][]*busv1.Result{}
	for _, cam := range []string{"cam_py", "cam_go"} {
		cam := cam
		unsub, err := srv.SubscribeResults(cam, func(r *busv1.Result) {
			mu.Lock()
			got[cam] = append(got[cam], r)
			mu.Unlock()
		})
		if err != nil {
			t.Fatal(err)
		}
		defer unsub()
	}
	conn, err := grpc.NewClient(addrs.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := streamv1.NewStreamServiceClient(conn)
	streams := map[string]streamv1.StreamService_PublishClient{}
	for _, cam := range []string{"cam_py", "cam_go"} {
		st, err := client.Publish(ctx)
		if err != nil {
			t.Fatal(err)
		}
		streams[cam] = st
	}
	enough := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got["cam_py"]) >= 3 && len(got["cam_go"]) >= 3
	}
	for i := 0; i < 200 && !enough(); i++ {
		for cam, st := range streams {
			req := &streamv1.PublishRequest{Payload: &streamv1.PublishRequest_Jpeg{Jpeg: &streamv1.JpegFrame{Pts: int64(i) * int64(100*time.Millisecond), Data: frame}}}
			if i == 0 {
				req.Camera = cam
			}
			if err := st.Send(req); err != nil {
				t.Fatalf("%s: %v", cam, err)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, st := range streams {
		_, _ = st.CloseAndRecv()
	}
	if !enough() {
		t.Fatalf("camera results: py %d, go %d", len(got["cam_py"]), len(got["cam_go"]))
	}
	mu.Lock()
	defer mu.Unlock()
	last := func(cam string) *busv1.Result { return got[cam][len(got[cam])-1] }
	if d := sameBoxes(last("cam_py").Detections, last("cam_go").Detections, 2); d != "" {
		t.Fatalf("camera: Python differs from the Go twin: %s", d)
	}
	t.Logf("camera: %d and %d results, last with %d faces, equal", len(got["cam_py"]), len(got["cam_go"]), len(last("cam_go").Detections))
}

// postCameras creates cameras through the REST API.
func postCameras(t *testing.T, httpAddr string, bodies ...string) {
	t.Helper()
	for _, c := range bodies {
		resp, err := httpPost("http://"+httpAddr+"/api/v1/cameras", c)
		if err != nil {
			t.Fatal(err)
		}
		if resp != 201 {
			t.Fatalf("camera %s: status %d", c, resp)
		}
	}
}

func httpPost(url, body string) (int, error) {
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// compareDemoCameras points the demo camera at resize → Python CLAHE → HOG
// people and adds a camera on the same clip with the Go twin; results of the
// same frame (matched by pts) must be equal. Frames a busy pipeline skipped
// differ between the two, so only frames both processed are compared.
func compareDemoCameras(t *testing.T, srv *server.Server, httpAddr, pyAddr string) {
	const clip = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
	if _, err := os.Stat(clip); err != nil {
		t.Skip("opencv-doc's vtest.avi missing")
	}
	people := func(id, contrast string) string {
		return `{"id":"` + id + `","steps":[
		{"id":"small","processor":"resize","params":{"width":640}},
		{"id":"contrast","processor":"` + contrast + `","inputs":["small"],"params":{"clip_limit":2.0}},
		{"id":"people","processor":"detect","inputs":["contrast"],"params":{"backend":"hog","win_stride":8,"scale":1.05}}]}`
	}
	postPipelines(t, httpAddr, people("people_py", "grpc://"+pyAddr), people("people_go", "clahe_go"))
	var mu sync.Mutex
	byPts := map[string]map[int64]*busv1.Result{"demo": {}, "demo_go": {}}
	for cam := range byPts {
		cam := cam
		want := map[string]string{"demo": "people_py", "demo_go": "people_go"}[cam]
		unsub, err := srv.SubscribeResults(cam, func(r *busv1.Result) {
			// The demo camera's own pipeline runs until the PUT below takes
			// effect: its results are not the Python pipeline's.
			if r.Pipeline != want {
				return
			}
			mu.Lock()
			byPts[cam][r.Pts] = r
			mu.Unlock()
		})
		if err != nil {
			t.Fatal(err)
		}
		defer unsub()
	}
	send := func(method, id, body string) {
		req, _ := http.NewRequest(method, "http://"+httpAddr+"/api/v1/cameras/"+id, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("%s camera %s: %d", method, id, resp.StatusCode)
		}
	}
	send(http.MethodPut, "demo", `{"source":"file://`+clip+`","pipeline":"people_py","enabled":true}`)
	postCameras(t, httpAddr, `{"id":"demo_go","source":"file://`+clip+`","pipeline":"people_go","enabled":true}`)
	// Stopped afterwards, so they do not load the latency measurement.
	defer send(http.MethodDelete, "demo_go", "")
	defer send(http.MethodPut, "demo", `{"source":"file://`+clip+`","pipeline":"people_py","enabled":false}`)
	matched, withPeople := 0, 0
	deadline := time.Now().Add(40 * time.Second)
	for time.Now().Before(deadline) && (matched < 5 || withPeople < 3) {
		time.Sleep(500 * time.Millisecond)
		mu.Lock()
		matched, withPeople = 0, 0
		for pts, p := range byPts["demo"] {
			g, ok := byPts["demo_go"][pts]
			if !ok {
				continue
			}
			if d := sameBoxes(p.Detections, g.Detections, 2); d != "" {
				mu.Unlock()
				t.Fatalf("demo camera frame pts %d: Python differs from the Go twin: %s", pts, d)
			}
			matched++
			if len(g.Detections) > 0 {
				withPeople++
			}
		}
		mu.Unlock()
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("demo camera: %d and %d results, %d frames processed by both, equal; %d with people", len(byPts["demo"]), len(byPts["demo_go"]), matched, withPeople)
	if matched < 5 || withPeople < 3 {
		t.Fatalf("too few frames to compare: %d common, %d with people", matched, withPeople)
	}
}
