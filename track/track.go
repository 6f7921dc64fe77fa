// Package track gives the detections of one camera stable track ids across
// frames: each frame's boxes are matched to the tracks of the previous frames
// by overlap (IoU) with each track's predicted box, label by label, as SORT
// does; a track that goes unmatched for a few frames ends.
package track

import (
	"slices"

	"github.com/imageflowcanvas/imageflow/processors"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// Defaults of a Config.
const (
	DefaultMinIoU  = 0.25
	DefaultMaxMiss = 5
)

// Config tunes a Tracker; zero values take the defaults.
type Config struct {
	// MinIoU is the least overlap between a detection and a track's
	// predicted box for them to be matched.
	MinIoU float32
	// MaxMiss is how many consecutive frames a track may go unmatched
	// (a detector misses a person now and then) before it ends.
	MaxMiss int
}

// Box is a rectangle by its top-left corner and size, in frame pixels.
type Box struct{ X, Y, W, H float32 }

// Track is one object followed across frames.
type Track struct {
	ID    int64
	Label string
	// Box is the last matched detection's box.
	Box Box
	// Hits counts matched frames, Misses the unmatched frames since the
	// last match.
	Hits, Misses int
	// vx, vy is the box's motion per frame (constant-velocity prediction).
	vx, vy float32
}

// predicted is where the track's box is expected in the next frame.
func (t *Track) predicted() Box {
	n := float32(t.Misses + 1)
	return Box{t.Box.X + t.vx*n, t.Box.Y + t.vy*n, t.Box.W, t.Box.H}
}

type pair struct {
	iou     float32
	tr, det int
}

// Tracker assigns track ids to the detections of one camera, frame after
// frame. It is not safe for concurrent use; its buffers are reused so a
// frame costs no allocation once they have grown.
type Tracker struct {
	cfg    Config
	next   int64
	tracks []*Track
	free   []*Track
	pairs  []pair
	usedT  []bool
	usedD  []bool
	ended  []Track
}

// New returns a Tracker; ids start at 1.
func New(cfg Config) *Tracker {
	if cfg.MinIoU <= 0 {
		cfg.MinIoU = DefaultMinIoU
	}
	if cfg.MaxMiss <= 0 {
		cfg.MaxMiss = DefaultMaxMiss
	}
	return &Tracker{cfg: cfg, next: 1}
}

// Update matches one frame's detections to the tracks, sets each
// detection's TrackId (new tracks for unmatched ones), and returns the tracks
// that ended on this frame. The returned slice is valid until the next call.
func (t *Tracker) Update(dets []*busv1.Detection) []Track {
	t.pairs = t.pairs[:0]
	for i, tr := range t.tracks {
		p := tr.predicted()
		for j, d := range dets {
			if d.Label != tr.Label {
				continue
			}
			if v := iou(p, Box{d.X, d.Y, d.W, d.H}); v >= t.cfg.MinIoU {
				t.pairs = append(t.pairs, pair{v, i, j})
			}
		}
	}
	// Greedy by overlap: the best pairs claim their track and detection first.
	slices.SortFunc(t.pairs, func(a, b pair) int {
		switch {
		case a.iou > b.iou:
			return -1
		case a.iou < b.iou:
			return 1
		}
		return 0
	})
	t.usedT = resize(t.usedT, len(t.tracks))
	t.usedD = resize(t.usedD, len(dets))
	for _, p := range t.pairs {
		if t.usedT[p.tr] || t.usedD[p.det] {
			continue
		}
		t.usedT[p.tr], t.usedD[p.det] = true, true
		tr, d := t.tracks[p.tr], dets[p.det]
		n := float32(tr.Misses + 1)
		nb := Box{d.X, d.Y, d.W, d.H}
		// Smoothed velocity: half the new motion, half the old.
		tr.vx = 0.5*tr.vx + 0.5*(nb.X-tr.Box.X)/n
		tr.vy = 0.5*tr.vy + 0.5*(nb.Y-tr.Box.Y)/n
		tr.Box, tr.Hits, tr.Misses = nb, tr.Hits+1, 0
		d.TrackId = tr.ID
	}
	t.ended = t.ended[:0]
	kept := t.tracks[:0]
	for i, tr := range t.tracks {
		if !t.usedT[i] {
			tr.Misses++
			if tr.Misses > t.cfg.MaxMiss {
				t.ended = append(t.ended, *tr)
				t.free = append(t.free, tr)
				continue
			}
		}
		kept = append(kept, tr)
	}
	clear(t.tracks[len(kept):])
	t.tracks = kept
	for j, d := range dets {
		if t.usedD[j] {
			continue
		}
		var tr *Track
		if n := len(t.free); n > 0 {
			tr, t.free = t.free[n-1], t.free[:n-1]
		} else {
			tr = new(Track)
		}
		*tr = Track{ID: t.next, Label: d.Label, Box: Box{d.X, d.Y, d.W, d.H}, Hits: 1}
		t.next++
		d.TrackId = tr.ID
		t.tracks = append(t.tracks, tr)
	}
	return t.ended
}

// Active returns the live tracks (matched or coasting); the pointers stay
// valid until the next Update.
func (t *Tracker) Active() []*Track { return t.tracks }

// Flush ends every track (the camera stopped) and returns them.
func (t *Tracker) Flush() []Track {
	t.ended = t.ended[:0]
	for _, tr := range t.tracks {
		t.ended = append(t.ended, *tr)
		t.free = append(t.free, tr)
	}
	clear(t.tracks)
	t.tracks = t.tracks[:0]
	return t.ended
}

func resize(b []bool, n int) []bool {
	if cap(b) < n {
		b = make([]bool, n)
	}
	b = b[:n]
	clear(b)
	return b
}

// iou is the intersection over union of two boxes; 0 when apart.
func iou(a, b Box) float32 { return processors.IoU(a.X, a.Y, a.W, a.H, b.X, b.Y, b.W, b.H) }
