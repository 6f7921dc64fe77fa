// Package events turns a camera's tracked detections into events (one track
// of one label, with its start, end, best score, the zones it entered and a
// best snapshot), writes them to a JetStream stream with their snapshots in
// the blob store, and keeps the index the REST API queries.
//
// Each state change of an event (start, update, end) is one message on
// <prefix>.events.<camera> carrying the whole event as JSON, so a consumer
// (SSE, Kafka, MQTT) needs nothing else to read it; the newest message of an
// id is the event's current state.
package events

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"time"
)

// States of an event message.
const (
	StateStart  = "start"
	StateUpdate = "update"
	StateEnd    = "end"
)

// Box is a detection box in pixels of the frame the event's snapshot shows.
type Box struct {
	X float32 `json:"x"`
	Y float32 `json:"y"`
	W float32 `json:"w"`
	H float32 `json:"h"`
}

// Event is one track of one label on one camera.
type Event struct {
	ID      string `json:"id"`
	Camera  string `json:"camera"`
	Label   string `json:"label"`
	TrackID int64  `json:"track_id"`
	// State is the state this message reports: start, update or end.
	State string `json:"state"`
	// Start and End bound the track (End is zero while it goes on).
	Start time.Time  `json:"start"`
	End   *time.Time `json:"end,omitempty"`
	// BestScore is the highest detection score of the track, BestBox its box
	// in the snapshot.
	BestScore float32 `json:"best_score"`
	BestBox   Box     `json:"best_box"`
	// Frames counts the results the track was detected in.
	Frames int `json:"frames"`
	// Zones are the camera zones the track stayed in for their dwell.
	Zones []string `json:"zones"`
	// Snapshot and Crop are blob keys of JPEGs: the full frame with the box
	// drawn, and the box alone; empty when none could be written.
	Snapshot string `json:"snapshot,omitempty"`
	Crop     string `json:"crop,omitempty"`
	// FrameWidth and FrameHeight are the snapshot's size.
	FrameWidth  int `json:"frame_width"`
	FrameHeight int `json:"frame_height"`
}

// newID makes an event id that sorts by time and never repeats across
// restarts: milliseconds since 1970 in base 36, then 6 random bytes.
func newID(now time.Time) string {
	var r [6]byte
	_, _ = rand.Read(r[:])
	return strconv.FormatInt(now.UnixMilli(), 36) + "-" + hex.EncodeToString(r[:])
}
