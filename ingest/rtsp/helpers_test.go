package rtsp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/auth"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/rtp"
	"go.uber.org/goleak"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/bus/hub"
	"github.com/imageflowcanvas/imageflow/ingest"
	"github.com/imageflowcanvas/imageflow/media/h26x/h26xtest"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

var testDir string

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "rtsp-test-")
	if err != nil {
		panic(err)
	}
	testDir = d
	code := func() int {
		defer os.RemoveAll(d)
		return m.Run()
	}()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

func quietLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// clips are generated once per test binary.
var (
	clipOnce sync.Once
	clipPath string
	clipErr  error
)

// clip1080 is a 4 s 1080p30 H264 mp4 (GOP 1 s, no B-frames).
func clip1080(t testing.TB) string {
	t.Helper()
	clipOnce.Do(func() {
		clipPath = filepath.Join(testDir, "clip.mp4")
		out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
			"-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30", "-t", "4",
			"-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "30", "-bf", "0",
			"-pix_fmt", "yuv420p", clipPath).CombinedOutput()
		if err != nil {
			clipErr = fmt.Errorf("ffmpeg clip: %v: %s", err, out)
		}
	})
	if clipErr != nil {
		t.Fatal(clipErr)
	}
	return clipPath
}

// smallAUs is a 2 s 640x360 H264 clip split into access units (NALUs
// without start codes), for upstream servers written in Go.
func smallAUs(t testing.TB) [][][]byte {
	t.Helper()
	return h26xtest.AccessUnits(t, h26xtest.Small)
}

// env is a bus, a hub and an RTSP server with a map of cameras.
type env struct {
	b    *bus.Bus
	hub  *hub.Hub
	srv  *Server
	cams *fakeCameras
	pubs *fakePublishers
}

type fakeCameras struct {
	mu sync.Mutex
	m  map[string]CameraInfo
}

func (f *fakeCameras) LookupCamera(id string) (CameraInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.m[id]
	if !ok {
		return CameraInfo{}, fmt.Errorf("%w: %s", ErrCameraNotFound, id)
	}
	return c, nil
}

// fakePublishers lets one publisher hold a camera, with a BusSink each.
type fakePublishers struct {
	b     *bus.Bus
	hub   *hub.Hub
	mu    sync.Mutex
	held  map[string]bool
	sinks map[string]*ingest.BusSink
}

func (p *fakePublishers) get(id string) (ingest.Sink, func(), error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held[id] {
		return nil, nil, errors.New("camera busy")
	}
	p.held[id] = true
	s := p.sinks[id]
	if s == nil {
		s = ingest.NewBusSink(p.b.Conn(), p.b.Subjects(), id, nil)
		p.sinks[id] = s
	}
	// Ingested here while held, as the server's camera supervisor does.
	release := p.hub.Keep(id)
	return s, func() {
		release()
		p.mu.Lock()
		defer p.mu.Unlock()
		delete(p.held, id)
	}, nil
}

func (p *fakePublishers) sink(id string) *ingest.BusSink {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sinks[id]
}

func startBus(t testing.TB) *bus.Bus {
	t.Helper()
	b := &bus.Bus{Config: bus.Config{DataDir: t.TempDir(), Logger: quietLogger()}}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func newEnv(t testing.TB, cams map[string]CameraInfo, opts ...func(*Server)) *env {
	t.Helper()
	b := startBus(t)
	h := hub.New(b.Conn(), b.Subjects())
	t.Cleanup(h.Close)
	e := &env{
		b:    b,
		hub:  h,
		cams: &fakeCameras{m: cams},
		pubs: &fakePublishers{b: b, hub: h, held: map[string]bool{}, sinks: map[string]*ingest.BusSink{}},
	}
	e.srv = &Server{
		Address:    "127.0.0.1:0",
		Cameras:    e.cams,
		Hub:        h,
		Publishers: e.pubs.get,
		Logger:     quietLogger(),
	}
	for _, o := range opts {
		o(e.srv)
	}
	if err := e.srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.srv.Close)
	return e
}

func (e *env) url(cam string) string { return "rtsp://" + e.srv.Addr() + "/" + cam }

// ffmpegPush publishes the 1080p clip in a loop until the test ends.
func ffmpegPush(t testing.TB, url string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
		"-i", clip1080(t), "-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp", url)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("ffmpeg push %s: %s", url, stderr.String())
		}
	})
	return cmd
}

var (
	frameRe = regexp.MustCompile(`frame=\s*(\d+)`)
	sizeRe  = regexp.MustCompile(`Video: (?:h264|hevc)[^\n]*?, (\d+)x(\d+)`)
)

// ffmpegRead reads url for dur with stream copy and returns the frames and
// the picture size ffmpeg reports.
func ffmpegRead(ctx context.Context, url string, dur time.Duration) (frames, w, h int, log string, err error) {
	cmd := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-nostdin", "-rtsp_transport", "tcp",
		"-i", url, "-t", strconv.FormatFloat(dur.Seconds(), 'f', 1, 64), "-c", "copy", "-f", "null", "-")
	out, err := cmd.CombinedOutput()
	log = string(out)
	if m := frameRe.FindAllStringSubmatch(log, -1); len(m) > 0 {
		frames, _ = strconv.Atoi(m[len(m)-1][1])
	}
	if m := sizeRe.FindStringSubmatch(log); m != nil {
		w, _ = strconv.Atoi(m[1])
		h, _ = strconv.Atoi(m[2])
	}
	return frames, w, h, log, err
}

// statusCode extracts the RTSP status of a gortsplib client error.
func statusCode(err error) base.StatusCode {
	var e liberrors.ErrClientBadStatusCode
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

// goReader plays url with a gortsplib client and counts H264 access units.
type goReader struct {
	c        *gortsplib.Client
	aus      atomic.Int64
	lastTS   atomic.Uint32
	firstErr error
}

func playGo(t testing.TB, rawURL string, tr *gortsplib.Transport) (*goReader, error) {
	t.Helper()
	u, err := base.ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	r := &goReader{c: &gortsplib.Client{Scheme: u.Scheme, Host: u.Host, Transport: tr, ReadTimeout: 5 * time.Second}}
	if err := r.c.Start2(); err != nil {
		return nil, err
	}
	desc, _, err := r.c.Describe(u)
	if err != nil {
		r.c.Close()
		return nil, err
	}
	var forma *format.H264
	medi := desc.FindFormat(&forma)
	if medi == nil {
		r.c.Close()
		return nil, errors.New("no h264 in SDP")
	}
	if forma.SPS == nil || forma.PPS == nil {
		r.c.Close()
		return nil, errors.New("SDP without sprop-parameter-sets")
	}
	dec, err := forma.CreateDecoder()
	if err != nil {
		r.c.Close()
		return nil, err
	}
	if _, err := r.c.Setup(desc.BaseURL, medi, 0, 0); err != nil {
		r.c.Close()
		return nil, err
	}
	r.c.OnPacketRTP(medi, forma, func(pkt *rtp.Packet) {
		if _, err := dec.Decode(pkt); err == nil {
			r.lastTS.Store(pkt.Timestamp)
			r.aus.Add(1)
		}
	})
	if _, err := r.c.Play(nil); err != nil {
		r.c.Close()
		return nil, err
	}
	t.Cleanup(r.c.Close)
	return r, nil
}

// waitFor polls cond every 10 ms until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timeout after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// upstream is a plain gortsplib server acting as an IP camera: it loops the
// small clip at 30 fps, optionally behind credentials.
type upstream struct {
	addr     string
	udpPort  int
	user     string
	pass     string
	methods  []auth.VerifyMethod
	srv      *gortsplib.Server
	stream   *gortsplib.ServerStream
	ready    atomic.Pointer[gortsplib.ServerStream]
	stop     chan struct{}
	paused   atomic.Bool
	wg       sync.WaitGroup
	describe atomic.Int64
}

func (u *upstream) start(t testing.TB, aus [][][]byte) {
	t.Helper()
	u.srv = &gortsplib.Server{Handler: u, RTSPAddress: u.addr}
	if u.udpPort != 0 {
		u.srv.UDPRTPAddress = fmt.Sprintf("127.0.0.1:%d", u.udpPort)
		u.srv.UDPRTCPAddress = fmt.Sprintf("127.0.0.1:%d", u.udpPort+1)
	}
	u.srv.AuthMethods = u.methods
	var err error
	for range 50 {
		// The port of the previous instance may linger for a moment.
		if err = u.srv.Start(); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	forma := &format.H264{PayloadTyp: 96, PacketizationMode: 1}
	for _, n := range aus[0] {
		switch h264.NALUType(n[0] & 0x1f) {
		case h264.NALUTypeSPS:
			forma.SPS = n
		case h264.NALUTypePPS:
			forma.PPS = n
		}
	}
	u.stream = &gortsplib.ServerStream{Server: u.srv, Desc: &description.Session{
		Medias: []*description.Media{{Type: description.MediaTypeVideo, Formats: []format.Format{forma}}},
	}}
	if err := u.stream.Initialize(); err != nil {
		t.Fatal(err)
	}
	enc := &rtph264.Encoder{PayloadType: 96, PacketizationMode: 1}
	if err := enc.Init(); err != nil {
		t.Fatal(err)
	}
	u.ready.Store(u.stream)
	u.stop = make(chan struct{})
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		tick := time.NewTicker(time.Second / 30)
		defer tick.Stop()
		ts := uint32(12345)
		for i := 0; ; i++ {
			select {
			case <-u.stop:
				return
			case <-tick.C:
			}
			ts += 3000
			if u.paused.Load() {
				continue
			}
			pkts, err := enc.Encode(aus[i%len(aus)])
			if err != nil {
				continue
			}
			for _, p := range pkts {
				p.Timestamp = ts
				_ = u.stream.WritePacketRTP(u.stream.Desc.Medias[0], p)
			}
		}
	}()
}

func (u *upstream) close() {
	if u.srv == nil {
		return
	}
	close(u.stop)
	u.wg.Wait()
	u.ready.Store(nil)
	u.stream.Close()
	u.srv.Close()
	u.srv = nil
}

func (u *upstream) check(ctx *gortsplib.ServerConn, req *base.Request) bool {
	return u.user == "" || ctx.VerifyCredentials(req, u.user, u.pass)
}

// OnDescribe implements gortsplib.ServerHandlerOnDescribe.
func (u *upstream) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	u.describe.Add(1)
	if !u.check(ctx.Conn, ctx.Request) {
		return &base.Response{StatusCode: base.StatusUnauthorized}, nil, liberrors.ErrServerAuth{}
	}
	return u.streamRes()
}

// streamRes answers 404 until the stream exists (a request may arrive
// between Server.Start and the stream's creation).
func (u *upstream) streamRes() (*base.Response, *gortsplib.ServerStream, error) {
	st := u.ready.Load()
	if st == nil {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, st, nil
}

// OnSetup implements gortsplib.ServerHandlerOnSetup.
func (u *upstream) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if !u.check(ctx.Conn, ctx.Request) {
		return &base.Response{StatusCode: base.StatusUnauthorized}, nil, liberrors.ErrServerAuth{}
	}
	return u.streamRes()
}

// OnPlay implements gortsplib.ServerHandlerOnPlay.
func (u *upstream) OnPlay(*gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// stateLog records the states a BusSink reports.
type stateLog struct {
	mu     sync.Mutex
	states []string
	errs   []string
}

func (l *stateLog) onChange(st *busv1.CameraStatus) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.states = append(l.states, st.State)
	l.errs = append(l.errs, st.LastError)
}

func (l *stateLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.states)
}

func (l *stateLog) since(i int) ([]string, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if i > len(l.states) {
		i = len(l.states)
	}
	return append([]string(nil), l.states[i:]...), append([]string(nil), l.errs[i:]...)
}
