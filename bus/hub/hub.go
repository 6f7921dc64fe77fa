// Package hub fans a camera's access units out from the bus to live readers
// (WHEP viewers, RTSP readers, decoders). One bus subscription per camera is
// shared by all its readers; each reader has its own bounded queue that drops
// and counts when the reader is slow, so a slow reader never holds up the
// camera or the other readers.
package hub

import (
	"errors"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/bus"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// ErrClosed is returned by Subscribe after Close.
var ErrClosed = errors.New("hub closed")

// Hub owns the per-camera subscriptions.
type Hub struct {
	nc       *nats.Conn
	subjects bus.Subjects

	mu    sync.Mutex
	cams  map[string]*camera
	audio map[string]*camera
	// derived streams are made in this process (transcodes), not read
	// from the bus.
	derived map[string]*camera
	closed  bool

	// Dropped counts access units dropped for slow readers, all cameras.
	Dropped atomic.Uint64
	// OnDrop, when set before use, is called for each drop with the camera and
	// reader kind (for metrics).
	OnDrop func(camera, kind string)
}

type camera struct {
	id      string
	isAudio bool
	// sub is nil for a derived stream.
	sub     *nats.Subscription
	readers map[*Reader]struct{}
}

// New builds a hub reading from nc.
func New(nc *nats.Conn, subjects bus.Subjects) *Hub {
	return &Hub{nc: nc, subjects: subjects, cams: make(map[string]*camera), audio: make(map[string]*camera), derived: make(map[string]*camera)}
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
	// viewers always start on a decodable picture; a late joiner therefore
	// starts within one GOP.
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
// access units. kind names the reader in drop metrics ("whep", "rtsp",
// "decode").
func (h *Hub) Subscribe(cam, kind string, depth int) (*Reader, error) {
	return h.subscribe(cam, kind, depth, false)
}

// SubscribeAudio attaches a reader to a camera's audio frames (every one
// starts decoding, so the reader starts at once). A camera without audio
// simply delivers nothing.
func (h *Hub) SubscribeAudio(cam, kind string, depth int) (*Reader, error) {
	return h.subscribe(cam, kind, depth, true)
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
	c := h.derived[name]
	h.mu.Unlock()
	if c != nil {
		h.deliverAU(c, au)
	}
}

func (h *Hub) subscribe(cam, kind string, depth int, audio bool) (*Reader, error) {
	if depth < 1 {
		depth = 1
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	cams, subject := h.cams, h.subjects.Video(cam)
	if audio {
		cams, subject = h.audio, h.subjects.Audio(cam)
	}
	c := cams[cam]
	if c == nil {
		c = &camera{id: cam, isAudio: audio, readers: make(map[*Reader]struct{})}
		sub, err := h.nc.Subscribe(subject, func(m *nats.Msg) { h.deliver(c, m.Data) })
		if err != nil {
			return nil, err
		}
		// Video is bursty (keyframes); never let the client drop on our behalf.
		_ = sub.SetPendingLimits(-1, 256<<20)
		c.sub = sub
		cams[cam] = c
	}
	r := &Reader{hub: h, cam: c, kind: kind, ch: make(chan *busv1.AccessUnit, depth), waitKey: !audio}
	c.readers[r] = struct{}{}
	return r, nil
}

func (h *Hub) deliver(c *camera, data []byte) {
	au := &busv1.AccessUnit{}
	if err := proto.Unmarshal(data, au); err != nil {
		return
	}
	h.deliverAU(c, au)
}

func (h *Hub) deliverAU(c *camera, au *busv1.AccessUnit) {
	h.mu.Lock()
	defer h.mu.Unlock()
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
			r.waitKey = true
			if h.OnDrop != nil {
				h.OnDrop(c.id, r.kind)
			}
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
		case c.sub == nil:
			delete(h.derived, c.id)
		case c.isAudio:
			_ = c.sub.Unsubscribe()
			delete(h.audio, c.id)
		default:
			_ = c.sub.Unsubscribe()
			delete(h.cams, c.id)
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
