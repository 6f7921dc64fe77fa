package webrtc

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/imageflowcanvas/imageflow/ingest"
	"github.com/imageflowcanvas/imageflow/internal/testkit"
	"github.com/imageflowcanvas/imageflow/media/h26x"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// feedAV publishes the clip at 30 fps for cam through one BusSink, with an
// Opus frame every 20 ms when withAudio, until ctx ends.
func (e *env) feedAV(ctx context.Context, cam string, clip [][][]byte, withAudio bool, wg *sync.WaitGroup) {
	sink := ingest.NewBusSink(e.bus.Conn(), e.bus.Subjects(), cam, nil)
	release := e.hub.Keep(cam)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer release()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		start := time.Now()
		video, audio := 0, 0
		for {
			elapsed := time.Since(start)
			for ; time.Duration(video)*time.Second/30 <= elapsed; video++ {
				nalus := clip[video%len(clip)]
				_ = sink.WriteAccessUnit(&busv1.AccessUnit{Codec: busv1.Codec_CODEC_H264, ClockRate: 90000,
					RtpTimestamp: uint32(video * 3000), Keyframe: h26x.H264HasIDR(nalus), Nalus: nalus})
			}
			for ; withAudio && time.Duration(audio)*20*time.Millisecond <= elapsed; audio++ {
				// An Opus silence frame (RFC 6716 TOC 0xf8: CELT 20 ms).
				_ = sink.WriteAccessUnit(&busv1.AccessUnit{Codec: busv1.Codec_CODEC_OPUS, ClockRate: 48000, Channels: 2,
					RtpTimestamp: uint32(audio * 960), Data: []byte{0xf8, 0xff, 0xfe}})
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}

// A browser's offer has an audio section. For a camera whose keyframes say
// it sends no audio the answer does not wait for audio (the probe is set to
// 20 s here, so an answer that waited would come after the POST's 10 s);
// a camera with audio is still answered with its audio.
func TestWHEPAnswerDoesNotWaitForAudioOfSilentCamera(t *testing.T) {
	e := newEnv(t, EngineConfig{AudioProbe: 20 * time.Second})
	clip := testkit.H264ClipGOP(t, 2, 15)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	e.feedAV(ctx, "silent", clip, false, &wg)
	e.feedAV(ctx, "loud", clip, true, &wg)
	t.Cleanup(func() { cancel(); wg.Wait() })
	// A keyframe written after the sessions' first second is kept.
	time.Sleep(2500 * time.Millisecond) // the ingest tells after one second

	api := clientAPI(t)
	join := func(cam string) (string, time.Duration) {
		offer := localOffer(t, offeringPC(t, api, webrtc.RTPTransceiverDirectionRecvonly, webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio))
		rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer rcancel()
		req, _ := http.NewRequestWithContext(rctx, http.MethodPost, e.srv.URL+"/whep/"+cam, strings.NewReader(offer))
		req.Header.Set("Content-Type", "application/sdp")
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: the answer waited for audio: %v", cam, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("%s: %d %s", cam, resp.StatusCode, body)
		}
		return string(body), took
	}
	audioSent := func(answer string) bool {
		_, audio, ok := strings.Cut(answer, "m=audio ")
		if !ok {
			return false
		}
		audio, _, _ = strings.Cut(audio, "m=")
		// pion marks an audio section without a track sendonly too; a
		// track shows as its msid.
		return strings.Contains(audio, "a=msid:") && strings.Contains(strings.ToLower(audio), "opus/48000")
	}
	silentAnswer, silentTook := join("silent")
	if audioSent(silentAnswer) {
		t.Fatalf("the silent camera's answer sends audio:\n%s", silentAnswer)
	}
	loudAnswer, loudTook := join("loud")
	if !audioSent(loudAnswer) {
		t.Fatalf("the camera with audio is answered without it:\n%s", loudAnswer)
	}
	t.Logf("answer to an offer with audio: silent camera %v, camera with audio %v", silentTook.Round(time.Millisecond), loudTook.Round(time.Millisecond))
}
