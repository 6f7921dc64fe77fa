// Package hub fans a camera's access units out from the bus to live readers
// (WHEP viewers, RTSP readers, decoders, recorders). One bus subscription for
// every camera's video is shared by all readers; each reader has its own
// bounded queue that drops and counts when the reader is slow, so a slow
// reader never holds up the camera or the other readers. The hub keeps each
// camera's latest group of pictures (from its last keyframe), so a viewer
// that joins starts decoding at once instead of waiting up to a GOP for the
// next keyframe. Audio is subscribed per camera while read; derived streams
// (transcodes) are fed in-process.
package hub

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/imageflowcanvas/imageflow/bus"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// ErrClosed is returned by Subscribe after Close.
var ErrClosed = errors.New("hub closed")

// MaxGOPBytes bounds the group of pictures kept per camera; a longer GOP is
// not kept (joiners then wait for the next keyframe).
const MaxGOPBytes = 8 << 20

// gopFresh is how old a camera's last access unit may be for its kept GOP to
// be handed to a joiner; an older one belongs to a camera that stopped.
const gopFresh = 5 * time.Second

// Hub owns the per-camera state and subscriptions.
type Hub struct {
	nc       *nats.Conn
	subjects bus.Subjects
	// videoPrefix is the subject of a camera's video without the camera.
	videoPrefix string
	videoSub    *nats.Subscription
	videoErr    error

	mu    sync.Mutex
	cams  map[string]*camera
	audio map[string]*camera
	// derived streams are made in this process (transcodes), not read
	// from the bus.
	derived   map[string]*camera
	closed    bool
	lastSweep time.Time

	// Dropped counts access units dropped for slow readers, all cameras.
	Dropped atomic.Uint64
	// OnDrop, when set before use, is called for each drop with the camera and
	// reader kind (for metrics).
	OnDrop func(camera, kind string)
}

type camera struct {
	id      string
	isAudio bool
	// isVideo marks a camera's bus video (kept while it sends, with its GOP).
	isVideo bool
	// sub is the audio subscription; nil for video and derived streams.
	sub     *nats.Subscription
	readers map[*Reader]struct{}
	// gop is the camera's latest keyframe and the access units after it
	// (video only), empty until a keyframe arrives or when the GOP outgrew
	// MaxGOPBytes.
	gop      []*busv1.AccessUnit
	gopBytes int
	// last is when the camera's last video access unit arrived.
	last time.Time
}

// New builds a hub reading every camera's video from nc.
func New(nc *nats.Conn, subjects bus.Subjects) *Hub {
	h := &Hub{nc: nc, subjects: subjects, videoPrefix: subjects.Video(""),
		cams: make(map[string]*camera), audio: make(map[string]*camera), derived: make(map[string]*camera)}
	if nc == nil {
		h.videoErr = nats.ErrInvalidConnection
		return h
	}
	sub, err := nc.Subscribe(subjects.Video("*"), func(m *nats.Msg) { h.deliverVideo(m.Subject, m.Data) })
	if err != nil {
		h.videoErr = err
		return h
	}
	// Video is bursty (keyframes); never let the client drop on our behalf.
	_ = sub.SetPendingLimits(-1, 256<<20)
	h.videoSub = sub
	return h
}

// Reader receives one camera's access units. The access units are shared with
// other readers and must be treated as read-only.
type Reader struct {
	hub    *Hub
	cam    *camera
	kind   string
	ch     chan *busv1.AccessUnit
	closed atomic.Bool
	// waitKey drops everything before the first keyframe, so decoders and
	// viewers always start on a decodable picture.
	waitKey bool
	dropped atomic.Uint64
}

// C delivers access units in order; it is closed when the reader or hub closes.
func (r *Reader) C() <-chan *busv1.AccessUnit { return r.ch }

// Dropped is how many access units this reader lost by being slow.
func (r *Reader) Dropped() uint64 { return r.dropped.Load() }

// Close detaches the reader; a second call does nothing.
func (r *Reader) Close() {
	if r.closed.Swap(true) {
		return
	}
	r.hub.remove(r)
}

// Subscribe attaches a reader to a camera's video with a queue of depth
// access units; it starts at the camera's next keyframe. kind names the
// reader in drop metrics ("whep", "rtsp", "decode").
func (h *Hub) Subscribe(cam, kind string, depth int) (*Reader, error) {
	return h.subscribeVideo(cam, kind, depth, false)
}

// SubscribeLatest is Subscribe starting at the camera's latest keyframe: the
// kept GOP is queued at once (the queue grows by its length), so a viewer
// starts decoding without waiting for the next keyframe. With no GOP kept
// (no keyframe yet, or the camera stopped) it starts at the next keyframe.
func (h *Hub) SubscribeLatest(cam, kind string, depth int) (*Reader, error) {
	return h.subscribeVideo(cam, kind, depth, true)
}

func (h *Hub) subscribeVideo(cam, kind string, depth int, latest bool) (*Reader, error) {
	if depth < 1 {
		depth = 1
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	if h.videoErr != nil {
		return nil, h.videoErr
	}
	c := h.videoCamera(cam)
	var gop []*busv1.AccessUnit
	if latest && time.Since(c.last) < gopFresh {
		gop = c.gop
	}
	r := &Reader{hub: h, cam: c, kind: kind, ch: make(chan *busv1.AccessUnit, depth+len(gop)), waitKey: len(gop) == 0}
	for _, au := range gop {
		r.ch <- au
	}
	c.readers[r] = struct{}{}
	return r, nil
}

// videoCamera returns cam's video state, creating it; h.mu is held.
func (h *Hub) videoCamera(cam string) *camera {
	c := h.cams[cam]
	if c == nil {
		c = &camera{id: cam, isVideo: true, readers: make(map[*Reader]struct{})}
		h.cams[cam] = c
	}
	return c
}

// SubscribeAudio attaches a reader to a camera's audio frames (every one
// starts decoding, so the reader starts at once). A camera without audio
// simply delivers nothing.
func (h *Hub) SubscribeAudio(cam, kind string, depth int) (*Reader, error) {
	if depth < 1 {
		depth = 1
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	if h.nc == nil {
		return nil, nats.ErrInvalidConnection
	}
	c := h.audio[cam]
	if c == nil {
		c = &camera{id: cam, isAudio: true, readers: make(map[*Reader]struct{})}
		sub, err := h.nc.Subscribe(h.subjects.Audio(cam), func(m *nats.Msg) { h.deliver(c, m.Data) })
		if err != nil {
			return nil, err
		}
		_ = sub.SetPendingLimits(-1, 256<<20)
		c.sub = sub
		h.audio[cam] = c
	}
	r := &Reader{hub: h, cam: c, kind: kind, ch: make(chan *busv1.AccessUnit, depth)}
	c.readers[r] = struct{}{}
	return r, nil
}

// SubscribeDerived attaches a reader to a stream made in this process from
// a camera (a transcode) under name; Deliver feeds its readers, which start
// on a keyframe like video readers.
func (h *Hub) SubscribeDerived(name, kind string, depth int) (*Reader, error) {
	if depth < 1 {
		depth = 1
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	c := h.derived[name]
	if c == nil {
		c = &camera{id: name, readers: make(map[*Reader]struct{})}
		h.derived[name] = c
	}
	r := &Reader{hub: h, cam: c, kind: kind, ch: make(chan *busv1.AccessUnit, depth), waitKey: true}
	c.readers[r] = struct{}{}
	return r, nil
}

// Deliver hands an access unit of a derived stream to its readers (none:
// it is dropped). au must not change afterwards.
func (h *Hub) Deliver(name string, au *busv1.AccessUnit) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if c := h.derived[name]; c != nil {
		h.fanOut(c, au)
	}
}

func (h *Hub) deliver(c *camera, data []byte) {
	au := &busv1.AccessUnit{}
	if err := bus.UnmarshalAccessUnit(data, au); err != nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fanOut(c, au)
}

// deliverVideo takes a camera's video access unit from the bus: it keeps
// the GOP and hands the access unit to the camera's readers.
func (h *Hub) deliverVideo(subject string, data []byte) {
	cam, ok := strings.CutPrefix(subject, h.videoPrefix)
	if !ok {
		return
	}
	au := &busv1.AccessUnit{}
	if err := bus.UnmarshalAccessUnit(data, au); err != nil {
		return
	}
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.sweep(now)
	c := h.videoCamera(cam)
	c.last = now
	c.keep(au)
	h.fanOut(c, au)
}

// fanOut queues au for c's readers; h.mu is held.
func (h *Hub) fanOut(c *camera, au *busv1.AccessUnit) {
	for r := range c.readers {
		if r.waitKey {
			if !au.Keyframe {
				continue
			}
			r.waitKey = false
		}
		select {
		case r.ch <- au:
		default:
			// Latest wins for a slow reader: it resumes at the next keyframe so
			// its decoder never sees a broken reference chain.
			r.dropped.Add(1)
			h.Dropped.Add(1)
			r.waitKey = !c.isAudio
			if h.OnDrop != nil {
				h.OnDrop(c.id, r.kind)
			}
		}
	}
}

// keep adds au to the camera's GOP: a keyframe starts a new one.
func (c *camera) keep(au *busv1.AccessUnit) {
	if au.Keyframe {
		c.dropGOP()
	} else if len(c.gop) == 0 {
		return
	}
	n := len(au.Data)
	for _, x := range au.Nalus {
		n += len(x)
	}
	if c.gopBytes+n > MaxGOPBytes {
		c.dropGOP()
		return
	}
	c.gop = append(c.gop, au)
	c.gopBytes += n
}

// dropGOP forgets the kept GOP, reusing its slice.
func (c *camera) dropGOP() {
	clear(c.gop)
	c.gop = c.gop[:0]
	c.gopBytes = 0
}

// sweep forgets, every few seconds, cameras that stopped sending video and
// have no readers, so their GOPs are not kept forever; h.mu is held.
func (h *Hub) sweep(now time.Time) {
	if now.Sub(h.lastSweep) < gopFresh {
		return
	}
	h.lastSweep = now
	for id, c := range h.cams {
		if len(c.readers) == 0 && now.Sub(c.last) > gopFresh {
			delete(h.cams, id)
		}
	}
}

func (h *Hub) remove(r *Reader) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := r.cam
	if _, ok := c.readers[r]; !ok {
		return
	}
	delete(c.readers, r)
	close(r.ch)
	if len(c.readers) == 0 {
		switch {
		case c.isVideo:
			// Kept with its GOP while the camera sends (sweep).
		case c.isAudio:
			_ = c.sub.Unsubscribe()
			delete(h.audio, c.id)
		default:
			delete(h.derived, c.id)
		}
	}
}

// Readers is the number of video readers attached to a camera.
func (h *Hub) Readers(cam string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if c := h.cams[cam]; c != nil {
		return len(c.readers)
	}
	return 0
}

// Close detaches every reader and unsubscribes.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	if h.videoSub != nil {
		_ = h.videoSub.Unsubscribe()
	}
	for _, cams := range []map[string]*camera{h.cams, h.audio, h.derived} {
		for id, c := range cams {
			if c.sub != nil {
				_ = c.sub.Unsubscribe()
			}
			for r := range c.readers {
				r.closed.Store(true)
				close(r.ch)
			}
			delete(cams, id)
		}
	}
}
