package events

import (
	"context"
	"errors"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"github.com/imageflowcanvas/imageflow/bus"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	"github.com/imageflowcanvas/imageflow/server/blob"
)

func TestZoneContains(t *testing.T) {
	// An L shape: the notch at the top right is outside.
	z := Zone{Name: "l", Points: [][2]float32{{0, 0}, {0.5, 0}, {0.5, 0.5}, {1, 0.5}, {1, 1}, {0, 1}}}
	if err := z.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		x, y float32
		in   bool
	}{{0.25, 0.25, true}, {0.75, 0.25, false}, {0.75, 0.75, true}, {0.25, 0.9, true}, {1.5, 0.5, false}, {-0.1, 0.5, false}} {
		if got := z.Contains(c.x, c.y); got != c.in {
			t.Errorf("Contains(%v, %v) = %v, want %v", c.x, c.y, got, c.in)
		}
	}
	for _, bad := range []Zone{
		{Name: "", Points: z.Points},
		{Name: "two", Points: [][2]float32{{0, 0}, {1, 1}}},
		{Name: "out", Points: [][2]float32{{0, 0}, {1.5, 0}, {1, 1}}},
		{Name: "nan", Points: [][2]float32{{0, 0}, {float32(nan()), 0}, {1, 1}}},
		{Name: "dwell", Points: z.Points, MinDwell: -time.Second},
	} {
		if bad.Validate() == nil {
			t.Errorf("zone %+v accepted", bad)
		}
	}
}

func nan() float64 { var z float64; return z / z }

// The recorder against a real bus: a walker that stays in the zone for its
// dwell becomes one event (start with a snapshot, end after the track is
// lost), one outside it none; the store lists the event after a restart of
// the index and Delete removes its messages and snapshots.
func TestRecorderAndStore(t *testing.T) {
	dir := t.TempDir()
	b := &bus.Bus{Config: bus.Config{DataDir: dir}}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	blobs := blob.NewJetStream(b.Objects())
	now := time.Unix(1_700_000_000, 0)
	rec := &Recorder{Camera: "cam", JetStream: b.JetStream(), Subject: b.Subjects().Events("cam"), Blobs: blobs,
		Zones: []Zone{{Name: "left", Points: [][2]float32{{0, 0}, {0.5, 0}, {0.5, 1}, {0, 1}}, Labels: []string{"person"}, MinDwell: time.Second}},
		Now:   func() time.Time { return now }}
	if err := rec.Start(); err != nil {
		t.Fatal(err)
	}
	img := gocv.NewMatWithSize(200, 400, gocv.MatTypeCV8UC3)
	defer img.Close()
	res := &busv1.Result{Width: 400, Height: 200}
	for f := 0; f < 20; f++ {
		now = now.Add(200 * time.Millisecond)
		x := float32(20 + f)
		res.Detections = []*busv1.Detection{
			{Label: "person", X: x, Y: 50, W: 40, H: 100, Score: 0.5 + float32(f)/100},
			{Label: "person", X: 300 - x, Y: 50, W: 40, H: 100, Score: 0.9},
		}
		rec.Observe(img, res)
	}
	for f := 0; f < 10; f++ {
		res.Detections = nil
		rec.Observe(img, res)
	}
	rec.Close()
	if rec.Written.Load() != 2 || rec.Dropped.Load() != 0 {
		t.Fatalf("written %d, dropped %d: want start and end of one event", rec.Written.Load(), rec.Dropped.Load())
	}

	open := func() *Store {
		s := &Store{JetStream: b.JetStream(), Stream: "EVENTS", Subject: b.Subjects().Events("*"), Blobs: blobs}
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return s
	}
	st := open()
	list, next, err := st.List(Query{Camera: "cam"})
	st.Close()
	if err != nil || next != "" || len(list) != 1 {
		t.Fatalf("list: %d events, next %q, %v", len(list), next, err)
	}
	e := list[0]
	// Started once the dwell was reached: 5 frames of 200 ms after the first.
	if e.State != StateEnd || e.Label != "person" || e.End == nil || len(e.Zones) != 1 || e.Zones[0] != "left" ||
		e.BestScore < 0.68 || e.Frames != 20 || e.FrameWidth != 400 || e.Snapshot == "" {
		t.Fatalf("event %+v", e)
	}
	if got := e.End.Sub(e.Start); got != 19*200*time.Millisecond {
		t.Fatalf("event lasted %v", got)
	}
	for _, k := range []string{e.Snapshot, e.Crop} {
		r, _, err := blobs.Get(ctx, k)
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		r.Close()
	}
	if l, _, _ := st.List(Query{Zone: "right"}); len(l) != 0 {
		t.Fatalf("zone filter: %d", len(l))
	}
	if _, _, err := st.List(Query{Cursor: "junk"}); !errors.Is(err, ErrBadCursor) {
		t.Fatalf("bad cursor: %v", err)
	}

	st = open()
	defer st.Close()
	if err := st.Delete(ctx, e.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(e.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if _, _, err := blobs.Get(ctx, e.Snapshot); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("snapshot after delete: %v", err)
	}
	again := open()
	defer again.Close()
	if again.Len() != 0 {
		t.Fatalf("%d events after delete and reopen", again.Len())
	}
}
