package server

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/imageflowcanvas/imageflow/internal/testkit"
)

// whipAVJS publishes Chromium's fake camera and microphone (H264 and Opus)
// over WHIP to camera phone.
const whipAVJS = testkit.NegotiateJS + `
window.pub = {status: 0, error: ''};
(async () => {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({video: {width: 320, height: 240}, audio: true});
    const pc = new RTCPeerConnection();
    for (const track of stream.getTracks()) pc.addTransceiver(track, {direction: 'sendonly', streams: [stream]});
    const r = await negotiate(pc, '/api/v1/cameras/phone/whip');
    pub.status = r.status;
    if (r.status !== 201) pub.error = r.body;
    window.pubpc = pc;
  } catch (e) { pub.error = String(e); }
})();
true`

// whepAVJS plays camera phone over WHEP, video and audio, in an unmuted
// element so Chromium decodes and plays out the audio.
const whepAVJS = testkit.NegotiateJS + `
window.view = {status: 0, error: '', kinds: []};
(async () => {
  try {
    const pc = new RTCPeerConnection();
    pc.addTransceiver('video', {direction: 'recvonly'});
    pc.addTransceiver('audio', {direction: 'recvonly'});
    const ms = new MediaStream();
    const el = document.createElement('video');
    el.autoplay = true; el.muted = false; el.srcObject = ms;
    document.body.appendChild(el);
    pc.ontrack = (ev) => { ms.addTrack(ev.track); view.kinds.push(ev.track.kind); el.play().catch(() => {}); };
    const r = await negotiate(pc, '/api/v1/cameras/phone/whep');
    view.status = r.status;
    if (r.status !== 201) view.error = r.body;
    window.viewpc = pc;
  } catch (e) { view.error = String(e); }
})();
true`

// inboundStatsJS reads the viewer's inbound RTP stats per kind.
const inboundStatsJS = `(async () => {
  const out = {};
  if (!window.viewpc) return JSON.stringify(out);
  (await window.viewpc.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp') out[r.kind] = r;
    if (r.type === 'codec') out['codec:' + r.mimeType] = true;
  });
  return JSON.stringify(out);
})()`

// inboundStats is what the test reads of a WebRTC inbound-rtp stats entry.
type inboundStats struct {
	PacketsReceived      int     `json:"packetsReceived"`
	TotalSamplesReceived int     `json:"totalSamplesReceived"`
	TotalAudioEnergy     float64 `json:"totalAudioEnergy"`
	FramesDecoded        int     `json:"framesDecoded"`
	CodecID              string  `json:"codecId"`
}

// A phone (Chromium's fake camera and microphone) publishes H264 and Opus
// over WHIP: RTSP readers get both tracks, and a WHEP viewer hears it.
func TestWHIPAudioToRTSPAndWHEP(t *testing.T) {
	testkit.NeedCommand(t, "chromium", "ffprobe")
	cfg := testConfig(t.TempDir())
	cfg.RTSPAddr = "127.0.0.1:0"
	ts := startServer(t, cfg)
	if st, body, _ := ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": "phone", "source": "publish"}); st != 201 {
		t.Fatalf("camera: %d %s", st, body)
	}
	browser := newBrowser(t)
	pub, cancelPub := chromedp.NewContext(browser)
	defer cancelPub()
	if _, err := chromedp.Run(pub, chromedp.Navigate(ts.base+"/api/v1/openapi.json")); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(pub, chromedp.Evaluate[bool](whipAVJS)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, pub, `!!(window.pub && (window.pub.status === 201 || window.pub.error))`, 30*time.Second)
	if e, _ := chromedp.Run(pub, chromedp.Evaluate[string](`window.pub.error`)); e != "" {
		t.Fatalf("WHIP publish: %s", e)
	}
	waitCameraOnline(t, ts, "phone")

	// RTSP: ffprobe reads both tracks, with packets.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-rtsp_transport", "tcp",
		"-count_packets", "-read_intervals", "%+3", "-show_entries", "stream=codec_name,codec_type,nb_read_packets",
		"-of", "csv=p=0", "rtsp://"+ts.srv.Addrs().RTSP+"/phone").CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe over RTSP: %v: %s", err, out)
	}
	t.Logf("ffprobe over RTSP:\n%s", strings.TrimSpace(string(out)))
	tracks := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(strings.TrimSpace(line), ",")
		if len(f) == 3 && f[2] != "0" {
			tracks[f[0]+"/"+f[1]] = true
		}
	}
	if !tracks["h264/video"] || !tracks["opus/audio"] {
		t.Fatalf("RTSP tracks with packets: %v, want h264/video and opus/audio", tracks)
	}

	// WHEP: a second page receives and plays the audio.
	play, cancelPlay := chromedp.NewContext(browser)
	defer cancelPlay()
	if _, err := chromedp.Run(play, chromedp.Navigate(ts.base+"/api/v1/openapi.json")); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(play, chromedp.Evaluate[bool](whepAVJS)); err != nil {
		t.Fatal(err)
	}
	var stats map[string]json.RawMessage
	var audio, video inboundStats
	deadline := time.Now().Add(45 * time.Second)
	for {
		raw, err := chromedp.Run(play, chromedp.Evaluate[string](inboundStatsJS, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatal(err)
		}
		stats = nil
		_ = json.Unmarshal([]byte(raw), &stats)
		audio, video = inboundStats{}, inboundStats{}
		_ = json.Unmarshal(stats["audio"], &audio)
		_ = json.Unmarshal(stats["video"], &video)
		if audio.PacketsReceived > 100 && audio.TotalSamplesReceived > 48000 && audio.TotalAudioEnergy > 0 && video.FramesDecoded > 20 {
			break
		}
		if time.Now().After(deadline) {
			st, _ := chromedp.Run(play, chromedp.Evaluate[string](`JSON.stringify(window.view)`))
			t.Fatalf("WHEP viewer: audio %+v video %+v page %s", audio, video, st)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if _, ok := stats["codec:audio/opus"]; !ok {
		t.Fatalf("viewer's audio codec is not Opus: %v", keys(stats))
	}
	t.Logf("WHEP viewer: audio packets %d, samples %d, energy %.4g; video frames decoded %d",
		audio.PacketsReceived, audio.TotalSamplesReceived, audio.TotalAudioEnergy, video.FramesDecoded)
}

func keys(m map[string]json.RawMessage) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
