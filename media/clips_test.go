package media

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// Test clips are made once per test binary with ffmpeg, so each has a known
// frame count and size.
var (
	clipDir  string
	clipMu   sync.Mutex
	clipMade = map[string]string{}
)

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "media-clips-")
	if err != nil {
		panic(err)
	}
	clipDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

type clipSpec struct {
	name   string // file name, extension picks the container
	size   string // WxH
	frames int
	rate   int
	args   []string // codec arguments
}

var (
	clipH264    = clipSpec{"h264-nob.h264", "320x240", 30, 30, []string{"-c:v", "libx264", "-preset", "ultrafast", "-bf", "0", "-g", "10"}}
	clipH264B   = clipSpec{"h264-b.mp4", "352x288", 40, 25, []string{"-c:v", "libx264", "-preset", "fast", "-bf", "3", "-g", "12", "-pix_fmt", "yuv420p"}}
	clipH265    = clipSpec{"h265.mp4", "320x240", 24, 24, []string{"-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=none:bframes=2:keyint=12"}}
	clipH265Raw = clipSpec{"h265-nob.hevc", "256x144", 20, 20, []string{"-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=none:bframes=0:keyint=10"}}
	clipVP8     = clipSpec{"vp8.webm", "320x180", 25, 25, []string{"-c:v", "libvpx", "-b:v", "400k", "-g", "10"}}
	clipVP9     = clipSpec{"vp9.webm", "320x180", 15, 15, []string{"-c:v", "libvpx-vp9", "-b:v", "300k", "-g", "10", "-deadline", "realtime", "-cpu-used", "8"}}
	clipMPEG4   = clipSpec{"mpeg4.avi", "320x240", 30, 10, []string{"-c:v", "msmpeg4v2"}}
	clip1080    = clipSpec{"h264-1080.mp4", "1920x1080", 90, 30, []string{"-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", "60", "-b:v", "6M", "-pix_fmt", "yuv420p"}}
)

// clip returns the path of spec's file, making it on first use.
func clip(tb testing.TB, spec clipSpec) string {
	tb.Helper()
	clipMu.Lock()
	defer clipMu.Unlock()
	if p, ok := clipMade[spec.name]; ok {
		return p
	}
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		tb.Fatalf("ffmpeg is needed to make test clips: %v", err)
	}
	p := filepath.Join(clipDir, spec.name)
	args := []string{"-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
		"testsrc2=size=" + spec.size + ":rate=" + itoa(spec.rate), "-frames:v", itoa(spec.frames)}
	args = append(args, spec.args...)
	args = append(args, p)
	out, err := exec.Command("ffmpeg", args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("ffmpeg %s: %v\n%s", spec.name, err, out)
	}
	clipMade[spec.name] = p
	return p
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

// readPackets demuxes a whole clip into copied packets.
func readPackets(tb testing.TB, path string) (StreamInfo, []Packet) {
	tb.Helper()
	dm, err := OpenDemuxer(path, DemuxOptions{})
	if err != nil {
		tb.Fatalf("open %s: %v", path, err)
	}
	defer dm.Close()
	var pkts []Packet
	for {
		p, err := dm.Read()
		if errIsEOF(err) {
			break
		}
		if err != nil {
			tb.Fatalf("read %s: %v", path, err)
		}
		c := *p
		c.Data = append([]byte(nil), p.Data...)
		pkts = append(pkts, c)
	}
	return dm.Info(), pkts
}
