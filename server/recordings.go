package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/imageflowcanvas/imageflow/bus"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	"github.com/imageflowcanvas/imageflow/record"
	"github.com/imageflowcanvas/imageflow/server/rest"
)

// startRecorder repairs the recordings index against the blob store and
// starts the recording manager; cameras with record on start recording as
// the supervisor starts them.
func (s *Server) startRecorder(ctx context.Context) error {
	m := &record.Manager{Config: record.Config{
		Store: s.blobs, Index: s.bus.KV(bus.BucketRecordings), Node: s.Config.Node, Video: s.hub,
		Conn: s.bus.Conn(), Subjects: s.bus.Subjects(),
		SegmentDuration: s.Config.RecordSegment, MaxTotalBytes: s.Config.RecordMaxBytes,
		Metrics: record.NewMetrics(s.Registerer), Logger: s.Logger.With("component", "record"),
	}}
	if err := m.Start(ctx); err != nil {
		return fmt.Errorf("recordings: %w", err)
	}
	s.recorder = m
	return nil
}

// startRecording starts cam's recorder when it records; it returns its
// stop function.
func (s *Server) startRecording(cam *busv1.Camera) []func() {
	if !cam.Record || s.recorder == nil {
		return nil
	}
	st := record.Settings{Retention: time.Duration(cam.RecordRetentionNs), MaxBytes: cam.RecordMaxBytes}
	if err := s.recorder.Record(cam.Id, st); err != nil {
		s.Logger.Warn("recording not started", "camera", cam.Id, "error", err)
		return nil
	}
	id := cam.Id
	return []func(){func() { s.recorder.Stop(id) }}
}

// recordingRoutes are the playback endpoints.
func (s *Server) recordingRoutes() []route {
	rangeQuery := []rest.QueryParam{
		{Name: "since", Description: "Start of the range (RFC 3339)", Schema: map[string]any{"type": "string", "format": "date-time"}},
		{Name: "until", Description: "End of the range (RFC 3339)", Schema: map[string]any{"type": "string", "format": "date-time"}},
	}
	return []route{
		{Method: "GET", Path: "/api/v1/cameras/:id/recordings", Summary: "Recorded segments and the gaps between them (default: the last 24 hours)",
			Handler: s.listRecordings, Response: "RecordingList", Query: rangeQuery, Statuses: []int{200, 400}, Role: rest.RoleViewer},
		{Method: "GET", Path: "/api/v1/cameras/:id/recordings/export", Summary: "One MP4 of a recorded range, from the keyframe at or before since (Range requests supported)",
			Handler: s.exportRecording, ResponseTypes: []string{"video/mp4"}, Query: rangeQuery, Statuses: []int{200, 206, 400, 404, 416},
			Role: rest.RoleViewer, TokenQuery: true},
	}
}

func recordingSchemas() map[string]any {
	segment := obj(map[string]any{"start": rest.Time, "end": rest.Time, "size": integ, "codec": str, "audio": str, "complete": boo, "node": str},
		"start", "end", "size", "codec", "complete")
	gap := obj(map[string]any{"start": rest.Time, "end": rest.Time}, "start", "end")
	return map[string]any{
		"RecordingSegment": segment,
		"RecordingGap":     gap,
		"RecordingList": obj(map[string]any{"camera": str, "since": rest.Time, "until": rest.Time, "recording": boo,
			"segments": arr(rest.Ref("RecordingSegment")), "gaps": arr(rest.Ref("RecordingGap"))},
			"camera", "since", "until", "recording", "segments", "gaps"),
	}
}

// recordingSegment is a segment as the API shows it.
type recordingSegment struct {
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	Size     int64     `json:"size"`
	Codec    string    `json:"codec"`
	Audio    string    `json:"audio,omitempty"`
	Complete bool      `json:"complete"`
	// Node is the server that wrote it (in a cluster, the camera's owner then).
	Node string `json:"node,omitempty"`
}

// recordingList is the answer of the recordings list.
type recordingList struct {
	Camera    string             `json:"camera"`
	Since     time.Time          `json:"since"`
	Until     time.Time          `json:"until"`
	Recording bool               `json:"recording"`
	Segments  []recordingSegment `json:"segments"`
	Gaps      []record.Gap       `json:"gaps"`
}

// parseRange reads since and until; until defaults to now and since to
// def before until.
func parseRange(c *fiber.Ctx, def time.Duration) (since, until time.Time, err error) {
	until = time.Now()
	if v := c.Query("until"); v != "" {
		if until, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return since, until, invalidf("until %q: want an RFC 3339 time such as 2024-05-01T14:00:00Z", v)
		}
	}
	since = until.Add(-def)
	if v := c.Query("since"); v != "" {
		if since, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return since, until, invalidf("since %q: want an RFC 3339 time such as 2024-05-01T14:00:00Z", v)
		}
	}
	if !until.After(since) {
		return since, until, invalidf("until (%s) must be after since (%s)", until.Format(time.RFC3339Nano), since.Format(time.RFC3339Nano))
	}
	return since, until, nil
}

func (s *Server) listRecordings(c *fiber.Ctx) error {
	id, err := pathID(c)
	if err != nil {
		return writeError(c, err)
	}
	since, until, err := parseRange(c, 24*time.Hour)
	if err != nil {
		return writeError(c, err)
	}
	if until.Sub(since) > 366*24*time.Hour {
		return writeError(c, invalidf("range of %s: at most a year", until.Sub(since)))
	}
	s.recorder.CatchUp(c.UserContext())
	segs := s.recorder.Segments(id, since, until)
	items := make([]recordingSegment, 0, len(segs))
	for _, sg := range segs {
		items = append(items, recordingSegment{Start: sg.Start, End: sg.End, Size: sg.Size, Codec: sg.Codec, Audio: sg.Audio, Complete: sg.Complete, Node: sg.Node})
	}
	gaps := record.Gaps(segs)
	if gaps == nil {
		gaps = []record.Gap{}
	}
	return c.JSON(recordingList{Camera: id, Since: since.UTC(), Until: until.UTC(), Recording: s.recordingAnywhere(c.UserContext(), id),
		Segments: items, Gaps: gaps})
}

// recordingAnywhere reports whether the camera is being recorded: here, or
// in a cluster by the node holding its lease.
func (s *Server) recordingAnywhere(ctx context.Context, id string) bool {
	if s.recorder.Recording(id) {
		return true
	}
	if s.placement == nil {
		return false
	}
	cam, _, err := s.cameras.get(ctx, id)
	return err == nil && cam.Record && cam.Enabled && s.cameraOwner(cam) != ""
}

func (s *Server) exportRecording(c *fiber.Ctx) error {
	id, err := pathID(c)
	if err != nil {
		return writeError(c, err)
	}
	if c.Query("since") == "" || c.Query("until") == "" {
		return writeError(c, invalidf("since and until are required"))
	}
	since, until, err := parseRange(c, 0)
	if err != nil {
		return writeError(c, err)
	}
	data, err := s.recorder.Export(c.UserContext(), id, since, until)
	switch {
	case errors.Is(err, record.ErrRange):
		return writeError(c, invalidf("%v", err))
	case errors.Is(err, record.ErrNoRecording):
		return writeError(c, fmt.Errorf("%w: %s has no recording between %s and %s", ErrNotFound, id,
			since.UTC().Format(time.RFC3339), until.UTC().Format(time.RFC3339)))
	case err != nil:
		return writeError(c, err)
	}
	c.Set(fiber.HeaderContentType, "video/mp4")
	c.Set(fiber.HeaderAcceptRanges, "bytes")
	c.Set(fiber.HeaderContentDisposition, fmt.Sprintf(`inline; filename="%s-%s.mp4"`, id, since.UTC().Format("20060102T150405Z")))
	rng := c.Get(fiber.HeaderRange)
	if rng == "" {
		return c.Send(data)
	}
	start, end, err := fasthttp.ParseByteRange([]byte(rng), len(data))
	if err != nil {
		c.Set(fiber.HeaderContentRange, "bytes */"+strconv.Itoa(len(data)))
		return writeError(c, fiber.NewError(fiber.StatusRequestedRangeNotSatisfiable, fmt.Sprintf("range %q not satisfiable for %d bytes", rng, len(data))))
	}
	c.Set(fiber.HeaderContentRange, fmt.Sprintf("bytes %d-%d/%d", start, end, len(data)))
	c.Status(fiber.StatusPartialContent)
	return c.Send(data[start : end+1])
}
