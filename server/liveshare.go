package server

import (
	"context"
	"encoding/json"
	"hash/fnv"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/imageflowcanvas/imageflow/bus"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// Live pipelines shared with workers (docs/cluster.md, "Adding a worker").
//
// A camera's decoder always runs on its ingest node and publishes sampled
// frames on <prefix>.frames.<cam>. With live_pipelines: shared the ingest
// node offers the camera's pipeline in its beat on <prefix>.live.pool, and
// every `imageflow worker` beats there too. Each process picks the same
// runner for a camera from the beats it heard lately: the live worker with
// the highest rendezvous hash of (camera, worker), or the ingest node when
// no worker is up. So a camera's frames go to one pipeline at a time (its
// motion background and tracks stay in one process), and a camera moves
// only when the set of workers changes, and then only the cameras of the
// worker that came or went. Runners of shared cameras subscribe in one
// queue group: while a camera moves (each process acts on its own view, up
// to a beat apart) every frame still goes to one of them, never two.
const (
	// livePoolBeat is how often a node tells the pool what it offers or
	// that it works.
	livePoolBeat = time.Second
	// livePoolStale drops a node not heard for this long (a killed worker:
	// its cameras go to the next worker or back to their ingest node).
	livePoolStale = 3 * time.Second
	// liveQueueGroup is the frames queue group of shared pipelines.
	liveQueueGroup = "ifc-live"
	// livePoolMaxBeat bounds a beat the pool reads (a beat lists cameras).
	livePoolMaxBeat = 1 << 20
	// liveRetryAfter spaces the attempts to start a pipeline that failed.
	liveRetryAfter = 10 * time.Second
)

// livePoolSubject is where nodes beat; not a JetStream subject.
func livePoolSubject(s bus.Subjects) string { return s.Prefix + ".live.pool" }

// poolBeat is one node's message on the pool subject.
type poolBeat struct {
	Node string `json:"node"`
	// Worker: the node runs shared cameras' pipelines.
	Worker bool `json:"worker,omitempty"`
	// Leaving: a clean stop; others act at once instead of after
	// livePoolStale.
	Leaving bool `json:"leaving,omitempty"`
	// Shared are the cameras the node ingests and lets a worker process.
	Shared []sharedLive `json:"shared,omitempty"`
}

// sharedLive is a camera offered to the pool.
type sharedLive struct {
	Camera string `json:"camera"`
	// Version changes when the camera or its pipeline changes, so the
	// runner restarts with the new one.
	Version string `json:"version"`
}

type heardBeat struct {
	beat poolBeat
	at   time.Time
}

// offeredCam is a camera this node ingests and shares.
type offeredCam struct {
	cam     *busv1.Camera
	version string
}

type liveRun struct {
	version string
	stop    func()
}

// liveShare runs the pool on one node: an ingest node with live_pipelines:
// shared, or a worker.
type liveShare struct {
	s       *Server
	worker  bool
	node    string
	subject string
	log     *slog.Logger

	mu      sync.Mutex
	offered map[string]offeredCam
	heard   map[string]heardBeat

	// runMu orders the starts and stops of runs (the pool loop and a
	// camera's stop on this node).
	runMu   sync.Mutex
	running map[string]*liveRun
	// failed holds back a camera whose pipeline did not start here (a
	// model missing on this worker, the store unreachable) for
	// liveRetryAfter, so the log says it once per retry, not every beat.
	failed map[string]time.Time

	sub    *nats.Subscription
	kick   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

func newLiveShare(s *Server, worker bool) *liveShare {
	return &liveShare{s: s, worker: worker, node: s.Config.Node, subject: livePoolSubject(s.bus.Subjects()),
		log:     s.Logger.With("component", "livepool"),
		offered: map[string]offeredCam{}, heard: map[string]heardBeat{}, running: map[string]*liveRun{}, failed: map[string]time.Time{},
		kick: make(chan struct{}, 1), done: make(chan struct{})}
}

func (l *liveShare) start() error {
	sub, err := l.s.bus.Conn().Subscribe(l.subject, l.onBeat)
	if err != nil {
		return err
	}
	l.sub = sub
	ctx, cancel := context.WithCancel(l.s.ctx)
	l.cancel = cancel
	go l.loop(ctx)
	return nil
}

// onBeat records another node's beat; bad ones are ignored (the subject
// is open to every client of the bus).
func (l *liveShare) onBeat(m *nats.Msg) {
	if len(m.Data) > livePoolMaxBeat {
		return
	}
	var b poolBeat
	if json.Unmarshal(m.Data, &b) != nil || bus.ValidateToken(b.Node) != nil || b.Node == l.node {
		return
	}
	valid := b.Shared[:0]
	for _, c := range b.Shared {
		if bus.ValidateToken(c.Camera) == nil {
			valid = append(valid, c)
		}
	}
	b.Shared = valid
	l.mu.Lock()
	prev, known := l.heard[b.Node]
	l.heard[b.Node] = heardBeat{beat: b, at: time.Now()}
	l.mu.Unlock()
	// A worker that comes or goes, or a new offer, is acted on now.
	if !known || b.Leaving || prev.beat.Worker != b.Worker || len(prev.beat.Shared) != len(b.Shared) {
		l.wake()
	}
}

func (l *liveShare) wake() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

func (l *liveShare) loop(ctx context.Context) {
	defer close(l.done)
	t := time.NewTicker(livePoolBeat)
	defer t.Stop()
	for {
		l.beat(false)
		l.reconcile(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-l.kick:
		}
	}
}

func (l *liveShare) beat(leaving bool) {
	b := poolBeat{Node: l.node, Worker: l.worker, Leaving: leaving}
	l.mu.Lock()
	for _, o := range l.offered {
		b.Shared = append(b.Shared, sharedLive{Camera: o.cam.Id, Version: o.version})
	}
	l.mu.Unlock()
	if leaving {
		b.Shared = nil
	}
	data, _ := json.Marshal(b)
	_ = l.s.bus.Conn().Publish(l.subject, data)
}

// offer shares a camera this node ingests; the returned function takes it
// back (the camera stops here) and stops its pipeline if it ran here.
func (l *liveShare) offer(cam *busv1.Camera, pipelineRev uint64) func() {
	version := strconv.FormatInt(cam.UpdatedUnixNano, 10) + "/" + strconv.FormatUint(pipelineRev, 10)
	l.mu.Lock()
	l.offered[cam.Id] = offeredCam{cam: cam, version: version}
	l.mu.Unlock()
	l.wake()
	return func() {
		l.mu.Lock()
		if o, ok := l.offered[cam.Id]; ok && o.version == version {
			delete(l.offered, cam.Id)
		}
		l.mu.Unlock()
		l.stopRun(cam.Id, version)
		l.wake()
	}
}

// liveWorkers names the workers heard lately, this node included when it
// is one, sorted.
func (l *liveShare) liveWorkers(now time.Time) []string {
	var out []string
	if l.worker {
		out = append(out, l.node)
	}
	for n, h := range l.heard {
		if h.beat.Worker && !h.beat.Leaving && now.Sub(h.at) < livePoolStale {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// chooseWorker is the worker that runs a shared camera: the highest
// rendezvous hash, so every node that heard the same workers agrees, and a
// worker coming or going moves only its own share of the cameras.
func chooseWorker(cam string, workers []string) string {
	best, bestH := "", uint64(0)
	for _, w := range workers {
		h := fnv.New64a()
		_, _ = h.Write([]byte(cam))
		_, _ = h.Write([]byte{0})
		_, _ = h.Write([]byte(w))
		if v := mix64(h.Sum64()); best == "" || v > bestH {
			best, bestH = w, v
		}
	}
	return best
}

// mix64 spreads FNV's last bytes over every bit (splitmix64's finalizer):
// worker names differing only in their last character would otherwise
// compare by their low bits alone and share the cameras unevenly.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// reconcile starts the pipelines this node should run and stops the rest.
func (l *liveShare) reconcile(ctx context.Context) {
	now := time.Now()
	want := map[string]offeredCam{}
	l.mu.Lock()
	workers := l.liveWorkers(now)
	if l.worker {
		for n, h := range l.heard {
			if h.beat.Leaving || now.Sub(h.at) >= livePoolStale {
				if now.Sub(h.at) >= 10*livePoolStale {
					delete(l.heard, n)
				}
				continue
			}
			for _, c := range h.beat.Shared {
				if chooseWorker(c.Camera, workers) == l.node {
					want[c.Camera] = offeredCam{version: c.Version}
				}
			}
		}
	} else {
		for id, o := range l.offered {
			if len(workers) == 0 {
				want[id] = o
			}
		}
	}
	l.mu.Unlock()

	l.runMu.Lock()
	defer l.runMu.Unlock()
	for id, r := range l.running {
		if w, ok := want[id]; !ok || w.version != r.version {
			r.stop()
			delete(l.running, id)
			l.log.Info("live pipeline handed over", "camera", id, "workers", workers)
		}
	}
	for key, at := range l.failed {
		if now.Sub(at) >= liveRetryAfter {
			delete(l.failed, key)
		}
	}
	for id, w := range want {
		if l.running[id] != nil || ctx.Err() != nil || !l.failed[id+"/"+w.version].IsZero() {
			continue
		}
		cam := w.cam
		if cam == nil {
			// A worker reads the camera (pipeline, zones) from the store.
			gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			c, _, err := l.s.cameras.get(gctx, id)
			cancel()
			if err != nil || c.Pipeline == "" {
				l.log.Warn("shared camera not readable", "camera", id, "error", err)
				l.failed[id+"/"+w.version] = now
				continue
			}
			cam = c
		}
		stop, _ := l.s.startPipeline(cam, l.s.Logger.With("camera", id, "pipeline", cam.Pipeline), liveQueueGroup)
		if stop == nil {
			l.failed[id+"/"+w.version] = now
			continue
		}
		l.running[id] = &liveRun{version: w.version, stop: stop}
		l.log.Info("live pipeline runs here", "camera", id, "workers", workers)
	}
}

// stopRun stops a camera's pipeline here if it runs the given version.
func (l *liveShare) stopRun(id, version string) {
	l.runMu.Lock()
	defer l.runMu.Unlock()
	if r := l.running[id]; r != nil && r.version == version {
		r.stop()
		delete(l.running, id)
	}
}

// runningHere lists the cameras whose shared pipeline runs in this process.
func (l *liveShare) runningHere() []string {
	l.runMu.Lock()
	defer l.runMu.Unlock()
	out := make([]string, 0, len(l.running))
	for id := range l.running {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// stop leaves the pool: a last beat says so, so others take this node's
// cameras at once, then every pipeline here stops.
func (l *liveShare) stop() {
	if l.cancel == nil {
		return
	}
	l.cancel()
	<-l.done
	l.beat(true)
	_ = l.s.bus.Conn().Flush()
	if l.sub != nil {
		_ = l.sub.Unsubscribe()
	}
	l.runMu.Lock()
	defer l.runMu.Unlock()
	for id, r := range l.running {
		r.stop()
		delete(l.running, id)
	}
}
