package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gofiber/contrib/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/events"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	"github.com/imageflowcanvas/imageflow/server/blob"
	"github.com/imageflowcanvas/imageflow/server/rest"
)

// Limits of the event API.
const (
	eventsPageDefault = 50
	eventsPageMax     = 500
	// liveQueue is how many messages a live stream (SSE, WebSocket) holds
	// for a slow client; beyond it messages are skipped and counted, so a
	// slow client never slows a camera.
	liveQueue = 64
)

// startEvents opens the index of the events stream.
func (s *Server) startEvents(ctx context.Context) error {
	st := &events.Store{JetStream: s.bus.JetStream(), Stream: "EVENTS", Subject: s.bus.Subjects().Events("*"),
		Blobs: s.blobs, Retention: s.Config.EventsRetention, Logger: s.Logger.With("component", "events")}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := st.Start(sctx); err != nil {
		return err
	}
	s.events = st
	s.eventsWS = websocket.New(s.serveEventsWS)
	return nil
}

// newRecorder makes the event recorder of a camera's pipeline.
func (s *Server) newRecorder(cam *busv1.Camera, log *slog.Logger) *events.Recorder {
	// A worker records the events of the cameras it processes without the
	// index a serving node keeps for the API.
	if s.events == nil && !s.Worker {
		return nil
	}
	rec := &events.Recorder{Camera: cam.Id, JetStream: s.bus.JetStream(), Subject: s.bus.Subjects().Events(cam.Id),
		Blobs: s.blobs, Zones: zonesOf(cam), Logger: log.With("component", "events")}
	if err := rec.Start(); err != nil {
		log.Warn("events not recorded", "error", err)
		return nil
	}
	return rec
}

// mqttAuth admits MQTT clients: anyone without auth, a client whose
// password is a token of any role with it.
func (s *Server) mqttAuth(user, password string) bool {
	if !s.authOn() {
		return true
	}
	return s.roleOf(password) >= rest.RoleViewer
}

func (s *Server) eventRoutes() []route {
	const base = "/api/v1/events"
	q := func(name, desc string, schema map[string]any) rest.QueryParam {
		return rest.QueryParam{Name: name, Description: desc, Schema: schema}
	}
	timeQ := map[string]any{"type": "string", "format": "date-time"}
	return []route{
		{Method: "GET", Path: base, Summary: "List events, newest first (?camera=, ?label=, ?zone=, ?since=, ?until=, ?limit=, ?cursor=)", Handler: s.listEvents, Response: "EventList", Statuses: []int{200, 400}, Role: rest.RoleViewer,
			Query: []rest.QueryParam{q("camera", "Only this camera's events", nil), q("label", "Only this label", nil), q("zone", "Only events that entered this zone", nil),
				q("since", "Events that started at or after (RFC 3339)", timeQ), q("until", "Events that started at or before (RFC 3339)", timeQ),
				q("limit", "Page size", map[string]any{"type": "integer", "minimum": 1, "maximum": eventsPageMax, "default": eventsPageDefault}),
				q("cursor", "next_cursor of the previous page", nil)}},
		{Method: "GET", Path: base + "/stream", Summary: "Live events as Server-Sent Events (event: event); a slow client skips messages and is told how many (event: skipped)", Handler: s.eventStream, Response: "Event", ResponseTypes: []string{"text/event-stream"}, Statuses: []int{200, 400}, Role: rest.RoleViewer, TokenQuery: true,
			Query: []rest.QueryParam{q("camera", "Only this camera's events", nil)}},
		{Method: "GET", Path: base + "/ws", Summary: "Live events over WebSocket, one JSON message each", Handler: s.eventWS, Response: "Event", Statuses: []int{101, 400, 426}, Role: rest.RoleViewer, TokenQuery: true,
			Query: []rest.QueryParam{q("camera", "Only this camera's events", nil)}},
		{Method: "GET", Path: base + "/:id", Summary: "One event with its snapshot and crop URLs", Handler: s.getEvent, Response: "Event", Statuses: []int{200, 400, 404}, Role: rest.RoleViewer},
		{Method: "GET", Path: base + "/:id/snapshot.jpg", Summary: "The event's best frame with its box (JPEG)", Handler: s.eventImage("snapshot"), ResponseTypes: []string{"image/jpeg"}, Statuses: []int{200, 400, 404}, Role: rest.RoleViewer, TokenQuery: true},
		{Method: "GET", Path: base + "/:id/crop.jpg", Summary: "The event's best box alone (JPEG)", Handler: s.eventImage("crop"), ResponseTypes: []string{"image/jpeg"}, Statuses: []int{200, 400, 404}, Role: rest.RoleViewer, TokenQuery: true},
		{Method: "DELETE", Path: base + "/:id", Summary: "Delete an event and its snapshots", Handler: s.deleteEvent, Statuses: []int{204, 400, 404}, Role: rest.RoleOperator},
		{Method: "GET", Path: "/api/v1/cameras/:id/results/stream", Summary: "A camera's raw results (detections with track ids) as Server-Sent Events (event: result); a slow client skips results and is told how many (event: skipped)", Handler: s.resultStream, Response: "Result", ResponseTypes: []string{"text/event-stream"}, Statuses: []int{200, 400, 404}, Role: rest.RoleViewer, TokenQuery: true},
	}
}

// eventView is an event as the API shows it.
type eventView struct {
	events.Event
	SnapshotURL string `json:"snapshot_url,omitempty"`
	CropURL     string `json:"crop_url,omitempty"`
}

func viewOf(e events.Event) eventView {
	v := eventView{Event: e}
	if e.Snapshot != "" {
		v.SnapshotURL = "/api/v1/events/" + e.ID + "/snapshot.jpg"
	}
	if e.Crop != "" {
		v.CropURL = "/api/v1/events/" + e.ID + "/crop.jpg"
	}
	return v
}

type eventList struct {
	Items      []eventView `json:"items"`
	NextCursor string      `json:"next_cursor,omitempty"`
}

func (s *Server) eventsReady() error {
	if s.events == nil {
		return fmt.Errorf("%w: events are not recorded", ErrUnavailable)
	}
	return nil
}

func (s *Server) listEvents(c *fiber.Ctx) error {
	if err := s.eventsReady(); err != nil {
		return writeError(c, err)
	}
	q := events.Query{Camera: c.Query("camera"), Label: c.Query("label"), Zone: c.Query("zone"), Limit: eventsPageDefault, Cursor: c.Query("cursor")}
	for _, t := range []struct {
		name string
		dst  *time.Time
	}{{"since", &q.Since}, {"until", &q.Until}} {
		if v := c.Query(t.name); v != "" {
			tm, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return writeError(c, invalidf("%s %q: want an RFC 3339 time", t.name, v))
			}
			*t.dst = tm
		}
	}
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > eventsPageMax {
			return writeError(c, invalidf("limit %q: want 1 to %d", v, eventsPageMax))
		}
		q.Limit = n
	}
	items, next, err := s.events.List(q)
	if err != nil {
		if errors.Is(err, events.ErrBadCursor) {
			return writeError(c, invalidf("%v", err))
		}
		return writeError(c, err)
	}
	out := eventList{Items: make([]eventView, len(items)), NextCursor: next}
	for i, e := range items {
		out.Items[i] = viewOf(e)
	}
	return c.JSON(out)
}

// eventOf loads the event named by the :id parameter.
func (s *Server) eventOf(c *fiber.Ctx) (events.Event, error) {
	if err := s.eventsReady(); err != nil {
		return events.Event{}, err
	}
	id := c.Params("id")
	if len(id) == 0 || len(id) > 64 {
		return events.Event{}, invalidf("event id %q: want 1 to 64 characters", id)
	}
	e, err := s.events.Get(id)
	if errors.Is(err, events.ErrNotFound) {
		return e, fmt.Errorf("%w: event %q", ErrNotFound, id)
	}
	return e, err
}

func (s *Server) getEvent(c *fiber.Ctx) error {
	e, err := s.eventOf(c)
	if err != nil {
		return writeError(c, err)
	}
	return c.JSON(viewOf(e))
}

func (s *Server) eventImage(which string) fiber.Handler {
	return func(c *fiber.Ctx) error {
		e, err := s.eventOf(c)
		if err != nil {
			return writeError(c, err)
		}
		key := e.Snapshot
		if which == "crop" {
			key = e.Crop
		}
		if key == "" || s.blobs == nil {
			return writeError(c, fmt.Errorf("%w: event %q has no %s", ErrNotFound, e.ID, which))
		}
		r, _, err := s.blobs.Get(c.UserContext(), key)
		if errors.Is(err, blob.ErrNotFound) {
			return writeError(c, fmt.Errorf("%w: event %q has no %s", ErrNotFound, e.ID, which))
		}
		if err != nil {
			return writeError(c, err)
		}
		defer r.Close()
		b, err := io.ReadAll(io.LimitReader(r, 32<<20))
		if err != nil {
			return writeError(c, err)
		}
		c.Set(fiber.HeaderContentType, "image/jpeg")
		return c.Send(b)
	}
}

func (s *Server) deleteEvent(c *fiber.Ctx) error {
	e, err := s.eventOf(c)
	if err != nil {
		return writeError(c, err)
	}
	if err := s.events.Delete(c.UserContext(), e.ID); err != nil {
		if errors.Is(err, events.ErrNotFound) {
			return writeError(c, fmt.Errorf("%w: event %q", ErrNotFound, e.ID))
		}
		return writeError(c, err)
	}
	return c.SendStatus(fiber.StatusNoContent)
}

// liveFeed is one live client's subscription: the NATS callback only
// queues (never blocks), and counts what it had to skip.
type liveFeed struct {
	sub     *nats.Subscription
	ch      chan []byte
	skipped atomic.Uint64
}

func (s *Server) subscribeFeed(subject string, convert func([]byte) ([]byte, bool)) (*liveFeed, error) {
	f := &liveFeed{ch: make(chan []byte, liveQueue)}
	sub, err := s.bus.Conn().Subscribe(subject, func(m *nats.Msg) {
		b, ok := convert(m.Data)
		if !ok {
			return
		}
		select {
		case f.ch <- b:
		default:
			f.skipped.Add(1)
		}
	})
	if err != nil {
		return nil, err
	}
	sub.SetPendingLimits(-1, -1)
	f.sub = sub
	return f, nil
}

// run writes the feed until ctx ends or send fails; before a message that
// follows skipped ones it tells the client how many were skipped.
func (f *liveFeed) run(ctx context.Context, send func(kind string, b []byte) error, keepalive func() error) {
	defer f.sub.Unsubscribe()
	tick := time.NewTicker(15 * time.Second)
	defer tick.Stop()
	var told uint64
	for {
		select {
		case <-ctx.Done():
			return
		case b := <-f.ch:
			if n := f.skipped.Load(); n != told {
				if send("skipped", []byte(`{"skipped":`+strconv.FormatUint(n, 10)+`}`)) != nil {
					return
				}
				told = n
			}
			if send("", b) != nil {
				return
			}
		case <-tick.C:
			if keepalive() != nil {
				return
			}
		}
	}
}

// sse streams a feed as Server-Sent Events named kind.
func (s *Server) sse(c *fiber.Ctx, f *liveFeed, kind string) error {
	c.Set(fiber.HeaderContentType, "text/event-stream")
	c.Set(fiber.HeaderCacheControl, "no-cache")
	c.Set("X-Accel-Buffering", "no")
	ctx := s.ctx
	c.Context().SetBodyStreamWriter(func(w *bufio.Writer) {
		// The first bytes tell the client the stream is open.
		w.WriteString(": open\n\n")
		if w.Flush() != nil {
			_ = f.sub.Unsubscribe()
			return
		}
		f.run(ctx, func(k string, b []byte) error {
			if k == "" {
				k = kind
			}
			w.WriteString("event: " + k + "\ndata: ")
			w.Write(b)
			w.WriteString("\n\n")
			return w.Flush()
		}, func() error {
			w.WriteString(": keepalive\n\n")
			return w.Flush()
		})
	})
	return nil
}

func eventsSubject(s *Server, c *fiber.Ctx) (string, error) {
	cam := c.Query("camera")
	if cam == "" {
		return s.bus.Subjects().Events("*"), nil
	}
	if err := bus.ValidateToken(cam); err != nil {
		return "", invalidf("camera %q: %v", cam, err)
	}
	return s.bus.Subjects().Events(cam), nil
}

// eventJSON passes an event message through when it is one.
func eventJSON(b []byte) ([]byte, bool) {
	return b, len(b) > 0 && b[0] == '{'
}

func (s *Server) eventStream(c *fiber.Ctx) error {
	subj, err := eventsSubject(s, c)
	if err != nil {
		return writeError(c, err)
	}
	f, err := s.subscribeFeed(subj, eventJSON)
	if err != nil {
		return writeError(c, err)
	}
	return s.sse(c, f, "event")
}

func (s *Server) eventWS(c *fiber.Ctx) error {
	subj, err := eventsSubject(s, c)
	if err != nil {
		return writeError(c, err)
	}
	if !websocket.IsWebSocketUpgrade(c) {
		return writeError(c, fiber.NewError(fiber.StatusUpgradeRequired, "this endpoint speaks WebSocket; use /api/v1/events/stream for Server-Sent Events"))
	}
	c.Locals("subject", subj)
	return s.eventsWS(c)
}

func (s *Server) serveEventsWS(conn *websocket.Conn) {
	subj, _ := conn.Locals("subject").(string)
	f, err := s.subscribeFeed(subj, eventJSON)
	if err != nil {
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	go func() {
		defer cancel()
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
		}
	}()
	f.run(ctx, func(kind string, b []byte) error {
		// A skipped notice is {"skipped":n}; events carry "state".
		_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		return conn.WriteMessage(websocket.TextMessage, b)
	}, func() error {
		return conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(10*time.Second))
	})
	_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "stream ended"), time.Now().Add(time.Second))
}

// resultJSON is how clients see a busv1.Result: proto field names.
var resultJSON = protojson.MarshalOptions{UseProtoNames: true}

func (s *Server) resultStream(c *fiber.Ctx) error {
	id := strings.Clone(c.Params("id"))
	if err := bus.ValidateToken(id); err != nil {
		return writeError(c, invalidf("camera %q: %v", id, err))
	}
	if _, _, err := s.cameras.get(c.UserContext(), id); err != nil {
		return writeError(c, err)
	}
	f, err := s.subscribeFeed(s.bus.Subjects().Results(id), func(b []byte) ([]byte, bool) {
		var r busv1.Result
		if proto.Unmarshal(b, &r) != nil {
			return nil, false
		}
		out, err := resultJSON.Marshal(&r)
		return out, err == nil
	})
	if err != nil {
		return writeError(c, err)
	}
	return s.sse(c, f, "result")
}

// zoneJSON is a zone as the API shows and takes it.
type zoneJSON struct {
	Name string `json:"name"`
	// Points are [x, y] corners as fractions of the frame.
	Points     [][2]float32 `json:"points"`
	Labels     []string     `json:"labels"`
	MinDwellMS int64        `json:"min_dwell_ms"`
}

// maxZones bounds a camera's zones.
const maxZones = 32

// zonesProto validates zones of a request and converts them for storage.
func zonesProto(in []zoneJSON) ([]*busv1.Zone, error) {
	if len(in) > maxZones {
		return nil, invalidf("zones: %d, at most %d", len(in), maxZones)
	}
	out := make([]*busv1.Zone, 0, len(in))
	names := map[string]bool{}
	for i, z := range in {
		ez := events.Zone{Name: z.Name, Points: z.Points, Labels: z.Labels, MinDwell: time.Duration(z.MinDwellMS) * time.Millisecond}
		if err := ez.Validate(); err != nil {
			return nil, invalidf("zones[%d]: %v", i, err)
		}
		if z.MinDwellMS > int64(time.Hour/time.Millisecond) {
			return nil, invalidf("zones[%d]: min_dwell_ms %d, at most one hour", i, z.MinDwellMS)
		}
		if names[z.Name] {
			return nil, invalidf("zones[%d]: name %q used twice", i, z.Name)
		}
		names[z.Name] = true
		if len(z.Labels) > 64 {
			return nil, invalidf("zones[%d]: %d labels, at most 64", i, len(z.Labels))
		}
		pz := &busv1.Zone{Name: z.Name, Labels: z.Labels, MinDwellMs: z.MinDwellMS, Points: make([]float32, 0, 2*len(z.Points))}
		for _, p := range z.Points {
			pz.Points = append(pz.Points, p[0], p[1])
		}
		out = append(out, pz)
	}
	return out, nil
}

// zonesJSON shows stored zones.
func zonesJSON(zs []*busv1.Zone) []zoneJSON {
	out := make([]zoneJSON, 0, len(zs))
	for _, z := range zs {
		j := zoneJSON{Name: z.Name, Labels: z.Labels, MinDwellMS: z.MinDwellMs, Points: make([][2]float32, 0, len(z.Points)/2)}
		if j.Labels == nil {
			j.Labels = []string{}
		}
		for i := 0; i+1 < len(z.Points); i += 2 {
			j.Points = append(j.Points, [2]float32{z.Points[i], z.Points[i+1]})
		}
		out = append(out, j)
	}
	return out
}

// zonesOf converts a camera's zones for its recorder.
func zonesOf(cam *busv1.Camera) []events.Zone {
	out := make([]events.Zone, 0, len(cam.Zones))
	for _, j := range zonesJSON(cam.Zones) {
		out = append(out, events.Zone{Name: j.Name, Points: j.Points, Labels: j.Labels, MinDwell: time.Duration(j.MinDwellMS) * time.Millisecond})
	}
	return out
}

// zoneSchema is a camera zone in the OpenAPI document.
var zoneSchema = func() map[string]any {
	point := arr(num)
	point["minItems"], point["maxItems"] = 2, 2
	points := arr(point)
	points["minItems"], points["maxItems"] = 3, 64
	z := obj(map[string]any{"name": str, "points": points, "labels": arr(str), "min_dwell_ms": integ}, "name", "points", "labels", "min_dwell_ms")
	z["description"] = "A polygon on the camera's picture, corners as [x, y] fractions (0..1) of the frame; with zones, only tracks that stayed in one for min_dwell_ms become events"
	return z
}()

// zoneInputSchema is a zone as a request gives it: labels (every label)
// and min_dwell_ms (0) may be left out.
var zoneInputSchema = func() map[string]any {
	z := maps.Clone(zoneSchema)
	z["required"] = []string{"name", "points"}
	return z
}()

// eventSchemas are the OpenAPI schemas of the event API.
func eventSchemas() map[string]any {
	box := obj(map[string]any{"x": num, "y": num, "w": num, "h": num}, "x", "y", "w", "h")
	event := obj(map[string]any{"id": str, "camera": str, "label": str, "track_id": integ, "state": map[string]any{"type": "string", "enum": []string{events.StateStart, events.StateUpdate, events.StateEnd}},
		"start": rest.Time, "end": rest.Time, "best_score": num, "best_box": box, "frames": integ, "zones": arr(str),
		"snapshot": str, "crop": str, "frame_width": integ, "frame_height": integ, "snapshot_url": str, "crop_url": str},
		"id", "camera", "label", "track_id", "state", "start", "best_score", "best_box", "frames", "zones", "frame_width", "frame_height")
	det := obj(map[string]any{"x": num, "y": num, "w": num, "h": num, "label": str, "score": num, "track_id": str, "class_id": integ})
	result := obj(map[string]any{"camera": str, "pipeline": str, "pts": str, "rtp_timestamp": integ, "width": integ, "height": integ,
		"detections": arr(det), "values": map[string]any{"type": "object", "additionalProperties": str}, "latency_ns": str, "sequence": str, "node": str})
	result["description"] = "A busv1.Result in the proto3 JSON mapping (64-bit integers are strings; empty fields are left out)"
	return map[string]any{
		"Zone":      zoneSchema,
		"ZoneInput": zoneInputSchema,
		"Event":     event,
		"EventList": obj(map[string]any{"items": arr(rest.Ref("Event")), "next_cursor": str}, "items"),
		"Result":    result,
	}
}
