package main

import (
	"bytes"
	"context"
	bin "encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	streamv1 "github.com/imageflowcanvas/imageflow/proto/streamv1"
)

// TestHostileSoak runs a hostile mix against the binary for a minute while a
// real camera is watched and a real batch runs: floods of wrong tokens,
// case-bent paths, header-only requests claiming huge bodies, decompression
// bombs (BMP, PNG) over REST and gRPC, abandoned WHEP offers, idle RTSP
// connections and hostile model paths, each at a bounded rate. The server
// must stay up, the viewer keep its frames, the batch complete with every
// result once, and RSS come back to within 20% of where it started.
func TestHostileSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("a minute long")
	}
	soak := 60 * time.Second
	if v := os.Getenv("IFC_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		soak = d
	}
	const good, hostile = "soak-good-token", "soak-hostile-token"
	dir := t.TempDir()
	cfg := fmt.Sprintf("api_tokens: [%s, %s]\n", good, hostile)
	if err := os.WriteFile(dir+"/config.yaml", []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, ln, logs := startBinary(t, dir+"/data", "--config", dir+"/config.yaml", "--demo=true")
	base := "http://" + ln.HTTP
	// Each hostile flood comes from a loopback address of its own, as
	// attackers come from other hosts: per-client limits and lockouts hit
	// them, not the viewer and the batch client on 127.0.0.1.
	attacker := func(n int) (*net.Dialer, *http.Client) {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(10+n))}, Timeout: 2 * time.Second}
		return d, &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 16}}
	}
	call := func(client *http.Client, method, path, token string, body io.Reader, ctype string) (int, []byte) {
		req, _ := http.NewRequest(method, base+path, body)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, []byte(err.Error())
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	api := func(method, path, token string, body io.Reader, ctype string) (int, []byte) {
		return call(http.DefaultClient, method, path, token, body, ctype)
	}

	// The demo camera comes online; a viewer reads it over RTSP.
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, b := api("GET", "/api/v1/cameras/demo", good, nil, "")
		if strings.Contains(string(b), `"state":"online"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("demo camera not online: %s\n%s", b, logs)
		}
		time.Sleep(200 * time.Millisecond)
	}
	viewer := startRTSPViewer(t, "rtsp://viewer:"+good+"@"+ln.RTSP+"/demo")

	// Warm up, then take the starting private memory: the most it reached
	// over 15 s of the demo camera's pipeline and the viewer (the server
	// takes about that long to reach its steady state). Leaks grow the
	// anonymous part; the file pages in RSS are clean copies of the binary
	// and its libraries, which the server gives back after start-up and
	// which fault in again as code is used, so they are logged, not judged.
	var rssStart int64
	for range 15 {
		time.Sleep(time.Second)
		rssStart = max(rssStart, processMemory(t, cmd.Process.Pid, "RssAnon"))
	}
	fileStart := processMemory(t, cmd.Process.Pid, "RssFile")

	ctx, cancel := context.WithTimeout(context.Background(), soak)
	defer cancel()
	var wg sync.WaitGroup
	var counts sync.Map // flood name → *atomic.Int64 of requests sent
	var bad sync.Map    // flood name → first unexpected outcome
	flood := func(name string, perSecond int, fn func() string) {
		n := &atomic.Int64{}
		counts.Store(name, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(time.Second / time.Duration(perSecond))
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				n.Add(1)
				if problem := fn(); problem != "" {
					bad.LoadOrStore(name, problem)
				}
			}
		}()
	}
	bmp, png := bombBMP(40000, 40000), bombPNG(100000, 100000)
	is4xx := func(code int) bool { return code >= 400 && code < 500 }

	{
		hostileDialer, hostileHTTP := attacker(0)
		evil := func(method, path, token string, body io.Reader, ctype string) (int, []byte) {
			return call(hostileHTTP, method, path, token, body, ctype)
		}
		_, _ = hostileDialer, evil
		flood("wrong token", 50, func() string {
			if code, b := evil("GET", "/api/v1/cameras", "wrong-token", nil, ""); code != 401 && code != 429 {
				return fmt.Sprintf("wrong token: %d %s", code, b)
			}
			return ""
		})
	}
	{
		hostileDialer, hostileHTTP := attacker(1)
		evil := func(method, path, token string, body io.Reader, ctype string) (int, []byte) {
			return call(hostileHTTP, method, path, token, body, ctype)
		}
		_, _ = hostileDialer, evil
		flood("case-bent paths", 20, func() string {
			for _, p := range []string{"/API/v1/cameras", "/Api/V1/Cameras", "/api/v1/cameras/"} {
				if code, b := evil("POST", p, "", strings.NewReader(`{"id":"bypass","source":"publish"}`), "application/json"); !is4xx(code) {
					return fmt.Sprintf("POST %s without a token: %d %s", p, code, b)
				}
			}
			return ""
		})
	}
	{
		hostileDialer, hostileHTTP := attacker(2)
		evil := func(method, path, token string, body io.Reader, ctype string) (int, []byte) {
			return call(hostileHTTP, method, path, token, body, ctype)
		}
		_, _ = hostileDialer, evil
		flood("huge content-length", 5, func() string {
			for _, p := range []string{"/api/v1/cameras", "/api/v1/health", "/api/v1/executions"} {
				c, err := hostileDialer.Dial("tcp", ln.HTTP)
				if err != nil {
					return ""
				}
				fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4000000000\r\n\r\n{", p)
				_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
				_, _ = c.Read(make([]byte, 512))
				c.Close()
			}
			return ""
		})
	}
	{
		hostileDialer, hostileHTTP := attacker(3)
		evil := func(method, path, token string, body io.Reader, ctype string) (int, []byte) {
			return call(hostileHTTP, method, path, token, body, ctype)
		}
		_, _ = hostileDialer, evil
		flood("bomb uploads", 1, func() string {
			body, ctype := multipartFiles("soak-thumb", map[string][]byte{"bomb.bmp": bmp})
			code, b := evil("POST", "/api/v1/executions", hostile, body, ctype)
			if code != 202 && !is4xx(code) {
				return fmt.Sprintf("bomb upload: %d %s", code, b)
			}
			return ""
		})
	}
	{
		hostileDialer, hostileHTTP := attacker(4)
		evil := func(method, path, token string, body io.Reader, ctype string) (int, []byte) {
			return call(hostileHTTP, method, path, token, body, ctype)
		}
		_, _ = hostileDialer, evil
		flood("abandoned WHEP offers", 5, func() string {
			offer, err := recvOnlyOffer()
			if err != nil {
				return ""
			}
			code, b := evil("POST", "/api/v1/cameras/demo/whep", hostile, strings.NewReader(offer), "application/sdp")
			if code != 201 && code != 429 && code != 503 {
				return fmt.Sprintf("WHEP offer: %d %s", code, b)
			}
			return ""
		})
	}
	{
		hostileDialer, hostileHTTP := attacker(5)
		evil := func(method, path, token string, body io.Reader, ctype string) (int, []byte) {
			return call(hostileHTTP, method, path, token, body, ctype)
		}
		_, _ = hostileDialer, evil
		flood("gRPC bombs", 2, func() string {
			conn, err := grpc.NewClient(ln.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
					return hostileDialer.DialContext(ctx, "tcp", addr)
				}))
			if err != nil {
				return ""
			}
			defer conn.Close()
			cctx, ccancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+hostile), 5*time.Second)
			defer ccancel()
			stream, err := streamv1.NewStreamServiceClient(conn).Process(cctx)
			if err != nil {
				return ""
			}
			_ = stream.Send(&streamv1.StreamRequest{Pipeline: "soak-thumb", Frame: &streamv1.StreamFrame{
				Sequence: 1, Format: busv1.PixelFormat_PIXEL_FORMAT_PNG, Data: png}})
			_ = stream.CloseSend()
			if res, err := stream.Recv(); err == nil && res.GetError() == "" {
				return "a 100000x100000 PNG was processed"
			}
			return ""
		})
	}
	{
		hostileDialer, hostileHTTP := attacker(6)
		evil := func(method, path, token string, body io.Reader, ctype string) (int, []byte) {
			return call(hostileHTTP, method, path, token, body, ctype)
		}
		_, _ = hostileDialer, evil
		flood("idle RTSP", 2, func() string {
			c, err := hostileDialer.Dial("tcp", ln.RTSP)
			if err != nil {
				return ""
			}
			// Left open and silent; the server's timeouts must close it.
			go func() {
				<-ctx.Done()
				c.Close()
			}()
			return ""
		})
	}
	{
		hostileDialer, hostileHTTP := attacker(7)
		evil := func(method, path, token string, body io.Reader, ctype string) (int, []byte) {
			return call(hostileHTTP, method, path, token, body, ctype)
		}
		_, _ = hostileDialer, evil
		flood("hostile model paths", 2, func() string {
			for _, params := range []string{`{"backend":"onnx","model":"/dev/zero"}`, `{"backend":"onnx","model":"../../../../dev/zero"}`, `{"backend":"onnx","model":"yolo.onnx","classes":"/etc/shadow"}`} {
				p := `{"id":"evil","steps":[{"id":"d","processor":"detect","params":` + params + `}]}`
				if code, b := evil("POST", "/api/v1/pipelines", hostile, strings.NewReader(p), "application/json"); code != 400 && code != 429 {
					return fmt.Sprintf("pipeline %s: %d %s", params, code, b)
				}
			}
			return ""
		})
	}
	// Meanwhile a real batch: 20 images through a stored pipeline.
	if code, b := api("POST", "/api/v1/pipelines", good, strings.NewReader(
		`{"id":"soak-thumb","steps":[{"id":"small","processor":"resize","params":{"width":160}}]}`), "application/json"); code != 201 {
		t.Fatalf("pipeline: %d %s", code, b)
	}
	img, err := os.ReadFile("/usr/share/doc/opencv-doc/examples/data/messi5.jpg")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for i := range 20 {
		files[fmt.Sprintf("img%02d.jpg", i)] = img
	}
	body, ctype := multipartFiles("soak-thumb", files)
	code, b := api("POST", "/api/v1/executions", good, body, ctype)
	if code != 202 {
		t.Fatalf("batch upload: %d %s", code, b)
	}
	var exec struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(b, &exec)

	<-ctx.Done()
	wg.Wait()

	if cmd.ProcessState != nil || cmd.Process.Signal(syscall.Signal(0)) != nil {
		t.Fatalf("the server died during the soak:\n%s", tail(logs.String(), 4000))
	}
	counts.Range(func(k, v any) bool {
		t.Logf("flood %-22s %6d requests", k, v.(*atomic.Int64).Load())
		return true
	})
	bad.Range(func(k, v any) bool {
		t.Errorf("flood %s: %s", k, v)
		return true
	})

	// The batch finished with every result once.
	var rec struct {
		State string `json:"state"`
		Total int    `json:"total"`
		Done  int    `json:"done"`
		Files []struct {
			Name  string `json:"name"`
			State string `json:"state"`
		} `json:"files"`
	}
	deadline = time.Now().Add(60 * time.Second)
	for {
		_, b := api("GET", "/api/v1/executions/"+exec.ID, good, nil, "")
		_ = json.Unmarshal(b, &rec)
		if rec.State == "done" || rec.State == "failed" || rec.State == "cancelled" || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	seen := map[string]int{}
	for _, f := range rec.Files {
		if f.State == "done" {
			seen[f.Name]++
		}
	}
	if rec.Total != 20 || rec.Done != 20 || len(seen) != 20 {
		t.Errorf("batch: state %s, %d/%d done, %d distinct results", rec.State, rec.Done, rec.Total, len(seen))
	}
	for name, n := range seen {
		if n != 1 {
			t.Errorf("batch: %s has %d results", name, n)
		}
	}

	// The viewer kept its frames all along.
	frames, longestGap := viewer.stats()
	t.Logf("viewer: %d frames, longest gap %v", frames, longestGap)
	if frames < int(soak.Seconds())*5 || longestGap > 3*time.Second {
		t.Errorf("viewer starved: %d frames in %v, longest gap %v", frames, soak, longestGap)
	}

	// Memory returns to where it started once the floods stop: memtrim
	// gives back what stands above the low point every 30 s at most
	// (checked every 10 s).
	var rssEnd int64
	deadline = time.Now().Add(60 * time.Second)
	for {
		rssEnd = processMemory(t, cmd.Process.Pid, "RssAnon")
		if float64(rssEnd) <= 1.2*float64(rssStart) || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	fileEnd := processMemory(t, cmd.Process.Pid, "RssFile")
	t.Logf("RssAnon: %d MiB at the start, %d MiB after the soak (RssFile %d → %d MiB)", rssStart>>20, rssEnd>>20, fileStart>>20, fileEnd>>20)
	if float64(rssEnd) > 1.2*float64(rssStart) {
		smaps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", cmd.Process.Pid))
		t.Errorf("RssAnon grew from %d to %d MiB and stayed; largest anonymous mappings:\n%s", rssStart>>20, rssEnd>>20, largestAnon(smaps, 8))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// largestAnon lists the n mappings of an smaps file holding the most
// anonymous memory.
func largestAnon(smaps []byte, n int) string {
	type mapping struct {
		header string
		kb     int64
	}
	var all []mapping
	for _, line := range strings.Split(string(smaps), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":"):
			all = append(all, mapping{header: line})
		case len(f) >= 2 && f[0] == "Anonymous:" && len(all) > 0:
			all[len(all)-1].kb, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].kb > all[j].kb })
	var b strings.Builder
	for i := 0; i < n && i < len(all); i++ {
		fmt.Fprintf(&b, "%8d kB %s\n", all[i].kb, all[i].header)
	}
	return b.String()
}

// processMemory reads one of a process's memory figures (VmRSS, RssAnon,
// RssFile) from /proc, in bytes.
func processMemory(t *testing.T, pid int, key string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("server gone: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == key+":" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", key, pid)
	return 0
}

// rtspViewer counts the access units a real RTSP client receives and the
// longest wait between two.
type rtspViewer struct {
	mu     sync.Mutex
	frames int
	last   time.Time
	gap    time.Duration
}

func (v *rtspViewer) stats() (int, time.Duration) {
	v.mu.Lock()
	defer v.mu.Unlock()
	gap := v.gap
	if d := time.Since(v.last); d > gap {
		gap = d
	}
	return v.frames, gap
}

func startRTSPViewer(t *testing.T, rawURL string) *rtspViewer {
	t.Helper()
	u, err := base.ParseURL(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	tcp := gortsplib.TransportTCP
	c := &gortsplib.Client{Transport: &tcp}
	if err := c.Start(u.Scheme, u.Host); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	desc, _, err := c.Describe(u)
	if err != nil {
		t.Fatalf("describe: %v", err)
	}
	var video *description.Media
	for _, m := range desc.Medias {
		if m.Type == description.MediaTypeVideo {
			video = m
		}
	}
	if video == nil {
		t.Fatal("no video track")
	}
	if _, err := c.Setup(desc.BaseURL, video, 0, 0); err != nil {
		t.Fatalf("setup: %v", err)
	}
	v := &rtspViewer{last: time.Now()}
	c.OnPacketRTP(video, video.Formats[0], func(p *rtp.Packet) {
		if !p.Marker {
			return
		}
		v.mu.Lock()
		now := time.Now()
		if d := now.Sub(v.last); d > v.gap {
			v.gap = d
		}
		v.last = now
		v.frames++
		v.mu.Unlock()
	})
	if _, err := c.Play(nil); err != nil {
		t.Fatalf("play: %v", err)
	}
	return v
}

// recvOnlyOffer makes a real WebRTC offer for video and forgets the peer,
// as an abandoned viewer does.
func recvOnlyOffer() (string, error) {
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return "", err
	}
	defer pc.Close()
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		return "", err
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return "", err
	}
	return offer.SDP, nil
}

func multipartFiles(pipeline string, files map[string][]byte) (*bytes.Buffer, string) {
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	_ = w.WriteField("pipeline", pipeline)
	for name, data := range files {
		fw, _ := w.CreateFormFile("files", name)
		_, _ = fw.Write(data)
	}
	_ = w.Close()
	return &buf, w.FormDataContentType()
}

// bombBMP is a 70-byte BMP whose header claims w×h 24-bit pixels.
func bombBMP(w, h int32) []byte {
	b := make([]byte, 70)
	copy(b, "BM")
	bin.LittleEndian.PutUint32(b[2:], 70)
	bin.LittleEndian.PutUint32(b[10:], 54)
	bin.LittleEndian.PutUint32(b[14:], 40)
	bin.LittleEndian.PutUint32(b[18:], uint32(w))
	bin.LittleEndian.PutUint32(b[22:], uint32(h))
	bin.LittleEndian.PutUint16(b[26:], 1)
	bin.LittleEndian.PutUint16(b[28:], 24)
	return b
}

// bombPNG is a PNG signature and IHDR claiming w×h RGB pixels, and no data.
func bombPNG(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	bin.BigEndian.PutUint32(ihdr[0:], w)
	bin.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 2
	_ = bin.Write(&b, bin.BigEndian, uint32(len(ihdr)))
	chunk := append([]byte("IHDR"), ihdr...)
	b.Write(chunk)
	_ = bin.Write(&b, bin.BigEndian, crc32.ChecksumIEEE(chunk))
	b.Write([]byte{0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xae, 0x42, 0x60, 0x82})
	return b.Bytes()
}
