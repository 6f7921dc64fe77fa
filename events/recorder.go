package events

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"gocv.io/x/gocv"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	"github.com/imageflowcanvas/imageflow/server/blob"
	"github.com/imageflowcanvas/imageflow/track"
)

// Defaults of a Recorder.
const (
	// DefaultMinFrames is how many results a track needs before it is an
	// event: one stray detection is not.
	DefaultMinFrames = 3
	// writeQueue bounds the snapshots waiting to be encoded and stored; a
	// camera never waits for the blob store.
	writeQueue = 64
)

// Recorder follows one camera's results: it gives detections track ids and
// turns tracks into events. Observe runs on the camera's pipeline goroutine;
// encoding, storing and publishing run on the Recorder's own goroutine.
// Exported fields are configuration; set them before Start.
type Recorder struct {
	Camera string
	// JetStream stores the events on Subject (<prefix>.events.<camera>).
	JetStream jetstream.JetStream
	Subject   string
	// Blobs receives the snapshots (events/<camera>/<id>/snapshot.jpg and
	// crop.jpg).
	Blobs blob.Store
	// Zones of the camera; when there are any, only tracks that stayed in one
	// (that wants their label) for its dwell become events.
	Zones []Zone
	// Tracker tunes the tracking.
	Tracker track.Config
	// MinFrames is DefaultMinFrames when 0.
	MinFrames int
	Logger    *slog.Logger
	// Now is time.Now when nil (tests move time).
	Now func() time.Time

	tracker *track.Tracker
	open    map[int64]*openEvent
	jobs    chan writeJob
	done    chan struct{}
	stop    sync.Once

	// Dropped counts snapshots and messages not written because the queue
	// was full; Written counts messages stored.
	Dropped, Written atomic.Uint64
}

type openEvent struct {
	ev       Event
	started  bool
	lastSeen time.Time
	best     gocv.Mat // the best frame, its buffer reused while the size stays
	bestNew  bool     // best changed since the last snapshot
	inside   map[string]time.Time
	messages int
}

type writeJob struct {
	ev    Event
	frame gocv.Mat // owned by the job when hasFrame
	// hasFrame is false when the snapshot is unchanged (a zero Mat must
	// not reach gocv).
	hasFrame bool
	seq      int
}

// Start checks the configuration and starts the writer.
func (r *Recorder) Start() error {
	if r.JetStream == nil || r.Subject == "" || r.Camera == "" {
		return fmt.Errorf("events: recorder needs JetStream, Subject and Camera")
	}
	for i := range r.Zones {
		if err := r.Zones[i].Validate(); err != nil {
			return fmt.Errorf("events: %w", err)
		}
	}
	if r.MinFrames <= 0 {
		r.MinFrames = DefaultMinFrames
	}
	if r.Logger == nil {
		r.Logger = slog.Default()
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	r.tracker = track.New(r.Tracker)
	r.open = make(map[int64]*openEvent)
	r.jobs = make(chan writeJob, writeQueue)
	r.done = make(chan struct{})
	go r.writer()
	return nil
}

// Observe tracks one result's detections (setting their TrackId) and
// updates the events; img is the frame the detections were made on.
func (r *Recorder) Observe(img gocv.Mat, res *busv1.Result) {
	now := r.Now()
	ended := r.tracker.Update(res.Detections)
	fw, fh := float32(res.Width), float32(res.Height)
	for _, d := range res.Detections {
		oe := r.open[d.TrackId]
		if oe == nil {
			oe = &openEvent{ev: Event{Camera: r.Camera, Label: d.Label, TrackID: d.TrackId, Start: now, Zones: []string{}}, best: gocv.NewMat()}
			r.open[d.TrackId] = oe
		}
		oe.lastSeen = now
		oe.ev.Frames++
		zoneAdded := r.updateZones(oe, d, fw, fh, now)
		if d.Score > oe.ev.BestScore || oe.ev.Frames == 1 {
			oe.ev.BestScore = d.Score
			oe.ev.BestBox = Box{d.X, d.Y, d.W, d.H}
			oe.ev.FrameWidth, oe.ev.FrameHeight = img.Cols(), img.Rows()
			img.CopyTo(&oe.best)
			oe.bestNew = true
		}
		qualifies := oe.ev.Frames >= r.MinFrames && (len(r.Zones) == 0 || len(oe.ev.Zones) > 0)
		switch {
		case qualifies && !oe.started:
			oe.started = true
			oe.ev.ID = newID(oe.ev.Start)
			r.emit(oe, StateStart)
		case oe.started && zoneAdded:
			r.emit(oe, StateUpdate)
		}
	}
	for i := range ended {
		r.finish(ended[i].ID)
	}
}

// updateZones tracks the box's anchor (bottom centre: where a walker
// stands) in each zone and reports whether a zone was newly entered.
func (r *Recorder) updateZones(oe *openEvent, d *busv1.Detection, fw, fh float32, now time.Time) bool {
	if len(r.Zones) == 0 || fw <= 0 || fh <= 0 {
		return false
	}
	if oe.inside == nil {
		oe.inside = make(map[string]time.Time, len(r.Zones))
	}
	ax, ay := (d.X+d.W/2)/fw, (d.Y+d.H)/fh
	added := false
	for i := range r.Zones {
		z := &r.Zones[i]
		if !z.Wants(d.Label) {
			continue
		}
		if !z.Contains(ax, ay) {
			delete(oe.inside, z.Name)
			continue
		}
		since, ok := oe.inside[z.Name]
		if !ok {
			since = now
			oe.inside[z.Name] = now
		}
		if now.Sub(since) >= z.MinDwell && !contains(oe.ev.Zones, z.Name) {
			oe.ev.Zones = append(oe.ev.Zones, z.Name)
			added = true
		}
	}
	return added
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// finish ends a track's event.
func (r *Recorder) finish(id int64) {
	oe := r.open[id]
	if oe == nil {
		return
	}
	delete(r.open, id)
	if oe.started {
		end := oe.lastSeen
		oe.ev.End = &end
		r.emit(oe, StateEnd)
	}
	oe.best.Close()
}

// emit queues one message of the event, with a copy of the best frame when
// it changed since the last snapshot.
func (r *Recorder) emit(oe *openEvent, state string) {
	oe.ev.State = state
	job := writeJob{ev: oe.ev, seq: oe.messages}
	// Its own copy, never nil: JSON shows an empty list, not null.
	job.ev.Zones = make([]string, len(oe.ev.Zones))
	copy(job.ev.Zones, oe.ev.Zones)
	oe.messages++
	if oe.bestNew && !oe.best.Empty() {
		job.frame, job.hasFrame = oe.best.Clone(), true
		oe.bestNew = false
	}
	select {
	case r.jobs <- job:
	default:
		if job.hasFrame {
			job.frame.Close()
		}
		r.Dropped.Add(1)
		r.Logger.Warn("event writer busy; message dropped", "event", oe.ev.ID, "state", state)
	}
}

// Close ends every open event (the camera stopped), writes what is queued
// and stops the writer.
func (r *Recorder) Close() {
	r.stop.Do(func() {
		if r.jobs == nil {
			return
		}
		for _, t := range r.tracker.Flush() {
			r.finish(t.ID)
		}
		close(r.jobs)
		<-r.done
	})
}

func (r *Recorder) writer() {
	defer close(r.done)
	var snapKey, cropKey string
	for job := range r.jobs {
		ev := &job.ev
		snapKey = "events/" + ev.Camera + "/" + ev.ID + "/snapshot.jpg"
		cropKey = "events/" + ev.Camera + "/" + ev.ID + "/crop.jpg"
		if job.hasFrame {
			if err := r.writeSnapshot(job.frame, ev.BestBox, snapKey, cropKey); err != nil {
				r.Logger.Warn("event snapshot not stored", "event", ev.ID, "error", err)
			}
			job.frame.Close()
		}
		if r.Blobs != nil {
			// Every message names the keys: the first message's snapshot
			// stays until a better one overwrites it.
			ev.Snapshot, ev.Crop = snapKey, cropKey
		}
		r.publish(ev, job.seq)
	}
}

// publish stores one message, retrying a few times with the same message id
// so JetStream's deduplication keeps a retried message single.
func (r *Recorder) publish(ev *Event, seq int) {
	data, err := json.Marshal(ev)
	if err != nil {
		return
	}
	msgID := ev.ID + "." + strconv.Itoa(seq)
	for attempt := 0; attempt < 5; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = r.JetStream.Publish(ctx, r.Subject, data, jetstream.WithMsgID(msgID))
		cancel()
		if err == nil {
			r.Written.Add(1)
			return
		}
		time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
	}
	r.Logger.Warn("event not stored", "event", ev.ID, "state", ev.State, "error", err)
}

var boxColor = color.RGBA{R: 255, G: 64, B: 32}

// writeSnapshot draws the box on the frame, encodes it and the crop as
// JPEG and stores both.
func (r *Recorder) writeSnapshot(frame gocv.Mat, b Box, snapKey, cropKey string) error {
	if r.Blobs == nil {
		return nil
	}
	rect := image.Rect(int(b.X), int(b.Y), int(b.X+b.W), int(b.Y+b.H)).Intersect(image.Rect(0, 0, frame.Cols(), frame.Rows()))
	var crop []byte
	if !rect.Empty() {
		region := frame.Region(rect)
		buf, err := gocv.IMEncode(gocv.JPEGFileExt, region)
		region.Close()
		if err != nil {
			return fmt.Errorf("encode crop: %w", err)
		}
		crop = bytes.Clone(buf.GetBytes())
		buf.Close()
	}
	gocv.Rectangle(&frame, rect, boxColor, 2)
	buf, err := gocv.IMEncode(gocv.JPEGFileExt, frame)
	if err != nil {
		return fmt.Errorf("encode snapshot: %w", err)
	}
	snap := bytes.Clone(buf.GetBytes())
	buf.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Blobs.Put(ctx, snapKey, bytes.NewReader(snap), int64(len(snap)), "image/jpeg"); err != nil {
		return err
	}
	if crop != nil {
		return r.Blobs.Put(ctx, cropKey, bytes.NewReader(crop), int64(len(crop)), "image/jpeg")
	}
	return nil
}
