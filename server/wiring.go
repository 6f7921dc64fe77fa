package server

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imageflowcanvas/imageflow/bridge"
	"github.com/imageflowcanvas/imageflow/ingest"
	"github.com/imageflowcanvas/imageflow/ingest/file"
	"github.com/imageflowcanvas/imageflow/ingest/rtsp"
	"github.com/imageflowcanvas/imageflow/ingest/usb"
	iwebrtc "github.com/imageflowcanvas/imageflow/ingest/webrtc"
	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/processors/builtin"
	"github.com/imageflowcanvas/imageflow/processors/framesource"
	"github.com/imageflowcanvas/imageflow/processors/modelfiles"
	"github.com/imageflowcanvas/imageflow/processors/remote"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// This file is where concrete adapters and processors are wired in: the only
// place besides cmd/ that names them.

// registerBuiltins adds the built-in processors, reading model files only
// from modelsDir.
func registerBuiltins(r *processors.Registry, modelsDir string) {
	builtin.Register(r, builtin.WithModels(modelfiles.New(modelsDir)))
}

// remoteFactory builds the client of a grpc://host:port pipeline step; its
// failed attempts are counted per address.
func (s *Server) remoteFactory(addr string, params map[string]any) (processors.Processor, error) {
	return remote.NewClient(addr, remote.ClientOptions{
		Params:  params,
		OnError: func(err error) { s.metrics.remoteErrors.WithLabelValues(addr).Inc() },
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			return s.sources.hosts.DialContext(ctx, "tcp", addr)
		},
	})
}

// sourceFactories maps a source scheme to its ingest adapter.
func (s *Server) sourceFactories() map[string]sourceFactory {
	f := map[string]sourceFactory{
		"rtsp": func(cam *busv1.Camera, sink ingest.Sink) (ingest.Source, error) {
			return rtsp.NewSource(rtsp.SourceConfig{Camera: cam.Id, URL: cam.Source, Sink: sink,
				DialContext: s.sources.hosts.DialContext,
				Logger:      s.Logger.With("camera", cam.Id, "source", "rtsp")}), nil
		},
		"file": func(cam *busv1.Camera, sink ingest.Sink) (ingest.Source, error) {
			// Checked again at start: a camera stored before media_dirs
			// existed (or changed) must not read outside them.
			if _, err := s.sources.mediaFile(cam.Source); err != nil {
				return nil, err
			}
			return file.NewSource(file.Config{Camera: cam.Id, Path: cam.Source, Sink: sink,
				Logger: s.Logger.With("camera", cam.Id, "source", "file")})
		},
		"usb": func(cam *busv1.Camera, sink ingest.Sink) (ingest.Source, error) {
			return usb.NewSource(usb.Config{Camera: cam.Id, Device: cam.Source, Sink: sink,
				Logger: s.Logger.With("camera", cam.Id, "source", "usb")})
		},
	}
	f["rtsps"] = f["rtsp"]
	if s.webrtc != nil {
		// One client for every WHEP pull: its dialer applies deny_hosts
		// after DNS resolution, and no proxy from the environment gets
		// between that check and the camera.
		whepClient := &http.Client{Transport: &http.Transport{
			DialContext: s.sources.hosts.DialContext, DisableKeepAlives: true,
			TLSHandshakeTimeout: 10 * time.Second, IdleConnTimeout: 90 * time.Second,
		}}
		whep := func(cam *busv1.Camera, sink ingest.Sink) (ingest.Source, error) {
			return iwebrtc.NewWHEPSource(iwebrtc.WHEPSourceConfig{
				URL: cam.Source, Camera: cam.Id, Sink: sink, HTTPClient: whepClient,
				API: s.webrtc.ClientAPI(), Configuration: s.webrtc.Configuration(),
				Logger: s.Logger.With("camera", cam.Id, "source", "whep"),
			})
		}
		f["whep"], f["wheps"] = whep, whep
	}
	return f
}

// startLive starts a camera's processing: one decoder per camera publishing
// sampled frames, and its pipeline on them. It returns their stop functions.
func (s *Server) startLive(cam *busv1.Camera) []func() {
	if cam.Pipeline == "" && !cam.Archive {
		return nil
	}
	log := s.Logger.With("camera", cam.Id, "pipeline", cam.Pipeline)
	var stops []func()
	var deliver func(*busv1.Frame)
	if cam.Pipeline != "" && s.live != nil {
		// live_pipelines: shared: a worker runs it while one is up.
		stops = append(stops, s.live.offer(cam, s.pipelineRev(cam.Pipeline)))
	} else if cam.Pipeline != "" {
		if stop, offer := s.startPipeline(cam, log, ""); stop != nil {
			stops = append(stops, stop)
			deliver = offer
		}
	}
	if cam.Archive {
		a := &bridge.Archiver{Conn: s.bus.Conn(), Subjects: s.bus.Subjects(), Camera: cam.Id,
			Interval: s.Config.ArchiveInterval, Logger: log}
		if err := a.Start(); err != nil {
			log.Warn("archive not started", "error", err)
		} else {
			stops = append(stops, func() { a.Close() })
		}
	}
	// One decoder per camera feeds both the pipeline and the archive.
	frames := &framesource.Runner{
		Camera: cam.Id, Hub: s.hub, Conn: s.bus.Conn(), Subjects: s.bus.Subjects(),
		FPS: s.Config.DetectFPS, Width: s.Config.DetectWidth, Logger: log,
		Deliver: deliver, Interest: s.bus.Interest,
	}
	fctx, fcancel := context.WithCancel(s.ctx)
	done := make(chan struct{})
	s.decoders.register(cam.Id, &frames.Counters)
	go func() {
		defer close(done)
		if err := frames.Run(fctx); err != nil && fctx.Err() == nil {
			log.Warn("decoder stopped", "error", err)
		}
	}()
	return append([]func(){func() { fcancel(); <-done; s.decoders.unregister(cam.Id) }}, stops...)
}

// pipelineRev is the stored revision of a pipeline (0 when unreadable):
// a shared camera's runner restarts when it changes.
func (s *Server) pipelineRev(id string) uint64 {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	_, rev, _ := s.pipelines.get(ctx, id)
	return rev
}

// startPipeline runs a camera's pipeline on its sampled frames; with a
// queue group its runner shares each frame with the group's other members
// (live_pipelines: shared) over the bus instead of taking every one.
// Without, the runner takes its frames from offer, which the camera's
// frame source in this process calls.
func (s *Server) startPipeline(cam *busv1.Camera, log *slog.Logger, queue string) (stop func(), offer func(*busv1.Frame)) {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	p, _, err := s.pipelines.get(ctx, cam.Pipeline)
	cancel()
	if err != nil {
		log.Warn("pipeline not started", "error", err)
		return nil, nil
	}
	rec := s.newRecorder(cam, log)
	runner := &processors.LiveRunner{
		Camera: cam.Id, Pipeline: p, Registry: s.Registry,
		Conn: s.bus.Conn(), Subjects: s.bus.Subjects(), Metrics: s.procMetrics, Logger: log,
		Options: []processors.Option{processors.WithRemote(s.remoteFactory)},
		Queue:   queue, Node: s.Config.Node, Local: queue == "",
	}
	if rec != nil {
		runner.Observer = rec
	}
	if err := runner.Start(); err != nil {
		log.Warn("pipeline not started", "error", err)
		if rec != nil {
			rec.Close()
		}
		return nil, nil
	}
	return func() {
		_ = runner.Close()
		// After the runner: no Observe runs any more, open events end.
		if rec != nil {
			rec.Close()
		}
	}, runner.Offer
}

// startRTSP serves RTSP publishers and readers.
func (s *Server) startRTSP() error {
	if s.Config.RTSPAddr == "" {
		return nil
	}
	srv := &rtsp.Server{
		Address:     s.Config.RTSPAddr,
		UDPAddress:  s.Config.RTSPUDPAddr,
		ReadTimeout: s.Config.RTSPReadTimeout,
		Cameras:     rtspCameras{s},
		Hub:         s.hub,
		Publishers:  s.super.acquirePublisher,
		Logger:      s.Logger.With("component", "rtsp"),
		OnLatency:   func(cam string, d time.Duration) { s.metrics.rtspLatency.Observe(d.Seconds()) },
	}
	if s.authOn() {
		// RTSP clients carry the API token as the password (any user name):
		// rtsp://imageflow:<token>@host:8554/<camera>.
		srv.Authenticator = s.rtspAuth
	}
	if err := srv.Start(); err != nil {
		return err
	}
	s.rtsp = srv
	s.listen.RTSP = srv.Addr()
	if a := srv.UDPAddr(); a != "" {
		s.listen.RTSPUDP = a
	}
	return nil
}

// rtspCameras lets the RTSP server look cameras up in the store.
type rtspCameras struct{ s *Server }

func (r rtspCameras) LookupCamera(id string) (rtsp.CameraInfo, error) {
	ctx, cancel := context.WithTimeout(r.s.ctx, 5*time.Second)
	defer cancel()
	cam, _, err := r.s.cameras.get(ctx, id)
	if err != nil {
		return rtsp.CameraInfo{}, rtsp.ErrCameraNotFound
	}
	return rtsp.CameraInfo{Source: cam.Source, Enabled: cam.Enabled}, nil
}

// decoderCounters exports every camera decoder's counters at scrape time.
type decoderCounters struct {
	mu   sync.Mutex
	cams map[string]*framesource.Counters
}

func newDecoderCounters() *decoderCounters {
	return &decoderCounters{cams: map[string]*framesource.Counters{}}
}

func (d *decoderCounters) register(cam string, c *framesource.Counters) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cams[cam] = c
}

func (d *decoderCounters) unregister(cam string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.cams, cam)
}

var decoderDesc = prometheus.NewDesc("imageflow_decoder_frames_total", "Decoder activity per camera: decoded, published, skipped, errors.", []string{"camera", "event"}, nil)

func (d *decoderCounters) Describe(ch chan<- *prometheus.Desc) { ch <- decoderDesc }

func (d *decoderCounters) Collect(ch chan<- prometheus.Metric) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for cam, c := range d.cams {
		ch <- prometheus.MustNewConstMetric(decoderDesc, prometheus.CounterValue, float64(c.Decoded.Load()), cam, "decoded")
		ch <- prometheus.MustNewConstMetric(decoderDesc, prometheus.CounterValue, float64(c.Published.Load()), cam, "published")
		ch <- prometheus.MustNewConstMetric(decoderDesc, prometheus.CounterValue, float64(c.Skipped.Load()), cam, "skipped")
		ch <- prometheus.MustNewConstMetric(decoderDesc, prometheus.CounterValue, float64(c.Errors.Load()), cam, "errors")
	}
}
