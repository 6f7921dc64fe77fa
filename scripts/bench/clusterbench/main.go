// Command clusterbench measures an imageflow cluster on loopback: three
// `imageflow serve` nodes joined by routes (replicas 3), then (1) the RTSP
// relay's CPU for N cameras pushed by ffmpeg into node 1 and read by ffmpeg
// readers on node 1 (no route hop) and then on node 2 (each stream crosses
// one route), per node and per stream; (2) batch throughput of the same
// pictures with 1, 2 and 3 nodes taking items from the JOBS work queue
// (items/s, items done per node, CPU per item), with replicas 3 and 1 to
// tell the cost of replication from that of sharing. It prints figures and never
// fails on them. Run through scripts/bench/cluster.sh.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

type options struct {
	bin             string
	ncam, nread     int
	repeat          int
	dur             time.Duration
	clip, bitrate   string
	items           int
	image           string
	skipRelay       bool
	skipBatch       bool
	batchSizes      string
	out             io.Writer
	batchWorkersEnv string
}

func main() {
	o := options{out: os.Stdout}
	flag.StringVar(&o.bin, "bin", "bin/imageflow", "imageflow binary")
	flag.IntVar(&o.ncam, "cameras", 5, "cameras pushed by ffmpeg into node 1")
	flag.IntVar(&o.nread, "readers", 1, "ffmpeg RTSP readers per camera")
	flag.DurationVar(&o.dur, "duration", 10*time.Second, "measured window of each relay round")
	flag.IntVar(&o.repeat, "repeat", 2, "relay windows of each kind (no reader, local, remote), taken in turn and averaged")
	flag.StringVar(&o.clip, "clip", "", "1080p30 H264 mp4 to loop (generated when empty)")
	flag.StringVar(&o.bitrate, "bitrate", "4M", "bitrate of the generated clip")
	flag.IntVar(&o.items, "items", 200, "pictures in each batch round")
	flag.StringVar(&o.image, "image", "/usr/share/doc/opencv-doc/examples/data/messi5.jpg", "JPEG every batch item is a copy of")
	flag.StringVar(&o.batchSizes, "nodes", "3:3,3:1,2:1,1:1", "batch rounds in order, as nodes:replicas (1 node is a plain server)")
	flag.BoolVar(&o.skipRelay, "skip-relay", false, "skip the relay rounds")
	flag.BoolVar(&o.skipBatch, "skip-batch", false, "skip the batch rounds")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "clusterbench:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	dir, err := os.MkdirTemp("", "clusterbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	start := time.Now()
	// One 3-node cluster (replicas 3) serves the relay rounds and the
	// batch round of that shape: forming it is the slow part of a run.
	t0 := time.Now()
	nodes, err := startNodes(o.bin, filepath.Join(dir, "cluster"), cluster{size: 3, replicas: 3})
	if err != nil {
		return err
	}
	defer func() {
		for _, n := range nodes {
			n.stop()
		}
	}()
	fmt.Fprintf(o.out, "3 nodes (replicas 3) formed and ready in %s\n", time.Since(t0).Round(100*time.Millisecond))
	if !o.skipRelay {
		if err := relayRounds(o, dir, nodes); err != nil {
			return err
		}
	}
	if !o.skipBatch {
		if err := batchRounds(o, dir, nodes); err != nil {
			return err
		}
	}
	fmt.Fprintf(o.out, "\nwhole run: %s\n", time.Since(start).Round(time.Second))
	return nil
}

func listenTCP() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

// encodeClip makes the 10 s 1080p30 clip the publishers loop (as
// scripts/bench/rtsprelay does).
func encodeClip(o options, dir string) (string, error) {
	if o.clip != "" {
		return o.clip, nil
	}
	clip := filepath.Join(dir, "clip.mp4")
	fmt.Fprintf(o.out, "encoding a 10 s 1080p30 H264 clip at %s/s...\n", o.bitrate)
	out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30", "-t", "10",
		"-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-bf", "0", "-b:v", o.bitrate,
		"-maxrate", o.bitrate, "-bufsize", o.bitrate, "-pix_fmt", "yuv420p", clip).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("ffmpeg clip: %v: %s", err, out)
	}
	return clip, nil
}

// pct is 100 × cpu / wall.
func pct(cpu, wall time.Duration) float64 { return 100 * cpu.Seconds() / wall.Seconds() }

func joinf(vals []float64, format string) string {
	parts := make([]string, len(vals))
	for i, v := range vals {
		parts[i] = fmt.Sprintf(format, v)
	}
	return strings.Join(parts, " ")
}
