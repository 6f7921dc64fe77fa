// Command rtsprelay measures the RTSP relay: N cameras pushed by ffmpeg into
// an in-process bus + hub + rtsp.Server, each read back by M ffmpeg readers.
// It prints the server process's CPU and memory and the server-added latency
// (access unit ingest → packets queued to readers). Figures only: it never
// fails on timing. Run through scripts/bench/rtsp-relay.sh.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/bus/hub"
	"github.com/imageflowcanvas/imageflow/ingest"
	"github.com/imageflowcanvas/imageflow/ingest/rtsp"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

type cameras map[string]rtsp.CameraInfo

func (c cameras) LookupCamera(id string) (rtsp.CameraInfo, error) {
	if info, ok := c[id]; ok {
		return info, nil
	}
	return rtsp.CameraInfo{}, rtsp.ErrCameraNotFound
}

// latencies collects samples; sorted once at the end.
type latencies struct {
	mu  sync.Mutex
	on  bool
	all []time.Duration
}

func (l *latencies) add(_ string, d time.Duration) {
	l.mu.Lock()
	if l.on {
		l.all = append(l.all, d)
	}
	l.mu.Unlock()
}

func (l *latencies) pct(p float64) time.Duration {
	if len(l.all) == 0 {
		return 0
	}
	i := int(float64(len(l.all)-1) * p)
	return l.all[i]
}

// timedSink records how long each access unit took to arrive (first packet
// to last), the part of the latency the sender's pacing decides.
type timedSink struct {
	ingest.Sink
	lat *latencies
}

func (s timedSink) WriteAccessUnit(au *busv1.AccessUnit) error {
	if au.IngestUnixNano != 0 && au.Codec == busv1.Codec_CODEC_H264 {
		s.lat.add("", time.Duration(time.Now().UnixNano()-au.IngestUnixNano))
	}
	return s.Sink.WriteAccessUnit(au)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func memKB(field string) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, field+":") {
			n, _ := strconv.Atoi(strings.Fields(line)[1])
			return n
		}
	}
	return 0
}

var frameRe = regexp.MustCompile(`frame=\s*(\d+)`)

func main() {
	ncam := flag.Int("cameras", 10, "cameras pushed by ffmpeg")
	nread := flag.Int("readers", 3, "ffmpeg RTSP readers per camera")
	dur := flag.Duration("duration", 20*time.Second, "measured window")
	clip := flag.String("clip", "", "1080p30 H264 mp4 to loop (generated when empty)")
	bitrate := flag.String("bitrate", "4M", "bitrate of the generated clip")
	flag.Parse()
	if err := run(*ncam, *nread, *dur, *clip, *bitrate); err != nil {
		fmt.Fprintln(os.Stderr, "rtsprelay:", err)
		os.Exit(1)
	}
}

func run(ncam, nread int, dur time.Duration, clip, bitrate string) error {
	dir, err := os.MkdirTemp("", "rtsprelay-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if clip == "" {
		clip = filepath.Join(dir, "clip.mp4")
		fmt.Printf("encoding a 10 s 1080p30 H264 clip at %s/s...\n", bitrate)
		out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
			"-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30", "-t", "10",
			"-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-bf", "0", "-b:v", bitrate,
			"-maxrate", bitrate, "-bufsize", bitrate, "-pix_fmt", "yuv420p", clip).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ffmpeg clip: %v: %s", err, out)
		}
	}

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	b := &bus.Bus{Config: bus.Config{DataDir: dir, Logger: log}}
	if err := b.Start(context.Background()); err != nil {
		return err
	}
	defer b.Close()
	h := hub.New(b.Conn(), b.Subjects())
	defer h.Close()

	cams := cameras{}
	ids := make([]string, ncam)
	for i := range ids {
		ids[i] = fmt.Sprintf("cam%02d", i+1)
		cams[ids[i]] = rtsp.CameraInfo{Source: rtsp.SourcePublish, Enabled: true}
	}
	var mu sync.Mutex
	sinks := map[string]*ingest.BusSink{}
	lat := &latencies{all: make([]time.Duration, 0, ncam*30*int(dur.Seconds()+5))}
	asm := &latencies{all: make([]time.Duration, 0, ncam*30*int(dur.Seconds()+5))}
	srv := &rtsp.Server{
		Address: "127.0.0.1:0",
		Cameras: cams,
		Hub:     h,
		Logger:  log,
		Publishers: func(id string) (ingest.Sink, func(), error) {
			mu.Lock()
			defer mu.Unlock()
			s := ingest.NewBusSink(b.Conn(), b.Subjects(), id, nil)
			sinks[id] = s
			return timedSink{Sink: s, lat: asm}, func() {}, nil
		},
		OnLatency: lat.add,
	}
	if err := srv.Start(); err != nil {
		return err
	}
	defer srv.Close()
	url := func(id string) string { return "rtsp://" + srv.Addr() + "/" + id }

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var procs sync.WaitGroup
	start := func(args ...string) *exec.Cmd { return exec.CommandContext(ctx, "ffmpeg", args...) }
	for _, id := range ids {
		cmd := start("-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", clip,
			"-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp", url(id))
		if err := cmd.Start(); err != nil {
			return err
		}
		procs.Add(1)
		go func() { defer procs.Done(); _ = cmd.Wait() }()
	}
	defer procs.Wait()
	defer cancel()

	deadline := time.Now().Add(30 * time.Second)
	for {
		online := 0
		mu.Lock()
		for _, s := range sinks {
			if s.Status().State == ingest.StateOnline {
				online++
			}
		}
		mu.Unlock()
		if online == ncam {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d cameras online after 30s", online, ncam)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Readers run for warm-up + window + a margin; -t bounds them.
	const warm = 3 * time.Second
	readFor := warm + dur + 2*time.Second
	type result struct {
		frames int
		err    error
	}
	results := make(chan result, ncam*nread)
	var readers sync.WaitGroup
	for _, id := range ids {
		for range nread {
			cmd := start("-hide_banner", "-nostdin", "-rtsp_transport", "tcp", "-i", url(id),
				"-t", strconv.FormatFloat(readFor.Seconds(), 'f', 1, 64), "-c", "copy", "-f", "null", "-")
			readers.Add(1)
			go func() {
				defer readers.Done()
				out, err := cmd.CombinedOutput()
				f := 0
				if m := frameRe.FindAllSubmatch(out, -1); len(m) > 0 {
					f, _ = strconv.Atoi(string(m[len(m)-1][1]))
				}
				results <- result{f, err}
			}()
		}
	}

	time.Sleep(warm)
	for _, l := range []*latencies{lat, asm} {
		l.mu.Lock()
		l.on = true
		l.mu.Unlock()
	}
	cpu0, t0 := cpuTime(), time.Now()
	time.Sleep(dur)
	cpu1, t1 := cpuTime(), time.Now()
	for _, l := range []*latencies{lat, asm} {
		l.mu.Lock()
		l.on = false
		slices.Sort(l.all)
		l.mu.Unlock()
	}
	samples := lat.all
	rss, hwm := memKB("VmRSS"), memKB("VmHWM")

	readers.Wait()
	close(results)
	frames, failed := 0, 0
	for r := range results {
		frames += r.frames
		if r.err != nil {
			failed++
		}
	}
	wall := t1.Sub(t0)
	expected := ncam * nread * int(readFor.Seconds()*30)

	fmt.Printf("rtsp relay: %d cameras 1080p30 H264 (%s/s) pushed by ffmpeg, %d ffmpeg readers each, %v window\n",
		ncam, bitrate, nread, wall.Round(time.Millisecond))
	fmt.Printf("server CPU:     %.1f%% of one core (%.2f s CPU in %.2f s; bus + hub + rtsp in-process)\n",
		100*(cpu1-cpu0).Seconds()/wall.Seconds(), (cpu1 - cpu0).Seconds(), wall.Seconds())
	fmt.Printf("server memory:  RSS %.1f MiB (peak %.1f MiB)\n", float64(rss)/1024, float64(hwm)/1024)
	fmt.Printf("added latency:  p50 %v  p99 %v  max %v  (%d access units; ingest first packet -> packets queued to readers)\n",
		lat.pct(0.50).Round(10*time.Microsecond), lat.pct(0.99).Round(10*time.Microsecond),
		lat.pct(1).Round(10*time.Microsecond), len(samples))
	fmt.Printf("  of which AU arrival (first -> last packet, sender pacing): p50 %v  p99 %v\n",
		asm.pct(0.50).Round(10*time.Microsecond), asm.pct(0.99).Round(10*time.Microsecond))
	fmt.Printf("readers:        %d frames received of ~%d expected (%.1f%%), %d reader errors, hub drops %d\n",
		frames, expected, 100*float64(frames)/float64(max(expected, 1)), failed, h.Dropped.Load())
	return nil
}
