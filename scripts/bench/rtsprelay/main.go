// Command rtsprelay measures the RTSP relay: N cameras pushed by ffmpeg
// into the server, each read back by M ffmpeg readers. The server is either
// the real binary (-bin bin/imageflow: `imageflow serve`, cameras created
// over the REST API, CPU from /proc/<pid>/stat, latency from /metrics) or an
// in-process bus + hub + rtsp.Server wired like serve wires them (can write
// a CPU profile). It prints the server's CPU and memory and the
// server-added latency. Figures only: it never fails on timing. Run through
// scripts/bench/rtsp-relay.sh.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"time"
)

// target is the server under test.
type target interface {
	rtspAddr() string
	// online is 1 when camera id is online.
	online(id string) (int, error)
	// cpu is the server's total CPU time so far.
	cpu() time.Duration
	mem() (rssKB, hwmKB int)
	// window marks the start (true) and end (false) of the measured window.
	window(on bool)
	report(w io.Writer)
	close()
}

var frameRe = regexp.MustCompile(`frame=\s*(\d+)`)

type options struct {
	ncam, nread   int
	dur           time.Duration
	clip, bitrate string
	bin           string
	videoWindow   time.Duration
	cpuProfile    string
	memProfile    string
	probe         bool
	// record turns recording on for every camera (-bin only).
	record bool
	// out receives the report (stdout).
	out io.Writer
}

func main() {
	o := options{out: os.Stdout}
	flag.IntVar(&o.ncam, "cameras", 10, "cameras pushed by ffmpeg")
	flag.IntVar(&o.nread, "readers", 3, "ffmpeg RTSP readers per camera")
	flag.DurationVar(&o.dur, "duration", 20*time.Second, "measured window")
	flag.StringVar(&o.clip, "clip", "", "1080p30 H264 mp4 to loop (generated when empty)")
	flag.StringVar(&o.bitrate, "bitrate", "4M", "bitrate of the generated clip")
	flag.StringVar(&o.bin, "bin", "", "imageflow binary to run as the server (in-process bus + hub + rtsp.Server when empty)")
	flag.DurationVar(&o.videoWindow, "video-window", 0, "JetStream VIDEO window (serve's default is 0: off)")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the measured window (in-process only)")
	flag.BoolVar(&o.record, "record", false, "record every camera into the blob store (needs -bin)")
	flag.StringVar(&o.memProfile, "memprofile", "", "write a heap profile at the end of the measured window (in-process only)")
	probe := flag.String("probe", "auto", "proxy publishers and one reader per camera to measure last packet in -> out: true, false, or auto (on with -bin; in-process the proxies' CPU would count as the server's)")
	flag.Parse()
	o.probe = *probe == "true" || *probe == "auto" && o.bin != ""
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "rtsprelay:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.record && o.bin == "" {
		return fmt.Errorf("-record needs the real binary (rtsp-relay.sh serve)")
	}
	if (o.cpuProfile != "" || o.memProfile != "") && o.bin != "" {
		return fmt.Errorf("-cpuprofile and -memprofile need the in-process server (no -bin)")
	}
	dir, err := os.MkdirTemp("", "rtsprelay-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if o.clip == "" {
		o.clip = filepath.Join(dir, "clip.mp4")
		fmt.Fprintf(o.out, "encoding a 10 s 1080p30 H264 clip at %s/s...\n", o.bitrate)
		out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
			"-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30", "-t", "10",
			"-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-bf", "0", "-b:v", o.bitrate,
			"-maxrate", o.bitrate, "-bufsize", o.bitrate, "-pix_fmt", "yuv420p", o.clip).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ffmpeg clip: %v: %s", err, out)
		}
	}

	ids := make([]string, o.ncam)
	for i := range ids {
		ids[i] = fmt.Sprintf("cam%02d", i+1)
	}
	var t target
	if o.bin != "" {
		t, err = startExternal(o.bin, dir, ids, o.videoWindow.String(), o.record)
	} else {
		t, err = startInproc(dir, ids, o.videoWindow)
	}
	if err != nil {
		return err
	}
	defer t.close()

	pr := newProbe()
	var proxies []*proxy
	defer func() {
		for _, p := range proxies {
			p.close()
		}
	}()
	// addr returns where a client of camera id connects: the server, or a
	// probing proxy in front of it.
	addr := func(id string, publish, probed bool) (string, error) {
		if !o.probe || !probed {
			return t.rtspAddr(), nil
		}
		tap := func(pkt []byte, at time.Time) {
			if ts, marker, ok := rtpInfo(pkt); ok {
				if publish {
					if marker {
						pr.published(id, ts, at)
					}
				} else {
					pr.received(id, ts, marker, at)
				}
			}
		}
		p, err := startProxy(t.rtspAddr(), publish, tap)
		if err != nil {
			return "", err
		}
		proxies = append(proxies, p)
		return p.addr(), nil
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var procs sync.WaitGroup
	start := func(args ...string) *exec.Cmd { return exec.CommandContext(ctx, "ffmpeg", args...) }
	for _, id := range ids {
		a, err := addr(id, true, true)
		if err != nil {
			return err
		}
		cmd := start("-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", o.clip,
			"-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp", "rtsp://"+a+"/"+id)
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
		for _, id := range ids {
			n, err := t.online(id)
			if err != nil {
				return err
			}
			online += n
		}
		if online >= o.ncam {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d cameras online after 30s", online, o.ncam)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Readers run for warm-up + window + a margin; -t bounds them.
	const warm = 3 * time.Second
	readFor := warm + o.dur + 2*time.Second
	type result struct {
		frames int
		err    error
	}
	results := make(chan result, o.ncam*o.nread)
	var readers sync.WaitGroup
	for _, id := range ids {
		for i := range o.nread {
			a, err := addr(id, false, i == 0)
			if err != nil {
				return err
			}
			cmd := start("-hide_banner", "-nostdin", "-rtsp_transport", "tcp", "-i", "rtsp://"+a+"/"+id,
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
	var prof *os.File
	if o.cpuProfile != "" {
		if prof, err = os.Create(o.cpuProfile); err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(prof); err != nil {
			return err
		}
	}
	if o.memProfile != "" {
		// The window's allocations are the end profile minus this one
		// (go tool pprof -sample_index=alloc_space -base f.start f).
		if err := writeHeapProfile(o.memProfile + ".start"); err != nil {
			return err
		}
	}
	t.window(true)
	pr.setOn(true)
	cpu0, t0 := t.cpu(), time.Now()
	time.Sleep(o.dur)
	cpu1, t1 := t.cpu(), time.Now()
	pr.setOn(false)
	t.window(false)
	if prof != nil {
		pprof.StopCPUProfile()
		prof.Close()
	}
	rss, hwm := t.mem()
	if o.memProfile != "" {
		if err := writeHeapProfile(o.memProfile); err != nil {
			return err
		}
	}

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
	expected := o.ncam * o.nread * int(readFor.Seconds()*30)
	what := "in-process bus + hub + rtsp"
	if o.bin != "" {
		what = "imageflow serve, pid " + strconv.Itoa(o.pidOf(t))
	}

	fmt.Fprintf(o.out, "rtsp relay: %d cameras 1080p30 H264 (%s/s) pushed by ffmpeg, %d ffmpeg readers each, %v window, VIDEO window %v, recording %v\n",
		o.ncam, o.bitrate, o.nread, wall.Round(time.Millisecond), o.videoWindow, o.record)
	c := 100 * (cpu1 - cpu0).Seconds() / wall.Seconds()
	fmt.Fprintf(o.out, "server CPU:     %.1f%% of one core, %.2f%% per stream (%.2f s CPU in %.2f s; %s)\n",
		c, c/float64(o.ncam), (cpu1 - cpu0).Seconds(), wall.Seconds(), what)
	fmt.Fprintf(o.out, "server memory:  RSS %.1f MiB (peak %.1f MiB)\n", float64(rss)/1024, float64(hwm)/1024)
	t.report(o.out)
	if o.probe {
		pr.mu.Lock()
		last, first := sortedCopy(pr.toLast), sortedCopy(pr.toFrst)
		nomatch := pr.nomatch
		pr.mu.Unlock()
		fmt.Fprintf(o.out, "probe (TCP proxies, last packet of an AU into the server -> back out to one reader per camera; %d AUs, %d unmatched):\n",
			len(last), nomatch)
		fmt.Fprintf(o.out, "  -> first packet out: p50 %v  p99 %v  max %v\n", rnd(pct(first, .5)), rnd(pct(first, .99)), rnd(pct(first, 1)))
		fmt.Fprintf(o.out, "  -> last packet out:  p50 %v  p99 %v  max %v\n", rnd(pct(last, .5)), rnd(pct(last, .99)), rnd(pct(last, 1)))
	}
	fmt.Fprintf(o.out, "readers:        %d frames received of ~%d expected (%.1f%%), %d reader errors\n",
		frames, expected, 100*float64(frames)/float64(max(expected, 1)), failed)
	return nil
}

// writeHeapProfile writes the heap profile (allocations since the start
// of the process, live heap after a collection) to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	err = pprof.WriteHeapProfile(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (o options) pidOf(t target) int {
	if e, ok := t.(*external); ok {
		return e.pid
	}
	return os.Getpid()
}
