package rtsp

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"

	"github.com/imageflowcanvas/imageflow/ingest"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

func publishCams(ids ...string) map[string]CameraInfo {
	m := make(map[string]CameraInfo)
	for _, id := range ids {
		m[id] = CameraInfo{Source: SourcePublish, Enabled: true}
	}
	return m
}

func (e *env) waitOnline(t *testing.T, cam string, d time.Duration) {
	t.Helper()
	waitFor(t, d, cam+" online", func() bool {
		s := e.pubs.sink(cam)
		return s != nil && s.Status().State == ingest.StateOnline
	})
}

// Five cameras pushed by ffmpeg and read back by ffmpeg at the same time
// (the acceptance criterion): at least 95% of the frames, 1080p.
func TestServerFiveCamerasFFmpeg(t *testing.T) {
	ids := []string{"cam1", "cam2", "cam3", "cam4", "cam5"}
	e := newEnv(t, publishCams(ids...))
	for _, id := range ids {
		ffmpegPush(t, e.url(id))
	}
	for _, id := range ids {
		e.waitOnline(t, id, 15*time.Second)
	}
	const dur = 3 * time.Second
	type result struct {
		id           string
		frames, w, h int
		log          string
		err          error
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	res := make(chan result, len(ids))
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, w, h, log, err := ffmpegRead(ctx, e.url(id), dur)
			res <- result{id, f, w, h, log, err}
		}()
	}
	wg.Wait()
	close(res)
	want := int(dur.Seconds() * 30)
	for r := range res {
		if r.err != nil {
			t.Errorf("%s: ffmpeg read: %v\n%s", r.id, r.err, r.log)
			continue
		}
		if r.frames*100 < want*95 {
			t.Errorf("%s: %d frames, want >= 95%% of %d\n%s", r.id, r.frames, want, r.log)
		}
		if r.w != 1920 || r.h != 1080 {
			t.Errorf("%s: size %dx%d, want 1920x1080\n%s", r.id, r.w, r.h, r.log)
		}
		st := e.pubs.sink(r.id).Status()
		if st.Width != 1920 || st.Height != 1080 || st.Codec != "h264" {
			t.Errorf("%s: sink track %s %dx%d", r.id, st.Codec, st.Width, st.Height)
		}
		t.Logf("%s: %d frames %dx%d", r.id, r.frames, r.w, r.h)
	}
}

// rawRequest sends one RTSP request on a fresh TCP connection and returns
// the status line and headers of the answer.
func rawRequest(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var sb strings.Builder
	for {
		line, err := br.ReadString('\n')
		sb.WriteString(line)
		if err != nil || line == "\r\n" {
			break
		}
	}
	return sb.String()
}

func h264Desc() *description.Session {
	return &description.Session{Medias: []*description.Media{{
		Type:    description.MediaTypeVideo,
		Formats: []format.Format{&format.H264{PayloadTyp: 96, PacketizationMode: 1}},
	}}}
}

// recordClient starts a gortsplib publisher; it returns the RTSP status of a
// refusal.
// publishAUs records a small H264 clip to rawURL at 30 fps in the
// background, frame i with RTP timestamp i*3000+offset; the returned
// function stops it.
func publishAUs(t *testing.T, rawURL string, offset uint32) (stop func()) {
	t.Helper()
	aus := smallAUs(t)
	pc, pm, err := recordClient(t, rawURL)
	if err != nil {
		t.Fatal(err)
	}
	enc := &rtph264.Encoder{PayloadType: 96, PacketizationMode: 1}
	if err := enc.Init(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second / 30)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			pkts, _ := enc.Encode(aus[i%len(aus)])
			for _, p := range pkts {
				p.Timestamp = uint32(i)*3000 + offset
				_ = pc.WritePacketRTP(pm, p)
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func recordClient(t *testing.T, rawURL string) (*gortsplib.Client, *description.Media, error) {
	t.Helper()
	c := &gortsplib.Client{ReadTimeout: 5 * time.Second}
	desc := h264Desc()
	err := c.StartRecording(rawURL, desc)
	if err == nil {
		t.Cleanup(c.Close)
	}
	return c, desc.Medias[0], err
}

func TestServerBadInput(t *testing.T) {
	cams := publishCams("pub", "idle")
	cams["pulled"] = CameraInfo{Source: "rtsp://10.0.0.1/stream", Enabled: true}
	cams["off"] = CameraInfo{Source: SourcePublish, Enabled: false}
	e := newEnv(t, cams, func(s *Server) { s.DescribeTimeout = 1500 * time.Millisecond })

	ffmpegPush(t, e.url("pub"))
	e.waitOnline(t, "pub", 15*time.Second)
	r, err := playGo(t, e.url("pub"), nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "reader frames", func() bool { return r.aus.Load() > 10 })

	t.Run("second publisher", func(t *testing.T) {
		_, _, err := recordClient(t, e.url("pub"))
		if code := statusCode(err); code != base.StatusBadRequest {
			t.Fatalf("second publisher: %v (status %d), want 400", err, code)
		}
		// The running stream is untouched: the reader keeps getting frames.
		n := r.aus.Load()
		waitFor(t, 3*time.Second, "frames after refused publisher", func() bool { return r.aus.Load() > n+30 })
		if st := e.pubs.sink("pub").Status().State; st != ingest.StateOnline {
			t.Fatalf("pub state %s after refused publisher", st)
		}
	})
	t.Run("unknown camera", func(t *testing.T) {
		if _, err := playGo(t, e.url("nope"), nil); statusCode(err) != base.StatusNotFound {
			t.Fatalf("read unknown: %v, want 404", err)
		}
		if _, _, err := recordClient(t, e.url("nope")); statusCode(err) != base.StatusNotFound {
			t.Fatalf("publish unknown: %v, want 404", err)
		}
		if _, err := playGo(t, e.url("bad.id"), nil); statusCode(err) != base.StatusNotFound {
			t.Fatalf("read bad id: %v, want 404", err)
		}
	})
	t.Run("publish to pulled camera", func(t *testing.T) {
		if _, _, err := recordClient(t, e.url("pulled")); statusCode(err) != base.StatusBadRequest {
			t.Fatalf("publish to pulled: %v, want 400", err)
		}
	})
	t.Run("publish to disabled camera", func(t *testing.T) {
		if _, _, err := recordClient(t, e.url("off")); statusCode(err) != base.StatusForbidden {
			t.Fatalf("publish to disabled: %v, want 403", err)
		}
	})
	t.Run("no video yet", func(t *testing.T) {
		start := time.Now()
		if _, err := playGo(t, e.url("idle"), nil); statusCode(err) != base.StatusServiceUnavailable {
			t.Fatalf("read idle: %v, want 503", err)
		}
		if el := time.Since(start); el > 5*time.Second {
			t.Fatalf("503 took %v", el)
		}
	})
	t.Run("malformed SDP", func(t *testing.T) {
		body := "this is not\r\nan SDP\r\n"
		ans := rawRequest(t, e.srv.Addr(), fmt.Sprintf("ANNOUNCE rtsp://%s/idle RTSP/1.0\r\nCSeq: 1\r\n"+
			"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s", e.srv.Addr(), len(body), body))
		if !strings.HasPrefix(ans, "RTSP/1.0 400") {
			t.Fatalf("malformed SDP answered %q", ans)
		}
		// SDP that parses but carries no H264/H265.
		sdp := "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n" +
			"m=audio 0 RTP/AVP 0\r\na=control:trackID=0\r\n"
		ans = rawRequest(t, e.srv.Addr(), fmt.Sprintf("ANNOUNCE rtsp://%s/idle RTSP/1.0\r\nCSeq: 1\r\n"+
			"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s", e.srv.Addr(), len(sdp), sdp))
		if !strings.HasPrefix(ans, "RTSP/1.0 400") {
			t.Fatalf("audio-only SDP answered %q", ans)
		}
		// Garbage that is not RTSP at all: the connection is dropped, the
		// server keeps serving.
		c, err := net.Dial("tcp", e.srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte("\x00\xff garbage \r\n\r\n"))
		c.Close()
		n := r.aus.Load()
		waitFor(t, 3*time.Second, "frames after bad input", func() bool { return r.aus.Load() > n+10 })
	})
}

func TestServerAuth(t *testing.T) {
	authn := func(id, user, pass string, publish bool) bool {
		if publish {
			return user == "pub" && pass == "s3cret"
		}
		return user == "viewer" && pass == "v1ew"
	}
	e := newEnv(t, publishCams("cam1"), func(s *Server) { s.Authenticator = authn })
	host := e.srv.Addr()

	if _, _, err := recordClient(t, "rtsp://pub:wrong@"+host+"/cam1"); statusCode(err) != base.StatusUnauthorized {
		t.Fatalf("publish with wrong password: %v, want 401", err)
	}
	if _, _, err := recordClient(t, "rtsp://viewer:v1ew@"+host+"/cam1"); statusCode(err) != base.StatusUnauthorized {
		t.Fatalf("publish with reader credentials: %v, want 401", err)
	}
	ffmpegPush(t, "rtsp://pub:s3cret@"+host+"/cam1")
	e.waitOnline(t, "cam1", 15*time.Second)

	ans := rawRequest(t, host, fmt.Sprintf("DESCRIBE rtsp://%s/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n", host))
	if !strings.HasPrefix(ans, "RTSP/1.0 401") || !strings.Contains(ans, "WWW-Authenticate: Basic") {
		t.Fatalf("DESCRIBE without credentials answered %q", ans)
	}
	if _, err := playGo(t, "rtsp://"+host+"/cam1", nil); statusCode(err) != base.StatusUnauthorized {
		t.Fatalf("read without credentials: %v, want 401", err)
	}
	if _, err := playGo(t, "rtsp://viewer:nope@"+host+"/cam1", nil); statusCode(err) != base.StatusUnauthorized {
		t.Fatalf("read with wrong credentials: %v, want 401", err)
	}
	r, err := playGo(t, "rtsp://viewer:v1ew@"+host+"/cam1", nil)
	if err != nil {
		t.Fatalf("read with right credentials: %v", err)
	}
	waitFor(t, 5*time.Second, "authenticated reader frames", func() bool { return r.aus.Load() > 10 })
}

// Readers over UDP share the camera's stream with TCP readers, and the RTP
// timestamps of the source survive the relay.
func TestServerUDPReadersShareFeed(t *testing.T) {
	e := newEnv(t, publishCams("cam1"), func(s *Server) { s.UDPAddress = "127.0.0.1:0" })
	if e.srv.UDPAddr() == "" {
		t.Fatal("no UDP address")
	}
	// A Go publisher with known RTP timestamps: multiples of 3000 plus 7,
	// so a reader sees exactly these.
	defer publishAUs(t, e.url("cam1"), 7)()

	udp := gortsplib.TransportUDP
	tcp := gortsplib.TransportTCP
	r1, err := playGo(t, e.url("cam1"), &udp)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := playGo(t, e.url("cam1"), &tcp)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "udp and tcp readers", func() bool { return r1.aus.Load() > 20 && r2.aus.Load() > 20 })
	if ts := r1.lastTS.Load(); ts%3000 != 7 {
		t.Fatalf("reader RTP timestamp %d is not the publisher's", ts)
	}
	if n := e.hub.Readers("cam1"); n != 1 {
		t.Fatalf("hub readers = %d, want 1 shared feed", n)
	}
	// The feed ends shortly after its last reader leaves.
	r1.c.Close()
	if n := e.hub.Readers("cam1"); n != 1 {
		t.Fatalf("hub readers = %d with one RTSP reader left", n)
	}
	n := r2.aus.Load()
	waitFor(t, 3*time.Second, "remaining reader keeps playing", func() bool { return r2.aus.Load() > n+10 })
	r2.c.Close()
	waitFor(t, 5*time.Second, "feed closed after the last reader", func() bool { return e.hub.Readers("cam1") == 0 })
}

// Audio published beside the video reaches the bus as audio access units.
func TestServerPublishAudio(t *testing.T) {
	clip := filepath.Join(t.TempDir(), "av.mp4")
	out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-bf", "0", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-b:a", "64k", "-shortest", clip).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, out)
	}
	e := newEnv(t, publishCams("av"))
	var audio atomic.Pointer[busv1.AccessUnit]
	var n atomic.Int64
	sub, err := e.b.Conn().Subscribe(e.b.Subjects().Audio("av"), func(m *nats.Msg) {
		au := &busv1.AccessUnit{}
		if proto.Unmarshal(m.Data, au) == nil {
			audio.Store(au)
			n.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	cmd := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
		"-i", clip, "-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp", e.url("av"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	e.waitOnline(t, "av", 10*time.Second)
	waitFor(t, 5*time.Second, "audio access units", func() bool { return n.Load() > 20 })
	au := audio.Load()
	if au.Codec != busv1.Codec_CODEC_AAC || au.ClockRate != 48000 || au.Channels != 1 || len(au.Data) == 0 || au.Camera != "av" {
		t.Fatalf("audio AU codec=%v rate=%d ch=%d len=%d cam=%q", au.Codec, au.ClockRate, au.Channels, len(au.Data), au.Camera)
	}
}

// H265 goes through the same path: VPS/SPS/PPS in the SDP, readers decode.
func TestServerH265(t *testing.T) {
	clip := filepath.Join(t.TempDir(), "h265.mp4")
	out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-t", "2",
		"-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "keyint=30:bframes=0:log-level=error",
		"-pix_fmt", "yuv420p", clip).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, out)
	}
	e := newEnv(t, publishCams("hevc"))
	cmd := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
		"-i", clip, "-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp", e.url("hevc"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	e.waitOnline(t, "hevc", 10*time.Second)
	if st := e.pubs.sink("hevc").Status(); st.Codec != "h265" || st.Width != 640 || st.Height != 360 {
		t.Fatalf("sink track %s %dx%d", st.Codec, st.Width, st.Height)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	frames, w, h, log, err := ffmpegRead(ctx, e.url("hevc"), 2*time.Second)
	if err != nil || frames*100 < 60*95 || w != 640 || h != 360 || !strings.Contains(log, "Video: hevc") {
		t.Fatalf("read: err=%v frames=%d %dx%d\n%s", err, frames, w, h, log)
	}
}

// Readers get the camera's audio beside its video: ffprobe reading the
// camera back sees an AAC track with packets, and ffmpeg decodes the tone.
func TestServerRelaysAudio(t *testing.T) {
	clip := filepath.Join(t.TempDir(), "av.mp4")
	out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-bf", "0", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-b:a", "64k", "-shortest", clip).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, out)
	}
	e := newEnv(t, publishCams("av"))
	cmd := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
		"-i", clip, "-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp", e.url("av"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	e.waitOnline(t, "av", 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err = exec.CommandContext(ctx, "ffprobe", "-v", "error", "-rtsp_transport", "tcp",
		"-count_packets", "-read_intervals", "%+2", "-show_entries", "stream=codec_type,codec_name,sample_rate,nb_read_packets",
		"-of", "csv=p=0", e.url("av")).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe: %v: %s", err, out)
	}
	got := strings.TrimSpace(string(out))
	t.Logf("ffprobe over RTSP:\n%s", got)
	var video, audio bool
	for _, line := range strings.Split(got, "\n") {
		f := strings.Split(strings.TrimSpace(line), ",")
		switch {
		case len(f) >= 3 && f[0] == "h264" && f[1] == "video" && f[len(f)-1] != "0":
			video = true
		case len(f) >= 4 && f[0] == "aac" && f[1] == "audio" && f[2] == "48000" && f[3] != "0":
			audio = true
		}
	}
	if !video || !audio {
		t.Fatalf("want h264 video and 48 kHz aac audio with packets, got:\n%s", got)
	}
	// The audio decodes to the published tone, not silence.
	out, err = exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-rtsp_transport", "tcp", "-i", e.url("av"),
		"-t", "1.5", "-vn", "-af", "volumedetect", "-f", "null", "-").CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg audio read: %v: %s", err, out)
	}
	m := regexp.MustCompile(`mean_volume: (-?[0-9.]+) dB`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no volume measured:\n%s", out)
	}
	if vol, _ := strconv.ParseFloat(string(m[1]), 64); vol < -40 {
		t.Fatalf("audio read back is silent (mean %v dB)", vol)
	}
	t.Logf("audio read back: mean volume %s dB", m[1])
}
