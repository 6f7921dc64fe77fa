package server

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// cameraIndex knows which cameras exist from a watch of the cameras
// bucket, so a WHEP join learns it without a read from the bucket's Raft
// leader: with 50 viewers joining at once those reads queued in JetStream's
// API workers and were half of each answer's time (p50 50 ms). It answers
// only "yes"; a camera it does not know (created a moment ago, or the watch
// not running) is read from the bucket as before. A camera deleted through
// this node's API is forgotten before the DELETE returns; one deleted on
// another node a moment ago, until the watch delivers that, may still be
// joined, as it could be by a join whose read came just before the delete.
type cameraIndex struct {
	mu    sync.RWMutex
	ids   map[string]struct{}
	ready bool
}

// cameraRewatch is how long the index waits before watching again after
// its watch failed or ended (a bucket electing its Raft leader).
const cameraRewatch = time.Second

// has reports whether the camera is known to exist; false means "ask the
// bucket".
func (x *cameraIndex) has(id string) bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	_, ok := x.ids[id]
	return x.ready && ok
}

// forget drops a camera deleted through this node.
func (x *cameraIndex) forget(id string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	delete(x.ids, id)
}

// reset empties the index and marks it unready (its watch ended: updates
// may be missed until the next watch has delivered the bucket again).
func (x *cameraIndex) reset() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.ids, x.ready = nil, false
}

// run watches kv until ctx ends.
func (x *cameraIndex) run(ctx context.Context, kv jetstream.KeyValue) {
	for ctx.Err() == nil {
		if w, err := kv.WatchAll(ctx); err == nil {
			x.follow(ctx, w)
			_ = w.Stop()
		}
		x.reset()
		select {
		case <-ctx.Done():
		case <-time.After(cameraRewatch):
		}
	}
}

// follow applies the watch's entries until ctx or the watch ends; the index
// is ready once the watch has delivered every camera there was.
func (x *cameraIndex) follow(ctx context.Context, w jetstream.KeyWatcher) {
	ids := map[string]struct{}{}
	initial := true
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				// The initial values are in.
				x.mu.Lock()
				x.ids, x.ready = ids, true
				x.mu.Unlock()
				initial = false
				continue
			}
			if initial {
				if e.Operation() == jetstream.KeyValuePut {
					ids[e.Key()] = struct{}{}
				} else {
					delete(ids, e.Key())
				}
				continue
			}
			x.mu.Lock()
			if e.Operation() == jetstream.KeyValuePut {
				x.ids[e.Key()] = struct{}{}
			} else {
				delete(x.ids, e.Key())
			}
			x.mu.Unlock()
		}
	}
}
