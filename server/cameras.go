package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/ingest"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// ErrPublisherBusy is returned when a publish camera already has a publisher.
var ErrPublisherBusy = errors.New("camera already has a publisher")

// sourceFactory builds the adapter of one source scheme.
type sourceFactory func(cam *busv1.Camera, sink ingest.Sink) (ingest.Source, error)

// supervisor runs one source per enabled camera and keeps every camera's
// live status.
type supervisor struct {
	s         *Server
	factories map[string]sourceFactory

	mu   sync.Mutex
	cams map[string]*camRun
	wg   sync.WaitGroup
}

type camRun struct {
	cam       *busv1.Camera
	sink      *ingest.BusSink
	cancel    context.CancelFunc
	done      chan struct{}
	published bool
	extras    []func() // per-camera live components (decoder, pipeline) to stop
	// liveReady is closed once extras is set: the live components start
	// beside the source, which waits for them at most liveStartWait.
	liveReady chan struct{}
}

// liveStartWait is how long a camera's source waits for its live
// components (decoder, pipeline, recording) to be in place before it starts
// anyway: they read the pipeline from its bucket's Raft leader, which may
// be electing for seconds after a node died, and video must not wait.
const liveStartWait = 500 * time.Millisecond

func newSupervisor(s *Server) *supervisor {
	return &supervisor{s: s, factories: s.sourceFactories(), cams: make(map[string]*camRun)}
}

func (sv *supervisor) startAll(ctx context.Context) error {
	cams, err := sv.s.cameras.list(ctx)
	if err != nil {
		return fmt.Errorf("cameras: %w", err)
	}
	for _, cam := range cams {
		sv.apply(cam)
	}
	return nil
}

// apply (re)starts a camera after it was created or changed.
func (sv *supervisor) apply(cam *busv1.Camera) {
	cam = cloneCamera(cam)
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if old := sv.cams[cam.Id]; old != nil {
		sv.stopLocked(old)
	}
	log := sv.s.Logger.With("camera", cam.Id)
	run := &camRun{cam: cam, done: make(chan struct{}), liveReady: make(chan struct{})}
	subjects := sv.s.bus.Subjects()
	nc := sv.s.bus.Conn()
	run.sink = ingest.NewBusSink(nc, subjects, cam.Id, func(st *busv1.CameraStatus) {
		log.Info("camera state", "state", st.State, "error", redactError(st.LastError, cam.Source))
		_ = bus.Publish(nc, subjects.Status(cam.Id), &busv1.CameraEvent{Camera: cam.Id, Status: st, UnixNano: time.Now().UnixNano()})
	})
	sv.cams[cam.Id] = run
	if !cam.Enabled {
		close(run.done)
		close(run.liveReady)
		return
	}
	// Ingested here: the hub keeps the camera's GOP for readers on every
	// node, whether or not this node has readers (bus/hub), fed by the sink
	// itself; the video crosses the bus only when someone else reads it.
	feed, release := sv.s.hub.KeepLocal(cam.Id)
	run.sink.FeedLocal(feed, sv.s.bus.Interest)
	go func() {
		run.extras = append(sv.s.startLive(cam), sv.s.startRecording(cam)...)
		run.extras = append(run.extras, release)
		close(run.liveReady)
	}()
	select {
	case <-run.liveReady:
	case <-time.After(liveStartWait):
		log.Warn("camera source starting before its live components are in place")
	}
	scheme := sourceScheme(cam.Source)
	if scheme == SourcePublish {
		close(run.done)
		return
	}
	factory := sv.factories[scheme]
	if factory == nil {
		run.sink.SetState(ingest.StateOffline, fmt.Errorf("%w: %s sources are not available in this build", ingest.ErrUnsupportedSource, scheme))
		close(run.done)
		return
	}
	src, err := factory(cam, run.sink)
	if err != nil {
		run.sink.SetState(ingest.StateOffline, err)
		close(run.done)
		return
	}
	ctx, cancel := context.WithCancel(sv.s.ctx)
	run.cancel = cancel
	sv.wg.Add(1)
	go func() {
		defer sv.wg.Done()
		defer close(run.done)
		if err := src.Run(ctx); err != nil && ctx.Err() == nil {
			log.Warn("camera source ended", "error", redactError(err.Error(), cam.Source))
			run.sink.SetState(ingest.StateOffline, err)
		}
	}()
}

func (sv *supervisor) stopLocked(run *camRun) {
	if run.cancel != nil {
		run.cancel()
	}
	<-run.done
	<-run.liveReady
	for _, stop := range run.extras {
		stop()
	}
	run.sink.SetState(ingest.StateOffline, nil)
}

// remove stops a deleted camera.
func (sv *supervisor) remove(id string) {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if run := sv.cams[id]; run != nil {
		sv.stopLocked(run)
		delete(sv.cams, id)
	}
}

// pipelineChanged restarts the cameras using a pipeline that was replaced.
func (sv *supervisor) pipelineChanged(pipeline string) {
	for _, cam := range sv.camerasUsing(pipeline) {
		sv.apply(cam)
	}
}

// camerasUsing lists the configurations of the cameras run here (enabled
// or not) whose pipeline is the given one.
func (sv *supervisor) camerasUsing(pipeline string) []*busv1.Camera {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	var cams []*busv1.Camera
	for _, run := range sv.cams {
		if run.cam.Pipeline == pipeline {
			cams = append(cams, run.cam)
		}
	}
	return cams
}

func (sv *supervisor) stopAll() {
	sv.mu.Lock()
	for id, run := range sv.cams {
		sv.stopLocked(run)
		delete(sv.cams, id)
	}
	sv.mu.Unlock()
	sv.wg.Wait()
}

func (sv *supervisor) status(id string) *busv1.CameraStatus {
	sv.mu.Lock()
	run := sv.cams[id]
	sv.mu.Unlock()
	if run == nil {
		return nil
	}
	return run.sink.Status()
}

// acquirePublisher hands the sink of a publish camera to one publisher (RTSP
// RECORD, WHIP, gRPC Publish) at a time; release frees it.
func (sv *supervisor) acquirePublisher(id string) (ingest.Sink, func(), error) {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	run := sv.cams[id]
	if run == nil {
		return nil, nil, fmt.Errorf("camera %q: %w", id, ErrNotFound)
	}
	if sourceScheme(run.cam.Source) != SourcePublish {
		return nil, nil, fmt.Errorf("%w: camera %q pulls its source; set its source to %q to publish to it", ErrInvalid, id, SourcePublish)
	}
	if !run.cam.Enabled {
		return nil, nil, fmt.Errorf("%w: camera %q is disabled", ErrInvalid, id)
	}
	if run.published {
		return nil, nil, fmt.Errorf("camera %q: %w", id, ErrPublisherBusy)
	}
	run.published = true
	run.sink.SetState(ingest.StateConnecting, nil)
	var once sync.Once
	release := func() {
		once.Do(func() {
			sv.mu.Lock()
			run.published = false
			sv.mu.Unlock()
			run.sink.SetState(ingest.StateOffline, nil)
		})
	}
	return run.sink, release, nil
}

var (
	camStateDesc   = prometheus.NewDesc("imageflow_camera_state", "1 for the camera's current state.", []string{"camera", "state"}, nil)
	camFPSDesc     = prometheus.NewDesc("imageflow_camera_fps", "Video frames per second received.", []string{"camera"}, nil)
	camBitrateDesc = prometheus.NewDesc("imageflow_camera_bitrate_bits", "Video bits per second received.", []string{"camera"}, nil)
	camFramesDesc  = prometheus.NewDesc("imageflow_camera_frames_total", "Video access units received.", []string{"camera"}, nil)
	camBytesDesc   = prometheus.NewDesc("imageflow_camera_bytes_total", "Video bytes received.", []string{"camera"}, nil)
)

// Describe implements prometheus.Collector.
func (sv *supervisor) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{camStateDesc, camFPSDesc, camBitrateDesc, camFramesDesc, camBytesDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector, reading state at scrape time.
func (sv *supervisor) Collect(ch chan<- prometheus.Metric) {
	sv.mu.Lock()
	runs := make([]*camRun, 0, len(sv.cams))
	for _, r := range sv.cams {
		runs = append(runs, r)
	}
	sv.mu.Unlock()
	for _, r := range runs {
		st := r.sink.Status()
		id := r.cam.Id
		for _, state := range []string{ingest.StateOffline, ingest.StateConnecting, ingest.StateOnline} {
			v := 0.0
			if st.State == state {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(camStateDesc, prometheus.GaugeValue, v, id, state)
		}
		frames, bytes := r.sink.Totals()
		ch <- prometheus.MustNewConstMetric(camFPSDesc, prometheus.GaugeValue, st.Fps, id)
		ch <- prometheus.MustNewConstMetric(camBitrateDesc, prometheus.GaugeValue, st.Bitrate, id)
		ch <- prometheus.MustNewConstMetric(camFramesDesc, prometheus.CounterValue, float64(frames), id)
		ch <- prometheus.MustNewConstMetric(camBytesDesc, prometheus.CounterValue, float64(bytes), id)
	}
}
