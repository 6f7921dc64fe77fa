package g2g

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	mch264 "github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/chromedp/chromedp"

	"github.com/imageflowcanvas/imageflow/internal/testkit"
	"github.com/imageflowcanvas/imageflow/server"
	"github.com/imageflowcanvas/imageflow/webapp"
)

// The clip: 640x480 at 25 fps; the top band holds the frame number as 16
// blocks 40 px wide (white = 1, least significant bit left), the band below
// its complement, so a frame read mid-transition or smeared by the encoder
// is recognised and skipped. A white block walks across the picture below,
// so the detection pipeline has motion to look at.
const (
	width, height = 640, 480
	fps           = 25
	bits          = 16
	blockW        = width / bits
	bandH         = 32
	clipFrames    = 20 * fps // numbers repeat every 20 s, far above any latency
)

// frameNumberJS collects, for every frame the page's video presents, the
// number read from its pixels and when it is shown (ms since the epoch):
// canvas drawImage of the current frame, getImageData of the two bands.
const frameNumberJS = `(() => {
  const v = document.querySelector('[data-testid=live-video]');
  const c = document.createElement('canvas');
  const ctx = c.getContext('2d', { willReadFrequently: true });
  const p = (window.__probe = { seen: [], unreadable: 0 });
  const onFrame = (now, meta) => {
    if (v.videoWidth === 640 && v.videoHeight === 480) {
      c.width = 640;
      c.height = 64;
      ctx.drawImage(v, 0, 0);
      const px = ctx.getImageData(0, 0, c.width, c.height).data;
      let n = 0, ok = true;
      for (let i = 0; i < 16; i++) {
        const x = i * 40 + 20;
        const bit = px[(16 * c.width + x) * 4] > 128;
        const inv = px[(48 * c.width + x) * 4] > 128;
        if (bit === inv) ok = false;
        if (bit) n |= 1 << i;
      }
      if (ok) p.seen.push([n, performance.timeOrigin + meta.expectedDisplayTime]);
      else p.unreadable++;
    }
    v.requestVideoFrameCallback(onFrame);
  };
  v.requestVideoFrameCallback(onFrame);
  return true;
})()`

// TestGlassToGlass prints the glass-to-glass latency of the live view with
// and without detection overlays. It asserts only that frames were read.
// IFC_G2G_SECONDS sets each case's measuring time (default 8).
func TestGlassToGlass(t *testing.T) {
	if testing.Short() {
		t.Skip("a latency benchmark (~40 s)")
	}
	testkit.NeedCommand(t, "ffmpeg", "chromium")
	if !webapp.Built() {
		testkit.Need(t, "web UI not built (scripts/build-webapp.sh)")
	}
	measure := 8 * time.Second
	if s, err := strconv.Atoi(os.Getenv("IFC_G2G_SECONDS")); err == nil && s > 0 {
		measure = time.Duration(s) * time.Second
	}
	aus := numberedClip(t)

	cfg := server.Defaults()
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.RTSPAddr = "127.0.0.1:0"
	cfg.RTSPUDPAddr = ""
	cfg.GRPCAddr = ""
	cfg.WebRTCUDPAddr = "127.0.0.1:0"
	cfg.Demo = false
	srv := &server.Server{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	base := "http://" + srv.Addrs().HTTP
	// The demo's pipeline: motion regions, HOG people detection inside them.
	post(t, base+"/api/v1/pipelines", map[string]any{"id": "people", "steps": []any{
		map[string]any{"id": "motion", "processor": "motion", "params": map[string]any{"min_area": 300}},
		map[string]any{"id": "people", "processor": "detect", "inputs": []any{"motion"}, "params": map[string]any{
			"backend": "hog", "gate": "only_if_motion", "regions": "motion", "region_min_height": 256,
			"tight_boxes": true, "keep_input_detections": false, "win_stride": 8, "scale": 1.05}},
	}})
	post(t, base+"/api/v1/cameras", map[string]any{"id": "bare", "source": "publish"})
	post(t, base+"/api/v1/cameras", map[string]any{"id": "overlays", "source": "publish", "pipeline": "people"})

	browser, _ := testkit.Chromium(t)
	var report bytes.Buffer
	fmt.Fprintf(&report, "glass-to-glass latency: RTSP publish of frame N -> frame N shown in Chromium (WHEP, live page), %dx%d %d fps, %s per case, %d cores\n",
		width, height, fps, measure, runtime.NumCPU())
	var p50s [2]float64
	for i, c := range []struct{ cam, what string }{{"bare", "no pipeline"}, {"overlays", "with overlays (demo pipeline)"}} {
		r := runCase(t, browser, base, "rtsp://"+srv.Addrs().RTSP+"/"+c.cam, c.cam, aus, measure)
		p50s[i] = r.percentile(50)
		fmt.Fprintf(&report, "  %-30s frames %4d  p50 %6.1f ms  p95 %6.1f ms  mean %6.1f ms  (unreadable %d)  page: jitterBufferTarget %v ms, result lag p95 %v ms, boxes exact/late/dropped %d/%d/%d\n",
			c.what, len(r.lat), r.percentile(50), r.percentile(95), r.mean(), r.unreadable,
			r.page["jitterBufferTarget"], r.page["lagP95Ms"], num(r.page["boxesExact"]), num(r.page["boxesLate"]), num(r.page["boxesDropped"]))
		if len(r.lat) < 10 {
			t.Errorf("%s: only %d frames read back from the page", c.what, len(r.lat))
		}
	}
	fmt.Fprintf(&report, "  overlays add %+.1f ms (p50)\n", p50s[1]-p50s[0])
	t.Logf("\n%s", &report)
	fmt.Print(report.String())
}

type result struct {
	lat        []float64
	unreadable int
	page       map[string]any
}

func (r result) percentile(p float64) float64 {
	if len(r.lat) == 0 {
		return 0
	}
	s := append([]float64(nil), r.lat...)
	sort.Float64s(s)
	i := int(p/100*float64(len(s))+0.5) - 1
	return s[max(0, min(len(s)-1, i))]
}

func (r result) mean() float64 {
	sum := 0.0
	for _, v := range r.lat {
		sum += v
	}
	return sum / float64(max(1, len(r.lat)))
}

func num(v any) int {
	f, _ := v.(float64)
	return int(f)
}

// runCase publishes the clip to rtspURL, opens the camera's live page, waits
// until it plays (and, with a pipeline, has set its playout delay from the
// results' lag), then collects the latency of every frame shown for d.
func runCase(t *testing.T, browser context.Context, base, rtspURL, cam string, aus [][][]byte, d time.Duration) result {
	t.Helper()
	pub := startPublisher(t, rtspURL, aus)
	defer pub.stop()

	tab, cancel := chromedp.NewContext(browser)
	defer cancel()
	if err := chromedp.Do(tab, chromedp.Navigate(base+"/cameras/"+cam)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, tab, `!!(window.__ifc && window.__ifc.framesDecoded > 25 && window.__ifc.playoutTargetMs !== null)`, 60*time.Second)
	expected, _ := chromedp.Run(tab, chromedp.Evaluate[bool](`window.__ifc.resultsExpected`))
	if expected {
		waitJS(t, tab, `window.__ifc.lagSamples >= 15 && window.__ifc.playoutTargetMs > 0`, 60*time.Second)
	}
	// Let the browser settle on its delay.
	start, _ := chromedp.Run(tab, chromedp.Evaluate[int](`window.__ifc.framesDecoded`))
	waitJS(t, tab, fmt.Sprintf(`window.__ifc.framesDecoded >= %d`, start+3*fps), 30*time.Second)
	if _, err := chromedp.Run(tab, chromedp.Evaluate[bool](frameNumberJS)); err != nil {
		t.Fatal(err)
	}
	var r result
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		time.Sleep(500 * time.Millisecond)
		seen, err := chromedp.Run(tab, chromedp.Evaluate[[][2]float64](`window.__probe.seen.splice(0)`))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range seen {
			if at, ok := pub.sentAt(int(s[0])); ok {
				r.lat = append(r.lat, s[1]-at)
			}
		}
	}
	r.unreadable, _ = chromedp.Run(tab, chromedp.Evaluate[int](`window.__probe.unreadable`))
	r.page, _ = chromedp.Run(tab, chromedp.Evaluate[map[string]any](`(({jitterBufferTarget, lagP95Ms, boxesExact, boxesLate, boxesDropped}) => ({jitterBufferTarget, lagP95Ms: lagP95Ms === null ? null : Math.round(lagP95Ms), boxesExact, boxesLate, boxesDropped}))(window.__ifc)`))
	return r
}

// publisher records the clip over RTSP in real time, frame after frame, and
// remembers when each numbered frame went out (ms since the epoch).
type publisher struct {
	mu   sync.Mutex
	sent map[int]float64
	done chan struct{}
	wg   sync.WaitGroup
	c    *gortsplib.Client
}

func startPublisher(t *testing.T, rawURL string, aus [][][]byte) *publisher {
	t.Helper()
	var sps, pps []byte
	for _, n := range aus[0] {
		switch n[0] & 0x1f {
		case 7:
			sps = n
		case 8:
			pps = n
		}
	}
	forma := &format.H264{PayloadTyp: 96, PacketizationMode: 1, SPS: sps, PPS: pps}
	desc := &description.Session{Medias: []*description.Media{{Type: description.MediaTypeVideo, Formats: []format.Format{forma}}}}
	c := &gortsplib.Client{ReadTimeout: 10 * time.Second}
	if err := c.StartRecording(rawURL, desc); err != nil {
		t.Fatalf("RTSP record %s: %v", rawURL, err)
	}
	enc := &rtph264.Encoder{PayloadType: 96, PacketizationMode: 1}
	if err := enc.Init(); err != nil {
		t.Fatal(err)
	}
	p := &publisher{sent: map[int]float64{}, done: make(chan struct{}), c: c}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(time.Second / fps)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-p.done:
				return
			case <-tick.C:
			}
			au := aus[i%len(aus)]
			pkts, err := enc.Encode(au)
			if err != nil {
				continue
			}
			at := float64(time.Now().UnixNano()) / 1e6
			for _, pkt := range pkts {
				pkt.Timestamp = uint32(i) * (90000 / fps)
				_ = c.WritePacketRTP(desc.Medias[0], pkt)
			}
			p.mu.Lock()
			p.sent[i%len(aus)] = at
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *publisher) sentAt(n int) (float64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	at, ok := p.sent[n]
	return at, ok
}

func (p *publisher) stop() {
	close(p.done)
	p.wg.Wait()
	p.c.Close()
}

// numberedClip encodes clipFrames numbered frames with x264 (baseline, no
// B-frames, a keyframe a second, parameter sets before every keyframe) and
// returns the access units in frame order, one per frame.
func numberedClip(t *testing.T) [][][]byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "numbered.h264")
	cmd := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "gray",
		"-s", fmt.Sprintf("%dx%d", width, height), "-r", strconv.Itoa(fps), "-i", "-",
		"-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-profile:v", "baseline", "-bf", "0",
		"-g", strconv.Itoa(fps), "-x264-params", "repeat-headers=1:aud=1", "-pix_fmt", "yuv420p", "-f", "h264", out)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, width*height)
	for n := 0; n < clipFrames; n++ {
		drawFrame(frame, n)
		if _, err := stdin.Write(frame); err != nil {
			t.Fatalf("ffmpeg: %v: %s", err, &stderr)
		}
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, &stderr)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var nalus mch264.AnnexB
	if err := nalus.Unmarshal(raw); err != nil {
		t.Fatal(err)
	}
	// The encoder starts every access unit with a delimiter (aud=1).
	var aus [][][]byte
	for _, n := range nalus {
		if len(n) == 0 {
			continue
		}
		if n[0]&0x1f == 9 {
			aus = append(aus, nil)
			continue
		}
		if len(aus) == 0 {
			aus = append(aus, nil)
		}
		aus[len(aus)-1] = append(aus[len(aus)-1], n)
	}
	if len(aus) != clipFrames {
		t.Fatalf("clip has %d access units, want %d", len(aus), clipFrames)
	}
	return aus
}

// drawFrame paints frame number n into a gray picture.
func drawFrame(pic []byte, n int) {
	for i := range pic {
		pic[i] = 96
	}
	for b := 0; b < bits; b++ {
		on := n>>b&1 == 1
		fill(pic, b*blockW, 0, blockW, bandH, on)
		fill(pic, b*blockW, bandH, blockW, bandH, !on)
	}
	// A person-sized block walking across, one pass every 4 s.
	x := (n * (width - 80) / (4 * fps)) % (width - 80)
	fill(pic, x, 240, 60, 160, true)
}

func fill(pic []byte, x0, y0, w, h int, white bool) {
	v := byte(16)
	if white {
		v = 235
	}
	for y := y0; y < y0+h; y++ {
		row := pic[y*width+x0 : y*width+x0+w]
		for i := range row {
			row[i] = v
		}
	}
}

func post(t *testing.T, url string, body any) {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		msg, _ := io.ReadAll(resp.Body)
		t.Fatalf("POST %s: %d %s", url, resp.StatusCode, msg)
	}
}

func waitJS(t *testing.T, ctx context.Context, expr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr)); err == nil && ok {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	state, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify(window.__ifc || null)`))
	t.Fatalf("timed out waiting for %s; window.__ifc = %s", expr, state)
}

