// Package record keeps cameras' encoded streams in the blob store as
// fragmented MP4 segments without re-encoding, indexes the segments in a KV
// bucket, repairs that index after a crash, deletes segments past their
// retention or size cap, and exports a time range as one plain MP4.
package record

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Errors of the recorder.
var (
	// ErrNoRecording is returned when nothing is recorded in a requested range.
	ErrNoRecording = errors.New("nothing recorded in this range")
	// ErrRange is returned for an empty, inverted or too long time range.
	ErrRange = errors.New("invalid time range")
)

// blobPrefix starts the blob keys of every recording.
const blobPrefix = "recordings/"

// Segment is one index entry: about SegmentDuration of one camera, starting
// at a keyframe, stored as an init blob and Parts fragment blobs.
type Segment struct {
	Camera string `json:"camera"`
	// Node is the server that wrote it: its blobs live under its name, so
	// servers sharing one bucket never take each other's blobs for orphans.
	Node  string    `json:"node,omitempty"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Size is the bytes stored: init plus every part.
	Size int64 `json:"size"`
	// Codec is the video codec ("h264", "h265"); Audio the audio codec, if any.
	Codec string `json:"codec"`
	Audio string `json:"audio,omitempty"`
	// Parts is how many fragment blobs (1..Parts) the segment has; the index
	// names only parts already in the store.
	Parts int `json:"parts"`
	// Complete is false while the segment is written, and after a crash until
	// the next start repairs it.
	Complete bool `json:"complete"`
}

// id is the segment's start in Unix nanoseconds, zero-padded so keys sort
// by time.
func (s *Segment) id() string { return fmt.Sprintf("%019d", s.Start.UnixNano()) }

// kvKey is the segment's key in the index bucket.
func (s *Segment) kvKey() string { return s.Camera + "." + s.id() }

// dir is the blob key prefix of the segment's init and parts.
func (s *Segment) dir() string { return nodePrefix(s.Node) + s.Camera + "/" + s.id() + "/" }

// nodePrefix is where a node's recordings live in the store.
func nodePrefix(node string) string { return blobPrefix + node + "/" }

// Keys are the blob keys of the segment: its init, then its parts in order.
func (s Segment) Keys() []string {
	out := []string{s.initKey()}
	for n := 1; n <= s.Parts; n++ {
		out = append(out, s.partKey(n))
	}
	return out
}

// NodeName makes a host name usable as one blob key segment.
func NodeName(host string) string {
	b := []byte(host)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			b[i] = '_'
		}
	}
	if len(b) == 0 || string(b) == "." || string(b) == ".." {
		return "local"
	}
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}

func (s *Segment) initKey() string { return s.dir() + "init.mp4" }

func (s *Segment) partKey(n int) string { return fmt.Sprintf("%s%06d.m4s", s.dir(), n) }

// parseBlobKey splits recordings/<node>/<cam>/<id>/<name> into its segment
// directory and name; ok is false for keys not of that shape.
func parseBlobKey(key string) (dir, name string, ok bool) {
	rest, found := strings.CutPrefix(key, blobPrefix)
	if !found {
		return "", "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 4 {
		return "", "", false
	}
	return blobPrefix + parts[0] + "/" + parts[1] + "/" + parts[2] + "/", parts[3], true
}

// partNumber reads n from "000123.m4s"; 0 when name is not a part.
func partNumber(name string) int {
	num, found := strings.CutSuffix(name, ".m4s")
	if !found {
		return 0
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 1 {
		return 0
	}
	return n
}

// Gap is a time between two recorded segments where nothing was recorded
// (camera offline, recording off, server down).
type Gap struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// gapTolerance is the largest hole between two segments that still counts
// as continuous: timestamps of consecutive segments of one session meet
// exactly, a new session after a reconnect starts later than that.
const gapTolerance = 500 * time.Millisecond

// Gaps lists the holes between consecutive segments (sorted by start).
func Gaps(segs []Segment) []Gap {
	var out []Gap
	for i := 1; i < len(segs); i++ {
		if segs[i].Start.Sub(segs[i-1].End) > gapTolerance {
			out = append(out, Gap{Start: segs[i-1].End, End: segs[i].Start})
		}
	}
	return out
}
