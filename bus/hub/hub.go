// Package hub fans a camera's access units out from the bus to live readers
// (WHEP viewers, RTSP readers, decoders, recorders). The hub subscribes to a
// camera's video only while the camera has readers on this node or is
// ingested here (Keep), so in a cluster a camera's video crosses a route
// only to nodes where someone reads it; the subscription lingers a few
// seconds after the last reader so a page reload does not resubscribe. All
// readers of a camera share that subscription; each reader has its own
// bounded queue that drops and counts when the reader is slow, so a slow
// reader never holds up the camera or the other readers. The hub keeps each
// subscribed camera's latest group of pictures (from its last keyframe), so
// a viewer that joins starts decoding at once instead of waiting up to a GOP
// for the next keyframe; a hub that starts reading a camera asks the hubs
// already reading it (the ingest node's, at least) for their kept GOP on
// <prefix>.gop.<camera>. Audio is subscribed per camera while read; derived
// streams (transcodes) are fed in-process.
package hub

import (
	"context"
	"errors"
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

// DefaultLinger is how long a camera's video subscription stays after its
// last reader left and nothing keeps it.
const DefaultLinger = 3 * time.Second

const (
	// gopRequestTimeout bounds the wait for a peer's kept GOP; the readers
	// meanwhile start at the next live keyframe if one comes first.
	gopRequestTimeout = 2 * time.Second
	// gopCatchUp bounds how long a hub answering a GOP request waits for
	// the video it had queued before the request (see answerGOP).
	gopCatchUp = 500 * time.Millisecond
	// gopSlack is the extra queue room of a reader that joined while its
	// camera's GOP was being fetched from a peer: the GOP is queued on
	// arrival and its length was unknown when the queue was made.
	gopSlack = 512
)

// Hub owns the per-camera state and subscriptions.
type Hub struct {
	nc       *nats.Conn
	subjects bus.Subjects
	videoErr error

	// Linger, when set before use, replaces DefaultLinger.
	Linger time.Duration

	// ctx ends with Close and stops GOP requests in flight (wg).
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

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
	// isVideo marks a camera's bus video (kept while it sends, with its GOP).
	isVideo bool
	// sub is the camera's audio or video subscription; nil for derived
	// streams and for video fed in-process (local).
	sub *nats.Subscription
	// local counts KeepLocal holders: the camera is ingested in this
	// process and its video comes straight from the ingest, not from a bus
	// subscription.
	local int
	// gopSub answers peers' requests for the kept GOP (video only).
	gopSub  *nats.Subscription
	readers map[*Reader]struct{}
	// keeps counts Keep holders (the camera is ingested on this node).
	keeps int
	// linger unsubscribes the video after the last reader and keep left.
	linger *time.Timer
	// gop is the camera's latest keyframe and the access units after it
	// (video only), empty until a keyframe arrives or when the GOP outgrew
	// MaxGOPBytes.
	gop      []*busv1.AccessUnit
	gopBytes int
	// last is when the camera's last video access unit arrived.
	last time.Time
	// handled counts video messages whose delivery finished; answerGOP
	// waits on it for the messages queued before a request.
	handled atomic.Uint64
	// fetching is set while a peer's GOP is requested; pending holds the
	// live access units that arrived meanwhile without a keyframe (the
	// GOP's tail, to merge with the snapshot).
	fetching     bool
	pending      []*busv1.AccessUnit
	pendingBytes int
	// overlap holds a snapshot whose tail may still arrive live (the
	// peer answered before this node's copies came in): those are skipped.
	overlap []*busv1.AccessUnit
}

// New builds a hub reading cameras' video from nc on demand.
func New(nc *nats.Conn, subjects bus.Subjects) *Hub {
	h := &Hub{nc: nc, subjects: subjects,
		cams: make(map[string]*camera), audio: make(map[string]*camera), derived: make(map[string]*camera)}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	if nc == nil {
		h.videoErr = nats.ErrInvalidConnection
	}
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
	// wantGOP marks a reader that joined at the latest keyframe while its
	// camera's GOP was being fetched from a peer: it gets it on arrival.
	wantGOP bool
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
	c, err := h.videoCamera(cam, true)
	if err != nil {
		return nil, err
	}
	var gop []*busv1.AccessUnit
	if latest && time.Since(c.last) < gopFresh {
		gop = c.gop
	}
	room := depth + len(gop)
	wantGOP := latest && len(gop) == 0 && c.fetching
	if wantGOP {
		room = depth + gopSlack
	}
	r := &Reader{hub: h, cam: c, kind: kind, ch: make(chan *busv1.AccessUnit, room), waitKey: len(gop) == 0, wantGOP: wantGOP}
	for _, au := range gop {
		r.ch <- au
	}
	c.readers[r] = struct{}{}
	return r, nil
}

// Keep holds a camera's video subscription and GOP while the camera is
// ingested on this node, with or without readers here: readers joining on
// other nodes fetch the GOP from this node's hub. release ends the hold
// (a second call does nothing).
func (h *Hub) Keep(cam string) (release func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || h.videoErr != nil {
		return func() {}
	}
	c, err := h.videoCamera(cam, true)
	if err != nil {
		return func() {}
	}
	c.keeps++
	var once sync.Once
	return func() {
		once.Do(func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			c.keeps--
			h.idle(c)
		})
	}
}

// videoCamera returns cam's video state, subscribing to its video (when
// viaBus) and asking peers for its GOP when it is new; h.mu is held.
func (h *Hub) videoCamera(cam string, viaBus bool) (*camera, error) {
	if c := h.cams[cam]; c != nil {
		if c.linger != nil {
			c.linger.Stop()
			c.linger = nil
		}
		return c, nil
	}
	c := &camera{id: cam, isVideo: true, readers: make(map[*Reader]struct{})}
	if viaBus {
		if err := h.subscribeBusVideo(c); err != nil {
			return nil, err
		}
	}
	c.fetching = true
	h.cams[cam] = c
	h.wg.Add(1)
	go h.fetchGOP(c)
	return c, nil
}

// subscribeBusVideo subscribes c to its video on the bus; h.mu is held.
func (h *Hub) subscribeBusVideo(c *camera) error {
	sub, err := h.nc.Subscribe(h.subjects.Video(c.id), func(m *nats.Msg) {
		h.deliverVideo(c, m.Data, nil)
		c.handled.Add(1)
	})
	if err != nil {
		return err
	}
	// Video is bursty (keyframes); never let the client drop on our behalf.
	_ = sub.SetPendingLimits(-1, 256<<20)
	c.sub = sub
	return nil
}

// KeepLocal is Keep for a camera ingested in this process, whose video the
// ingest hands to the hub itself: feed takes one access unit marshalled
// (busv1.AccessUnit) into a buffer the hub then owns, and reports false
// after release (the caller then publishes on the bus as before). While
// fed, the hub holds no bus subscription for the camera's video, so the
// video crosses the bus only for someone else (peers, JetStream, other
// clients: see bus.Bus.Interest): the round trip through the NATS server
// and client cost a third of a relay's CPU. The ingest feeds an access
// unit before publishing it, so a GOP snapshot a peer asks for (sent after
// its interest) holds every access unit the peer does not get live.
func (h *Hub) KeepLocal(cam string) (feed func(data []byte) bool, release func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	off := func([]byte) bool { return false }
	if h.closed || h.videoErr != nil {
		return off, func() {}
	}
	// A new camera never subscribes: a SUB and UNSUB in flight would show
	// the server interest for the first access units (bus.Bus.Interest).
	c, err := h.videoCamera(cam, false)
	if err != nil {
		return off, func() {}
	}
	c.keeps++
	c.local++
	if c.sub != nil {
		_ = c.sub.Unsubscribe()
		c.sub = nil
	}
	// released is set under h.mu: deliverVideo checks it under h.mu, so
	// nothing fed after release reaches the readers twice.
	released := new(atomic.Bool)
	var once sync.Once
	feed = func(data []byte) bool {
		if released.Load() {
			return false
		}
		h.deliverVideo(c, data, released)
		c.handled.Add(1)
		return true
	}
	return feed, func() {
		once.Do(func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			released.Store(true)
			c.keeps--
			c.local--
			if c.local == 0 && c.sub == nil && !h.closed && h.cams[c.id] == c {
				// Readers stay: their video now comes over the bus (from
				// wherever the camera is ingested next).
				_ = h.subscribeBusVideo(c)
			}
			h.idle(c)
		})
	}
}

// idle starts the linger of a video camera nobody reads or keeps; h.mu is
// held.
func (h *Hub) idle(c *camera) {
	if len(c.readers) > 0 || c.keeps > 0 || h.closed || h.cams[c.id] != c || c.linger != nil {
		return
	}
	d := h.Linger
	if d <= 0 {
		d = DefaultLinger
	}
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if c.linger != t || h.cams[c.id] != c || len(c.readers) > 0 || c.keeps > 0 {
			return
		}
		h.dropVideo(c)
	})
	c.linger = t
}

// dropVideo unsubscribes a camera's video and forgets it; h.mu is held.
func (h *Hub) dropVideo(c *camera) {
	if c.linger != nil {
		c.linger.Stop()
		c.linger = nil
	}
	if c.sub != nil {
		_ = c.sub.Unsubscribe()
	}
	if c.gopSub != nil {
		_ = c.gopSub.Unsubscribe()
	}
	c.dropGOP()
	c.pending, c.overlap = nil, nil
	delete(h.cams, c.id)
}

// Subscribed reports whether the hub holds cam's video subscription.
func (h *Hub) Subscribed(cam string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cams[cam] != nil
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

// deliverVideo takes a camera's video access unit from the bus, or from a
// local feed until released is set: it keeps the GOP and hands the access
// unit to the camera's readers.
func (h *Hub) deliverVideo(c *camera, data []byte, released *atomic.Bool) {
	au := &busv1.AccessUnit{}
	if err := bus.UnmarshalAccessUnit(data, au); err != nil {
		return
	}
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || h.cams[c.id] != c || released != nil && released.Load() {
		return
	}
	c.last = now
	if len(c.overlap) > 0 {
		if containsAU(c.overlap, au) {
			// Readers that took the snapshot had it; one still waiting for a
			// keyframe may start on it.
			if au.Keyframe {
				for r := range c.readers {
					if r.waitKey {
						r.waitKey = false
						h.queue(c, r, au)
					}
				}
			}
			return
		}
		c.overlap = nil
	}
	if c.fetching && len(c.gop) == 0 && !au.Keyframe {
		c.pending = append(c.pending, au)
		c.pendingBytes += auBytes(au)
		if c.pendingBytes > MaxGOPBytes {
			clear(c.pending)
			c.pending, c.pendingBytes = nil, 0
		}
	}
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
		h.queue(c, r, au)
	}
}

// queue hands au to r or drops it when r's queue is full; h.mu is held.
func (h *Hub) queue(c *camera, r *Reader, au *busv1.AccessUnit) {
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

// keep adds au to the camera's GOP: a keyframe starts a new one.
func (c *camera) keep(au *busv1.AccessUnit) {
	if au.Keyframe {
		c.dropGOP()
	} else if len(c.gop) == 0 {
		return
	}
	n := auBytes(au)
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
			h.idle(c)
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
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	h.cancel()
	for _, cams := range []map[string]*camera{h.cams, h.audio, h.derived} {
		for id, c := range cams {
			if c.linger != nil {
				c.linger.Stop()
			}
			if c.sub != nil {
				_ = c.sub.Unsubscribe()
			}
			if c.gopSub != nil {
				_ = c.gopSub.Unsubscribe()
			}
			for r := range c.readers {
				r.closed.Store(true)
				close(r.ch)
			}
			delete(cams, id)
		}
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// auBytes is the payload size of an access unit.
func auBytes(au *busv1.AccessUnit) int {
	n := len(au.Data)
	for _, x := range au.Nalus {
		n += len(x)
	}
	return n
}
