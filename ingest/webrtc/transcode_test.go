package webrtc

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/jpeg"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/imageflowcanvas/imageflow/ingest"
	"github.com/imageflowcanvas/imageflow/media/h26x"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// feedJPEG publishes JPEG frames for cam at 15 fps, as a USB camera's MJPEG
// or the gRPC Publish path puts them on the bus, until ctx ends.
func (e *env) feedJPEG(ctx context.Context, cam string, wg *sync.WaitGroup) {
	sink := ingest.NewBusSink(e.bus.Conn(), e.bus.Subjects(), cam, nil)
	sink.SetTrack(busv1.Codec_CODEC_MJPEG, 320, 240)
	img := image.NewRGBA(image.Rect(0, 0, 320, 240))
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second / 15)
		defer tick.Stop()
		ts := uint32(4_000_000_123)
		var buf bytes.Buffer
		for i := 0; ; i++ {
			for y := 0; y < 240; y++ {
				for x := 0; x < 320; x++ {
					img.Set(x, y, color.RGBA{uint8(x + i*4), uint8(y), uint8(i * 8), 255})
				}
			}
			buf.Reset()
			_ = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 80})
			au := &busv1.AccessUnit{Codec: busv1.Codec_CODEC_MJPEG, RtpTimestamp: ts, ClockRate: 90000,
				Keyframe: true, Data: append([]byte(nil), buf.Bytes()...), Pts: int64(i) * int64(time.Second) / 15}
			e.mu.Lock()
			e.ts[ts] = true
			e.mu.Unlock()
			_ = sink.WriteAccessUnit(au)
			ts += 6000
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}

// An MJPEG camera (USB, or JPEG frames over gRPC Publish) is watched over
// WHEP as H.264: two viewers share one transcode, both get the camera's RTP
// timestamps, and the transcode stops when the last one leaves.
func TestWHEPTranscodesMJPEG(t *testing.T) {
	e := newEnv(t, EngineConfig{TranscodeWidth: 160})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	e.feedJPEG(ctx, "usb", &wg)
	t.Cleanup(func() { cancel(); wg.Wait() })

	if st := e.engine.Transcodes(); st.VideoRunning != 0 {
		t.Fatalf("transcodes before any viewer: %+v", st)
	}
	var viewers []*pionViewer
	var sessions []string
	for range 2 {
		v, offer := newPionViewer(t, e, webrtc.MimeTypeH264)
		defer v.pc.Close()
		code, ans, loc := whepPost(t, e.srv.URL+"/whep/usb", offer)
		if code != http.StatusCreated || !strings.Contains(ans, "H264") {
			t.Fatalf("POST: %d %s", code, ans)
		}
		if err := v.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: ans}); err != nil {
			t.Fatal(err)
		}
		viewers = append(viewers, v)
		sessions = append(sessions, loc)
	}
	waitFor(t, 20*time.Second, "30 H.264 access units on each viewer", func() bool {
		return viewers[0].markers.Load() >= 30 && viewers[1].markers.Load() >= 30
	})
	for i, v := range viewers {
		if n := v.badTS.Load(); n != 0 {
			t.Fatalf("viewer %d: %d packets with an RTP timestamp the camera never sent", i, n)
		}
		if got := v.pc.GetTransceivers()[0].Receiver().Track().Codec().MimeType; got != webrtc.MimeTypeH264 {
			t.Fatalf("viewer %d codec %s", i, got)
		}
	}
	st := e.engine.Transcodes()
	if st.VideoRunning != 1 || st.VideoFrames == 0 || st.VideoBusy <= 0 {
		t.Fatalf("two viewers, one camera: %+v", st)
	}
	t.Logf("transcode: %d pictures, %v busy", st.VideoFrames, st.VideoBusy)
	doReq(t, http.MethodDelete, e.srv.URL+sessions[0], "", "")
	if n := e.engine.Transcodes().VideoRunning; n != 1 {
		t.Fatalf("transcode stopped with a viewer left: %d", n)
	}
	doReq(t, http.MethodDelete, e.srv.URL+sessions[1], "", "")
	waitFor(t, 5*time.Second, "transcode stopped", func() bool { return e.engine.Transcodes().VideoRunning == 0 })
	// A browser without H.264 cannot be served an MJPEG camera.
	v, offer := newPionViewer(t, e, webrtc.MimeTypeVP8)
	defer v.pc.Close()
	if code, body, _ := whepPost(t, e.srv.URL+"/whep/usb", offer); code != http.StatusBadRequest || !strings.Contains(body, "H264") {
		t.Fatalf("VP8-only viewer of an MJPEG camera: %d %s", code, body)
	}
	if n := e.engine.Transcodes().VideoRunning; n != 0 {
		t.Fatalf("refused viewer left a transcode running: %d", n)
	}
}

// h265Clip encodes a 320x240 H.265 clip (no B-frames, an IRAP every 15
// pictures) and returns its access units as NALU lists.
func h265Clip(t *testing.T) [][][]byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "clip.hevc")
	out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
		"-frames:v", "60", "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=none:bframes=0:keyint=15:aud=1:repeat-headers=1",
		p).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, out)
	}
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var aus [][][]byte
	for _, n := range h26x.SplitAnnexB(nil, raw) {
		if len(n) < 2 {
			continue
		}
		if (n[0]>>1)&0x3f == 35 { // access unit delimiter starts the next AU
			aus = append(aus, nil)
			continue
		}
		if len(aus) > 0 {
			aus[len(aus)-1] = append(aus[len(aus)-1], n)
		}
	}
	return aus
}

// feedH265 publishes an H.265 clip for cam at 30 fps until ctx ends.
func (e *env) feedH265(ctx context.Context, cam string, aus [][][]byte, wg *sync.WaitGroup) {
	sink := ingest.NewBusSink(e.bus.Conn(), e.bus.Subjects(), cam, nil)
	sink.SetTrack(busv1.Codec_CODEC_H265, 320, 240)
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second / 30)
		defer tick.Stop()
		ts := uint32(4_000_000_123)
		for i := 0; ; i++ {
			nalus := aus[i%len(aus)]
			key := false
			for _, n := range nalus {
				if t := (n[0] >> 1) & 0x3f; t >= 16 && t <= 21 {
					key = true
				}
			}
			e.mu.Lock()
			e.ts[ts] = true
			e.mu.Unlock()
			_ = sink.WriteAccessUnit(&busv1.AccessUnit{Codec: busv1.Codec_CODEC_H265, RtpTimestamp: ts, ClockRate: 90000,
				Keyframe: key, Nalus: nalus, Pts: int64(i) * int64(time.Second) / 30})
			ts += 3000
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}

// An H.265 camera passes through to a viewer that offers H.265 (no
// transcode) and is transcoded for one that offers only H.264; both get the
// camera's RTP timestamps.
func TestWHEPH265PassThroughOrTranscode(t *testing.T) {
	e := newEnv(t, EngineConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	e.feedH265(ctx, "hevc", h265Clip(t), &wg)
	t.Cleanup(func() { cancel(); wg.Wait() })

	for _, c := range []struct {
		offer, want string
		transcodes  int
	}{{webrtc.MimeTypeH265, webrtc.MimeTypeH265, 0}, {webrtc.MimeTypeH264, webrtc.MimeTypeH264, 1}} {
		v, offer := newPionViewer(t, e, c.offer)
		code, ans, loc := whepPost(t, e.srv.URL+"/whep/hevc", offer)
		if code != http.StatusCreated {
			t.Fatalf("%s viewer: POST %d %s", c.offer, code, ans)
		}
		if err := v.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: ans}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 20*time.Second, c.offer+" viewer: 30 access units", func() bool { return v.markers.Load() >= 30 })
		if n := v.badTS.Load(); n != 0 {
			t.Fatalf("%s viewer: %d packets with an RTP timestamp the camera never sent", c.offer, n)
		}
		if got := v.pc.GetTransceivers()[0].Receiver().Track().Codec().MimeType; got != c.want {
			t.Fatalf("%s viewer got %s", c.offer, got)
		}
		if n := e.engine.Transcodes().VideoRunning; n != c.transcodes {
			t.Fatalf("%s viewer: %d transcodes running, want %d", c.offer, n, c.transcodes)
		}
		doReq(t, http.MethodDelete, e.srv.URL+loc, "", "")
		_ = v.pc.Close()
	}
	waitFor(t, 5*time.Second, "transcode stopped", func() bool { return e.engine.Transcodes().VideoRunning == 0 })
}
