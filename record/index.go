package record

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
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
}

func newIndex(kv jetstream.KeyValue) *index {
	return &index{kv: kv, cams: map[string][]Segment{}}
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
	if _, err := ix.kv.Put(ctx, s.kvKey(), b); err != nil {
		return fmt.Errorf("recordings index put %s: %w", s.kvKey(), err)
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	segs := ix.cams[s.Camera]
	i := sort.Search(len(segs), func(i int) bool { return !segs[i].Start.Before(s.Start) })
	if i < len(segs) && segs[i].Start.Equal(s.Start) {
		segs[i] = s
		return nil
	}
	segs = append(segs, Segment{})
	copy(segs[i+1:], segs[i:])
	segs[i] = s
	ix.cams[s.Camera] = segs
	return nil
}

// remove purges s from the bucket, then from memory.
func (ix *index) remove(ctx context.Context, s Segment) error {
	if err := ix.kv.Purge(ctx, s.kvKey()); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("recordings index delete %s: %w", s.kvKey(), err)
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
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
	return nil
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
