// Package testkit starts the real peers that tests talk to — headless
// Chromium, ffmpeg-made clips — the same way in every package's tests.
package testkit

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	mch264 "github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/chromedp/chromedp"
)

// Need skips the test on a developer machine when something it needs is
// missing (missing says what), and fails it in CI (CI set), where
// scripts/test.sh installs every peer. An empty missing does nothing.
func Need(t testing.TB, missing string) {
	t.Helper()
	if missing == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s: scripts/test.sh should have set it up", missing)
	}
	t.Skip(missing)
}

// NeedCommand is Need for programs on PATH (ffmpeg, ffprobe, chromium).
func NeedCommand(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			Need(t, n+" not installed")
		}
	}
}

// Chromium starts headless Chromium with a new profile, a fake camera and
// microphone, and WebRTC on loopback, and returns the browser's context (make
// tabs with chromedp.NewContext(ctx)) and a stop function; stop may be called
// early (a viewer that goes away) and runs again harmlessly at cleanup.
func Chromium(t testing.TB, extra ...chromedp.ExecAllocatorOption) (context.Context, context.CancelFunc) {
	t.Helper()
	NeedCommand(t, "chromium")
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath("chromium"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		// Tabs a test opens side by side (a publisher and a viewer) keep
		// running at full rate when not in front.
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		// Offer 127.0.0.1 candidates, as plain IPs rather than mDNS names
		// pion cannot resolve.
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.Flag("disable-features", "WebRtcHideLocalIpsWithMdns"),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(opts, extra...)...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	stop := func() { cancelBrowser(); cancelAlloc() }
	if err := chromedp.Do(bctx); err != nil {
		stop()
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(stop)
	return bctx, stop
}

// H264Clip encodes a real 320x240 30 fps H264 clip of ffmpeg's test pattern
// (baseline, no B-frames, a keyframe every 30 frames) and returns its access
// units, each a list of NALUs without start codes.
func H264Clip(t testing.TB, seconds int) [][][]byte {
	t.Helper()
	return H264ClipGOP(t, seconds, 30)
}

// H264ClipGOP is H264Clip with a keyframe every gop frames.
func H264ClipGOP(t testing.TB, seconds, gop int) [][][]byte {
	t.Helper()
	path := encodeClip(t, "clip.h264", "320x240", 30, gop, seconds, "baseline", "h264")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ab mch264.AnnexB
	if err := ab.Unmarshal(raw); err != nil {
		t.Fatal(err)
	}
	return splitAccessUnits(ab)
}

// H264File encodes ffmpeg's test pattern into an MP4 file for peers that
// publish a file (ffmpeg -re -stream_loop -1 -i file -c copy): size as
// "WxH", 25 fps, the given x264 profile ("baseline", "high"), no B-frames,
// a keyframe every second.
func H264File(t testing.TB, size, profile string, seconds int) string {
	t.Helper()
	return encodeClip(t, "clip.mp4", size, 25, 25, seconds, profile, "mp4")
}

func encodeClip(t testing.TB, name, size string, fps, gop, seconds int, profile, format string) string {
	t.Helper()
	NeedCommand(t, "ffmpeg")
	path := filepath.Join(t.TempDir(), name)
	cmd := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi",
		"-i", fmt.Sprintf("testsrc=size=%s:rate=%d", size, fps), "-t", fmt.Sprint(seconds),
		"-c:v", "libx264", "-profile:v", profile, "-bf", "0", "-g", fmt.Sprint(gop), "-pix_fmt", "yuv420p", "-f", format, path)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, out)
	}
	return path
}

// splitAccessUnits groups NALUs into access units: a new one starts at an
// AUD, SPS, PPS or SEI, or at a slice with first_mb_in_slice == 0, once the
// current one has a slice (H.264 §7.4.1.2.3).
func splitAccessUnits(nalus [][]byte) [][][]byte {
	var aus [][][]byte
	var cur [][]byte
	hasSlice := false
	for _, n := range nalus {
		if len(n) == 0 {
			continue
		}
		typ := n[0] & 0x1f
		start := false
		switch typ {
		case 6, 7, 8, 9:
			start = hasSlice
		case 1, 5:
			start = hasSlice && len(n) > 1 && n[1]&0x80 != 0
		}
		if start {
			aus = append(aus, cur)
			cur, hasSlice = nil, false
		}
		cur = append(cur, n)
		if typ == 1 || typ == 5 {
			hasSlice = true
		}
	}
	if len(cur) > 0 {
		aus = append(aus, cur)
	}
	return aus
}

// WaitFor polls cond until it holds, failing the test after d.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// NegotiateJS defines negotiate(pc, url) for test pages, the browser side of
// WHIP and WHEP as the web UI does it: it offers without trickle (only
// 127.0.0.1 candidates, so a test never leaves loopback), POSTs the offer to
// url, applies a 201's answer and resolves to {status, body}.
const NegotiateJS = `
async function negotiate(pc, url) {
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((res) => {
    if (pc.iceGatheringState === 'complete') return res();
    pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') res(); };
    setTimeout(res, 3000);
  });
  const sdp = pc.localDescription.sdp.split('\r\n')
    .filter((l) => !l.startsWith('a=candidate:') || l.includes(' 127.0.0.1 ')).join('\r\n');
  const r = await fetch(url, {method: 'POST', headers: {'Content-Type': 'application/sdp'}, body: sdp});
  const body = await r.text();
  if (r.status === 201) await pc.setRemoteDescription({type: 'answer', sdp: body});
  return {status: r.status, body};
}
`
