package main

import (
	"bytes"
	"encoding/binary"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRunInProcess runs the benchmark briefly against the in-process server,
// one camera and two readers, with the probing proxies: it must report CPU,
// memory, latency and probe figures, and the readers must get frames.
func TestRunInProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ffmpeg for ~10 s")
	}
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		t.Skip("ffmpeg not installed")
	}
	clip := filepath.Join(t.TempDir(), "clip.mp4")
	if out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-t", "3",
		"-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-bf", "0", "-pix_fmt", "yuv420p", clip).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg clip: %v: %s", err, out)
	}
	var out bytes.Buffer
	o := options{ncam: 1, nread: 2, dur: time.Second, clip: clip, bitrate: "1M", videoWindow: time.Second, probe: true, out: &out}
	if err := run(o); err != nil {
		t.Fatalf("run: %v\n%s", err, &out)
	}
	t.Logf("\n%s", &out)
	for _, want := range []string{"server CPU:", "server memory:  RSS", "added latency:", "hub drops:", "-> first packet out:", "-> last packet out:"} {
		if !bytes.Contains(out.Bytes(), []byte(want)) {
			t.Errorf("report lacks %q", want)
		}
	}
	m := regexp.MustCompile(`readers:\s+(\d+) frames received of ~(\d+) expected .*, (\d+) reader errors`).FindSubmatch(out.Bytes())
	if m == nil {
		t.Fatal("no readers line")
	}
	frames, _ := strconv.Atoi(string(m[1]))
	errs, _ := strconv.Atoi(string(m[3]))
	if frames < 30 || errs != 0 {
		t.Fatalf("readers got %d frames with %d errors", frames, errs)
	}
}

// The proxy's stream splitter finds the RTP packets between RTSP messages
// (with bodies) and RTCP, across arbitrary chunk boundaries.
func TestInterleavedSplit(t *testing.T) {
	rtp := func(ts uint32, marker bool) []byte {
		p := make([]byte, 12)
		p[0] = 2 << 6
		if marker {
			p[1] = 0x80
		}
		binary.BigEndian.PutUint32(p[4:], ts)
		return p
	}
	frame := func(ch byte, p []byte) []byte {
		return append([]byte{'$', ch, byte(len(p) >> 8), byte(len(p))}, p...)
	}
	var stream []byte
	stream = append(stream, "RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Length: 5\r\n\r\nv=0\r\n"...)
	stream = append(stream, frame(0, rtp(1000, false))...)
	stream = append(stream, frame(1, []byte{0x80, 200, 0, 1})...) // RTCP
	stream = append(stream, frame(0, rtp(1000, true))...)
	stream = append(stream, "GET_PARAMETER rtsp://x RTSP/1.0\r\nCSeq: 2\r\n\r\n"...)
	stream = append(stream, frame(2, rtp(4000, true))...)
	for _, chunk := range []int{1, 3, 7, len(stream)} {
		var s interleaved
		var got []string
		for i := 0; i < len(stream); i += chunk {
			s.feed(stream[i:min(i+chunk, len(stream))], func(p []byte) {
				ts, marker, ok := rtpInfo(p)
				got = append(got, strconv.FormatUint(uint64(ts), 10)+strconv.FormatBool(marker)+strconv.FormatBool(ok))
			})
		}
		if want := "[1000falsetrue 1000truetrue 4000truetrue]"; "["+strings.Join(got, " ")+"]" != want {
			t.Errorf("chunk %d: packets %v, want %s", chunk, got, want)
		}
	}
	if _, _, ok := rtpInfo([]byte{1, 2, 3}); ok {
		t.Error("short packet accepted")
	}
	d := []time.Duration{1, 2, 3, 4, 5}
	if pct(d, .5) != 3 || pct(d, 1) != 5 || pct(nil, .5) != 0 {
		t.Error("pct")
	}
}
