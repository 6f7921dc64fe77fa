package webrtc

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/jpeg"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/imageflowcanvas/imageflow/ingest"
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
