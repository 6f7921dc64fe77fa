package batch_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"io"
	"mime/multipart"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/processors/builtin"
)

// fullHD is a real picture (messi5.jpg) scaled to 1920x1080 and encoded as
// JPEG, the size a camera snapshot has.
func fullHD(b *testing.B) []byte {
	b.Helper()
	src := gocv.IMRead(dataDir+"messi5.jpg", gocv.IMReadColor)
	if src.Empty() {
		b.Skip("messi5.jpg missing")
	}
	defer src.Close()
	dst := gocv.NewMat()
	defer dst.Close()
	gocv.Resize(src, &dst, image.Pt(1920, 1080), 0, 0, gocv.InterpolationCubic)
	buf, err := gocv.IMEncode(gocv.JPEGFileExt, dst)
	if err != nil {
		b.Fatal(err)
	}
	defer buf.Close()
	return bytes.Clone(buf.GetBytes())
}

// benchClient does what a REST client does for one image: upload, wait on
// the event stream for the end, download the output image.
type benchClient struct {
	base string
	http *http.Client
	body []byte
	ct   string
}

func newBenchClient(base string, img []byte) *benchClient {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("pipeline", "resize-filter")
	w, _ := mw.CreateFormFile("files", "fullhd.jpg")
	_, _ = w.Write(img)
	_ = mw.Close()
	return &benchClient{base: base, body: buf.Bytes(), ct: mw.FormDataContentType(),
		http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}}
}

func (c *benchClient) one() error {
	resp, err := c.http.Post(c.base+"/api/v1/executions", c.ct, bytes.NewReader(c.body))
	if err != nil {
		return err
	}
	var created struct{ ID string }
	err = json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 202 {
		return fmt.Errorf("upload: %d %v", resp.StatusCode, err)
	}
	resp, err = c.http.Get(c.base + "/api/v1/executions/" + created.ID + "/events")
	if err != nil {
		return err
	}
	// The stream ends when the execution is finished.
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	resp, err = c.http.Get(c.base + "/api/v1/executions/" + created.ID + "/files/0/image")
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(body) == 0 {
		return fmt.Errorf("image: %d: %.200s", resp.StatusCode, body)
	}
	return nil
}

func percentiles(b *testing.B, lat []time.Duration) {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(p(0.5), "p50-ms")
	b.ReportMetric(p(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkBatchREST: one 1920x1080 JPEG through resize+blur over REST,
// end to end (upload → event stream end → output downloaded), one client.
func BenchmarkBatchREST(b *testing.B) {
	img := fullHD(b)
	e := startEnv(b, envOpts{})
	c := newBenchClient(e.base, img)
	if err := c.one(); err != nil { // warm up: compile, connections
		b.Fatal(err)
	}
	b.SetBytes(int64(len(img)))
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if err := c.one(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	percentiles(b, lat)
}

// BenchmarkBatchRESTConcurrent8: the same with 8 clients at once; reports
// images per second.
func BenchmarkBatchRESTConcurrent8(b *testing.B) {
	img := fullHD(b)
	e := startEnv(b, envOpts{})
	const clients = 8
	cs := make([]*benchClient, clients)
	for i := range cs {
		cs[i] = newBenchClient(e.base, img)
	}
	if err := cs[0].one(); err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	var mu sync.Mutex
	lat := make([]time.Duration, 0, b.N)
	var firstErr error
	b.SetBytes(int64(len(img)))
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				err := c.one()
				d := time.Since(t0)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				lat = append(lat, d)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	percentiles(b, lat)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "images/s")
}

// BenchmarkBatchInProcess is the naive floor: the same image decoded at full
// size, run through the same pipeline with the engine and encoded,
// in-process with OpenCV and nothing else.
func BenchmarkBatchInProcess(b *testing.B) { inProcess(b, gocv.IMReadColor) }

// BenchmarkBatchInProcessReduced is the floor with the decode the batch
// worker does for this pipeline (1/4 scale in libjpeg: resize to 320 needs
// no more): the REST overhead is the difference to this one.
func BenchmarkBatchInProcessReduced(b *testing.B) { inProcess(b, gocv.IMReadReducedColor4) }

func inProcess(b *testing.B, flag gocv.IMReadFlag) {
	img := fullHD(b)
	reg := processors.NewRegistry()
	builtin.Register(reg)
	pl, err := processors.Compile(reg, storedPipelines["resize-filter"])
	if err != nil {
		b.Fatal(err)
	}
	defer pl.Close()
	ctx := context.Background()
	b.SetBytes(int64(len(img)))
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		m, err := gocv.IMDecode(img, flag)
		if err != nil || m.Empty() {
			b.Fatal("decode")
		}
		res, err := pl.Run(ctx, m)
		if err != nil {
			b.Fatal(err)
		}
		buf, err := gocv.IMEncode(gocv.JPEGFileExt, *res.Image)
		if err != nil {
			b.Fatal(err)
		}
		buf.Close()
		m.Close()
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	percentiles(b, lat)
}

// BenchmarkBatch1000Files: one execution of 1000 small pictures (the
// default file limit), to watch the per-file cost of the record updates
// (one KV compare-and-set per file on a record that grows with the files).
func BenchmarkBatch1000Files(b *testing.B) {
	src := gocv.IMRead(dataDir+"fruits.jpg", gocv.IMReadColor)
	if src.Empty() {
		b.Skip("fruits.jpg missing")
	}
	small := gocv.NewMat()
	gocv.Resize(src, &small, image.Pt(96, 64), 0, 0, gocv.InterpolationArea)
	buf, _ := gocv.IMEncode(gocv.JPEGFileExt, small)
	img := bytes.Clone(buf.GetBytes())
	buf.Close()
	small.Close()
	src.Close()
	e := startEnv(b, envOpts{})
	files := make([]upFile, 1000)
	for i := range files {
		files[i] = upFile{name: fmt.Sprintf("s%04d.jpg", i), data: img}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		id := e.mustUpload(files, "resize-filter")
		up := time.Since(t0)
		x := e.waitFor(id, 5*time.Minute, finished)
		if x.Done != 1000 {
			b.Fatalf("done %d", x.Done)
		}
		b.ReportMetric(float64(up.Milliseconds()), "upload-ms")
		b.ReportMetric(1000/time.Since(t0).Seconds(), "files/s")
	}
	b.ReportMetric(0, "ns/op")
}
