package record

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// index is the segment index: the KV bucket is the durable copy, the map
// answers queries without reading the bucket.
type index struct {
	kv jetstream.KeyValue

	mu   sync.Mutex
	cams map[string][]Segment // sorted by Start
	// revs is the bucket revision of each key as last applied (removed for
	// a key this server purged until the watch delivers the purge), so a
	// late watch delivery never undoes a newer local write.
	revs map[string]uint64
	// applied is the last bucket revision the watch delivered.
	applied uint64
}

// catchUpLimit is how long a query waits for the watch to deliver what
// the bucket already holds.
const catchUpLimit = 10 * time.Second

// removed marks a key purged here whose purge the watch has not delivered.
const removed = math.MaxUint64

func newIndex(kv jetstream.KeyValue) *index {
	return &index{kv: kv, cams: map[string][]Segment{}, revs: map[string]uint64{}}
}

// load reads every entry of the bucket.
func (ix *index) load(ctx context.Context) ([]Segment, error) {
	w, err := ix.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("recordings index: %w", err)
	}
	defer func() { _ = w.Stop() }()
	var out []Segment
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e := <-w.Updates():
			if e == nil { // the initial values are all delivered
				return out, nil
			}
			var s Segment
			if err := json.Unmarshal(e.Value(), &s); err != nil || s.Camera == "" {
				// An entry we cannot read names no blobs we could find; drop it.
				_ = ix.kv.Purge(ctx, e.Key())
				continue
			}
			out = append(out, s)
		}
	}
}

// put stores s durably, then in memory.
func (ix *index) put(ctx context.Context, s Segment) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	rev, err := ix.kv.Put(ctx, s.kvKey(), b)
	if err != nil {
		return fmt.Errorf("recordings index put %s: %w", s.kvKey(), err)
	}
	ix.remember(s, rev)
	return nil
}

// remember inserts or replaces s, stored at revision rev, in memory unless
// a newer revision of it is there already.
func (ix *index) remember(s Segment, rev uint64) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	key := s.kvKey()
	if rev < ix.revs[key] {
		return
	}
	ix.revs[key] = rev
	segs := ix.cams[s.Camera]
	i := sort.Search(len(segs), func(i int) bool { return !segs[i].Start.Before(s.Start) })
	if i < len(segs) && segs[i].Start.Equal(s.Start) {
		segs[i] = s
		return
	}
	segs = append(segs, Segment{})
	copy(segs[i+1:], segs[i:])
	segs[i] = s
	ix.cams[s.Camera] = segs
}

// remove purges s from the bucket, then from memory.
func (ix *index) remove(ctx context.Context, s Segment) error {
	if err := ix.kv.Purge(ctx, s.kvKey()); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("recordings index delete %s: %w", s.kvKey(), err)
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.revs[s.kvKey()] = removed
	ix.forgetLocked(s)
	return nil
}

// forgetLocked removes the segment of s's camera starting at s.Start from
// memory.
func (ix *index) forgetLocked(s Segment) {
	segs := ix.cams[s.Camera]
	for i := range segs {
		if segs[i].Start.Equal(s.Start) {
			ix.cams[s.Camera] = append(segs[:i], segs[i+1:]...)
			break
		}
	}
	if len(ix.cams[s.Camera]) == 0 {
		delete(ix.cams, s.Camera)
	}
}

// follow keeps the in-memory copy current with the bucket: entries other
// servers write (the new owner of a camera that moved in a cluster) and
// deletions they make. It starts with every current value, so anything
// written between load and follow is not missed; a stale delivery of our
// own write is ignored (see revs).
func (ix *index) follow(ctx context.Context, log *slog.Logger) error {
	w, err := ix.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("recordings index watch: %w", err)
	}
	go func() {
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					log.Warn("recordings index watch ended")
					return
				}
				if e == nil {
					continue
				}
				ix.apply(e)
				ix.mu.Lock()
				ix.applied = max(ix.applied, e.Revision())
				ix.mu.Unlock()
			}
		}
	}()
	return nil
}

// catchUp waits, at most catchUpLimit, until the watch has delivered every
// entry the bucket held when it was called, and reports whether it did.
// Other nodes' segments reach this copy only through the watch, and after a
// cluster node dies the watch's consumer is recreated, which takes seconds:
// an export in that time would miss the segments the new owner wrote.
func (ix *index) catchUp(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, catchUpLimit)
	defer cancel()
	st, err := ix.kv.Status(ctx)
	if err != nil {
		return false
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok || bs.StreamInfo() == nil {
		return false
	}
	target := bs.StreamInfo().State.LastSeq
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ix.mu.Lock()
		done := ix.applied >= target
		ix.mu.Unlock()
		if done {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}

// apply records one watched entry in memory.
func (ix *index) apply(e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		cam, id, found := strings.Cut(e.Key(), ".")
		ns, err := strconv.ParseInt(id, 10, 64)
		if found && err == nil {
			ix.mu.Lock()
			delete(ix.revs, e.Key())
			ix.forgetLocked(Segment{Camera: cam, Start: time.Unix(0, ns)})
			ix.mu.Unlock()
		}
		return
	}
	var s Segment
	if err := json.Unmarshal(e.Value(), &s); err != nil || s.Camera == "" || s.kvKey() != e.Key() {
		return
	}
	ix.remember(s, e.Revision())
}

// between returns a copy of cam's segments overlapping [since, until).
func (ix *index) between(cam string, since, until time.Time) []Segment {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	var out []Segment
	for _, s := range ix.cams[cam] {
		if s.End.After(since) && s.Start.Before(until) {
			out = append(out, s)
		}
	}
	return out
}

// lastEnd is where the latest of cam's segments written by node ends, or
// the zero time when node wrote none.
func (ix *index) lastEnd(cam, node string) time.Time {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	var end time.Time
	for _, s := range ix.cams[cam] {
		if s.Node == node && s.End.After(end) {
			end = s.End
		}
	}
	return end
}

// all returns a copy of every camera's segments.
func (ix *index) all() map[string][]Segment {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	out := make(map[string][]Segment, len(ix.cams))
	for cam, segs := range ix.cams {
		out[cam] = append([]Segment(nil), segs...)
	}
	return out
}
