package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
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

func (l *latencies) setOn(on bool) {
	l.mu.Lock()
	l.on = on
	l.mu.Unlock()
}

func (l *latencies) sorted() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return sortedCopy(l.all)
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

// inproc runs bus + hub + rtsp.Server in this process, wired like
// `imageflow serve` wires them (same VIDEO window).
type inproc struct {
	b     *bus.Bus
	h     *hub.Hub
	srv   *rtsp.Server
	mu    sync.Mutex
	sinks map[string]*ingest.BusSink
	lat   *latencies // access unit complete (last packet in) -> queued to readers
	asm   *latencies // first packet -> last packet of an access unit
}

func startInproc(dir string, ids []string, window time.Duration) (*inproc, error) {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	t := &inproc{sinks: map[string]*ingest.BusSink{}, lat: &latencies{}, asm: &latencies{}}
	t.b = &bus.Bus{Config: bus.Config{DataDir: dir, Logger: log, VideoWindow: window}}
	if err := t.b.Start(context.Background()); err != nil {
		return nil, err
	}
	t.h = hub.New(t.b.Conn(), t.b.Subjects())
	cams := cameras{}
	for _, id := range ids {
		cams[id] = rtsp.CameraInfo{Source: rtsp.SourcePublish, Enabled: true}
	}
	t.srv = &rtsp.Server{
		Address: "127.0.0.1:0",
		Cameras: cams,
		Hub:     t.h,
		Logger:  log,
		Publishers: func(id string) (ingest.Sink, func(), error) {
			t.mu.Lock()
			defer t.mu.Unlock()
			s := ingest.NewBusSink(t.b.Conn(), t.b.Subjects(), id, nil)
			// As serve's camera supervisor: the hub keeps the camera and
			// is fed by the sink.
			feed, release := t.h.KeepLocal(id)
			s.FeedLocal(feed, t.b.Interest)
			t.sinks[id] = s
			return timedSink{Sink: s, lat: t.asm}, release, nil
		},
		OnLatency: t.lat.add,
	}
	if err := t.srv.Start(); err != nil {
		t.h.Close()
		t.b.Close()
		return nil, err
	}
	return t, nil
}

func (t *inproc) rtspAddr() string { return t.srv.Addr() }

func (t *inproc) online(id string) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := t.sinks[id]; s != nil && s.Status().State == ingest.StateOnline {
		return 1, nil
	}
	return 0, nil
}

func (t *inproc) cpu() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (t *inproc) mem() (rss, hwm int) { return memKB("/proc/self/status") }

func (t *inproc) window(on bool) {
	t.lat.setOn(on)
	t.asm.setOn(on)
}

func (t *inproc) report(w io.Writer) {
	lat, asm := t.lat.sorted(), t.asm.sorted()
	fmt.Fprintf(w, "added latency:  p50 %v  p99 %v  max %v  (%d access units; access unit complete (last packet in) -> packets queued to readers)\n",
		rnd(pct(lat, .5)), rnd(pct(lat, .99)), rnd(pct(lat, 1)), len(lat))
	fmt.Fprintf(w, "  of which AU arrival (first -> last packet, sender pacing): p50 %v  p99 %v\n",
		rnd(pct(asm, .5)), rnd(pct(asm, .99)))
	fmt.Fprintf(w, "hub drops:      %d\n", t.h.Dropped.Load())
}

func (t *inproc) close() {
	t.srv.Close()
	t.h.Close()
	t.b.Close()
}

func rnd(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }

// memKB reads VmRSS and VmHWM from a /proc/<pid>/status file.
func memKB(path string) (rss, hwm int) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "VmRSS:":
			rss = n
		case "VmHWM:":
			hwm = n
		}
	}
	return rss, hwm
}
