package track

import (
	"testing"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

func det(label string, x, y float32) *busv1.Detection {
	return &busv1.Detection{Label: label, X: x, Y: y, W: 40, H: 80, Score: 1}
}

// Two walkers crossing paths in opposite directions keep their ids, a label
// never takes another label's track, and a track survives a short miss but
// ends after MaxMiss frames.
func TestTrackerKeepsIDs(t *testing.T) {
	tr := New(Config{MaxMiss: 2})
	var a, b int64
	for f := 0; f < 40; f++ {
		x := float32(f * 8)
		dets := []*busv1.Detection{det("person", x, 100), det("person", 320-x, 104), det("car", x, 100)}
		if f == 10 {
			dets = dets[1:] // the detector misses walker a once
		}
		tr.Update(dets)
		if f == 0 {
			a, b = dets[0].TrackId, dets[1].TrackId
			if a == b || dets[2].TrackId == a || dets[2].TrackId == b {
				t.Fatalf("ids not distinct: %d %d %d", a, b, dets[2].TrackId)
			}
			continue
		}
		if f == 10 {
			if dets[0].TrackId != b {
				t.Fatalf("frame %d: walker b got id %d, want %d", f, dets[0].TrackId, b)
			}
			continue
		}
		if dets[0].TrackId != a || dets[1].TrackId != b {
			t.Fatalf("frame %d: ids %d %d, want %d %d", f, dets[0].TrackId, dets[1].TrackId, a, b)
		}
	}
	var ended []Track
	for f := 0; f < 3; f++ {
		ended = append(ended, tr.Update(nil)...)
	}
	if len(ended) != 3 {
		t.Fatalf("ended after 3 empty frames with MaxMiss 2: %d tracks, want 3", len(ended))
	}
	for _, e := range ended {
		if e.Hits < 39 {
			t.Errorf("track %d (%s) ended with %d hits, want >= 39", e.ID, e.Label, e.Hits)
		}
	}
	if n := len(tr.Active()); n != 0 {
		t.Fatalf("%d tracks still active", n)
	}
	d := []*busv1.Detection{det("person", 0, 0)}
	tr.Update(d)
	if d[0].TrackId <= 3 {
		t.Fatalf("a new track reused id %d", d[0].TrackId)
	}
}

// A frame with unchanged detections costs no allocation once buffers grew.
func TestTrackerNoAllocs(t *testing.T) {
	tr := New(Config{})
	dets := []*busv1.Detection{det("person", 0, 0), det("person", 200, 0), det("person", 400, 0)}
	tr.Update(dets)
	if n := testing.AllocsPerRun(100, func() { tr.Update(dets) }); n != 0 {
		t.Fatalf("%v allocations per frame", n)
	}
}
