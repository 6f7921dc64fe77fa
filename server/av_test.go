package server

import (
	"context"
	"encoding/json"
	"os/exec"
	"strconv"
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
    const r = await negotiate(pc, '/api/v1/cameras/' + (window.camera || 'phone') + '/whep');
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
	// Sender NTP time (ms) of what plays out now; audio minus video is the
	// lip-sync offset the viewer experiences.
	EstimatedPlayoutTimestamp float64 `json:"estimatedPlayoutTimestamp"`
	JitterBufferDelay         float64 `json:"jitterBufferDelay"`
	JitterBufferEmittedCount  float64 `json:"jitterBufferEmittedCount"`
}

// bufferMs is the average time a sample or frame waited in the receiver's
// jitter buffer.
func (s inboundStats) bufferMs() float64 {
	if s.JitterBufferEmittedCount == 0 {
		return 0
	}
	return 1000 * s.JitterBufferDelay / s.JitterBufferEmittedCount
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

// An RTSP camera with AAC audio (ffmpeg pushing H264+AAC): a WHEP viewer in
// Chromium gets the sound as Opus, in sync with the picture; the shared
// transcode runs only while the viewer is there.
func TestAACCameraHeardOverWHEP(t *testing.T) {
	testkit.NeedCommand(t, "chromium", "ffmpeg")
	cfg := testConfig(t.TempDir())
	cfg.RTSPAddr = "127.0.0.1:0"
	ts := startServer(t, cfg)
	if st, body, _ := ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": "ipcam", "source": "publish"}); st != 201 {
		t.Fatalf("camera: %d %s", st, body)
	}
	ff := testkit.StartProcess(t, "ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
		"-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25", "-bf", "0", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-b:a", "64k", "-max_delay", "20000", "-f", "rtsp", "-rtsp_transport", "tcp", "rtsp://"+ts.srv.Addrs().RTSP+"/ipcam")
	defer ff.Stop()
	waitCameraOnline(t, ts, "ipcam")

	play, cancelPlay := chromedp.NewContext(newBrowser(t))
	defer cancelPlay()
	if _, err := chromedp.Run(play, chromedp.Navigate(ts.base+"/api/v1/openapi.json")); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(play, chromedp.Evaluate[bool](`window.camera = 'ipcam'; true`)); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(play, chromedp.Evaluate[bool](whepAVJS)); err != nil {
		t.Fatal(err)
	}
	var stats map[string]json.RawMessage
	var audio, video inboundStats
	var offsets []float64
	// Chromium's lip sync moves the playout delays a little each second
	// from where the jitter buffers started (the audio one deeper: the
	// source sends audio in bursts); judge the mean of the last readings,
	// after at least ten seconds of playback, and give a loaded machine's
	// browser until the deadline to converge.
	lastMean := func() (float64, []float64) {
		last := offsets[len(offsets)-5:]
		var mean float64
		for _, o := range last {
			mean += o / float64(len(last))
		}
		return mean, last
	}
	const maxOffsetMs = 100
	deadline := time.Now().Add(60 * time.Second)
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
		if audio.EstimatedPlayoutTimestamp > 0 && video.EstimatedPlayoutTimestamp > 0 && video.FramesDecoded > 25 {
			offsets = append(offsets, audio.EstimatedPlayoutTimestamp-video.EstimatedPlayoutTimestamp)
		}
		playing := audio.PacketsReceived > 150 && audio.TotalAudioEnergy > 0 && video.FramesDecoded > 50 && len(offsets) >= 40
		if playing {
			if mean, _ := lastMean(); mean >= -maxOffsetMs && mean <= maxOffsetMs {
				break
			}
		}
		if time.Now().After(deadline) {
			if playing {
				mean, last := lastMean()
				t.Fatalf("A/V offset %.0f ms after %d readings (last readings %v)", mean, len(offsets), last)
			}
			st, _ := chromedp.Run(play, chromedp.Evaluate[string](`JSON.stringify(window.view)`))
			t.Fatalf("WHEP viewer: audio %+v video %+v offsets %v page %s; server's transcodes %+v", audio, video, offsets, st, ts.srv.webrtc.Transcodes())
		}
		time.Sleep(300 * time.Millisecond)
	}
	if _, ok := stats["codec:audio/opus"]; !ok {
		t.Fatalf("viewer's audio codec is not Opus: %v", keys(stats))
	}
	mean, _ := lastMean()
	t.Logf("WHEP viewer: audio packets %d, samples %d, energy %.4g; video frames %d; jitter buffers: audio %.0f ms, video %.0f ms",
		audio.PacketsReceived, audio.TotalSamplesReceived, audio.TotalAudioEnergy, video.FramesDecoded, audio.bufferMs(), video.bufferMs())
	t.Logf("A/V playout offsets (audio minus video, ms): %v; final mean %.0f ms", offsets, mean)
	if n := metricValue(t, ts, `imageflow_webrtc_transcodes{kind="audio_opus"}`); n != 1 {
		t.Fatalf("audio transcodes running with one listener: %v", n)
	}
	// The viewer leaves: the transcode stops.
	if _, err := chromedp.Run(play, chromedp.Evaluate[bool](`window.viewpc.close(); true`)); err != nil {
		t.Fatal(err)
	}
	cancelPlay()
	testkit.WaitFor(t, 30*time.Second, "audio transcode stopped", func() bool {
		return metricValue(t, ts, `imageflow_webrtc_transcodes{kind="audio_opus"}`) == 0
	})
}

// metricValue reads one sample of the server's /metrics; -1 when absent.
func metricValue(t *testing.T, ts *testServer, series string) float64 {
	t.Helper()
	st, body, _ := ts.do("GET", "/metrics", "", nil)
	if st != 200 {
		t.Fatalf("metrics: %d %s", st, body)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// The web UI end to end: the publish page sends the phone's microphone with
// its camera, and the live page's unmute button (enabled once the stream
// has sound) unmutes the player.
func TestLivePageUnmute(t *testing.T) {
	needBrowser(t)
	cfg := testConfig(t.TempDir())
	ts := startServer(t, cfg)
	if st, body, _ := ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": "phone", "source": "publish"}); st != 201 {
		t.Fatalf("camera: %d %s", st, body)
	}
	browser := newBrowser(t)
	pub, cancelPub := chromedp.NewContext(browser)
	defer cancelPub()
	if _, err := chromedp.Run(pub, chromedp.Navigate(ts.base+"/publish/phone")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, pub, `!!(window.__ifc && window.__ifc.state === 'publishing' && window.__ifc.framesSent > 10)`, 30*time.Second)

	play, cancelPlay := chromedp.NewContext(browser)
	defer cancelPlay()
	if _, err := chromedp.Run(play, chromedp.Navigate(ts.base+"/cameras/phone")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, play, `!!(window.__ifc && window.__ifc.audioTrack && window.__ifc.framesDecoded > 10)`, 30*time.Second)
	const player = `document.querySelector('[data-testid=live-video]')`
	const button = `document.querySelector('[data-testid=mute-toggle]')`
	waitJS(t, play, `!`+button+`.disabled && `+player+`.muted === true`, 10*time.Second)
	if _, err := chromedp.Run(play, chromedp.Evaluate[bool](button+`.click(); true`)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, play, player+`.muted === false && `+button+`.textContent === 'Mute' && !`+player+`.paused`, 10*time.Second)
}

// An H.265 camera (ffmpeg pushing over RTSP) watched on the live page of a
// browser without H.265: the viewer gets the shared H.264 transcode, decodes
// it, and the pipeline's boxes are drawn on exactly the frames they were
// computed on (the transcode keeps the camera's RTP timestamps). When the
// viewer leaves, the transcode stops.
func TestH265CameraTranscodedForBrowser(t *testing.T) {
	needBrowser(t)
	testkit.NeedCommand(t, "ffmpeg")
	cfg := testConfig(t.TempDir())
	cfg.RTSPAddr = "127.0.0.1:0"
	ts := startServer(t, cfg)
	if st, body, _ := ts.do("POST", "/api/v1/pipelines", "", pipelineBody("moving", step("moving", "motion", nil))); st != 201 {
		t.Fatalf("pipeline: %d %s", st, body)
	}
	if st, body, _ := ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": "hevc", "source": "publish", "pipeline": "moving"}); st != 201 {
		t.Fatalf("camera: %d %s", st, body)
	}
	ff := testkit.StartProcess(t, "ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
		"-f", "lavfi", "-i", "testsrc2=size=640x360:rate=15",
		"-c:v", "libx265", "-preset", "ultrafast", "-tune", "zerolatency", "-x265-params", "keyint=30:bframes=0:log-level=error",
		"-pix_fmt", "yuv420p", "-f", "rtsp", "-rtsp_transport", "tcp", "rtsp://"+ts.srv.Addrs().RTSP+"/hevc")
	defer ff.Stop()
	cam := waitCameraOnline(t, ts, "hevc")
	if cam.Codec != "h265" {
		t.Fatalf("camera codec %q, want h265", cam.Codec)
	}
	if n := metricValue(t, ts, `imageflow_webrtc_transcodes{kind="video_h264"}`); n != 0 {
		t.Fatalf("video transcodes before any viewer: %v", n)
	}

	play, cancelPlay := chromedp.NewContext(newBrowser(t))
	defer cancelPlay()
	if _, err := chromedp.Run(play, chromedp.Navigate(ts.base+"/cameras/hevc")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, play, `!!(window.__ifc && window.__ifc.framesDecoded > 20)`, 45*time.Second)
	waitJS(t, play, `!!(window.__ifc && window.__ifc.exactFrames >= 5)`, 60*time.Second)
	got, _ := chromedp.Run(play, chromedp.Evaluate[string](`JSON.stringify(window.__ifc)`))
	t.Logf("live page: %s", got)
	// The camera has no sound: the unmute button stays disabled.
	if ok, _ := chromedp.Run(play, chromedp.Evaluate[bool](`!window.__ifc.audioTrack && document.querySelector('[data-testid=mute-toggle]').disabled`)); !ok {
		t.Fatal("a camera without audio has its unmute button enabled")
	}
	if n := metricValue(t, ts, `imageflow_webrtc_transcodes{kind="video_h264"}`); n != 1 {
		t.Fatalf("video transcodes with one viewer: %v", n)
	}
	frames := metricValue(t, ts, `imageflow_webrtc_transcode_packets_total{kind="video_h264"}`)
	busy := metricValue(t, ts, `imageflow_webrtc_transcode_seconds_total{kind="video_h264"}`)
	t.Logf("transcode: %.0f pictures, %.2f s busy (%.1f ms each)", frames, busy, 1000*busy/frames)

	// The viewer leaves (the page DELETEs its session): the transcode stops.
	if _, err := chromedp.Run(play, chromedp.Navigate("about:blank")); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 30*time.Second, "video transcode stopped", func() bool {
		return metricValue(t, ts, `imageflow_webrtc_transcodes{kind="video_h264"}`) == 0
	})
}
