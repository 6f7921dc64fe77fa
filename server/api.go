package server

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/recover"
	"github.com/valyala/fasthttp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/ingest/usb"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	"github.com/imageflowcanvas/imageflow/record"
	"github.com/imageflowcanvas/imageflow/redact"
	"github.com/imageflowcanvas/imageflow/server/rest"
)

func (s *Server) routes() []route {
	return append([]route{
		{Method: "GET", Path: "/api/v1/health", Summary: "Liveness", Handler: s.health, Response: "Health", Statuses: []int{200}, Role: rest.RoleViewer, Open: !s.Config.HealthAuth},
		{Method: "GET", Path: "/api/v1/ready", Summary: "Readiness: bus and stores up", Handler: s.ready, Response: "Health", Statuses: []int{200, 503}, Role: rest.RoleViewer, Open: !s.Config.HealthAuth},
		{Method: "GET", Path: "/api/v1/cameras", Summary: "List cameras", Handler: s.listCameras, Response: "CameraList", Statuses: []int{200}, Role: rest.RoleViewer},
		{Method: "POST", Path: "/api/v1/cameras", Summary: "Create a camera", Handler: s.createCamera, Request: "CameraInput", Response: "Camera", Statuses: []int{201, 400, 409, 413}, Role: rest.RoleOperator},
		s.sourceTestRoute(),
		{Method: "GET", Path: "/api/v1/cameras/:id", Summary: "Get a camera with its live state", Handler: s.getCamera, Response: "Camera", Statuses: []int{200, 400, 404}, Role: rest.RoleViewer},
		{Method: "PUT", Path: "/api/v1/cameras/:id", Summary: "Replace a camera", Handler: s.updateCamera, Request: "CameraInput", Response: "Camera", Statuses: []int{200, 400, 404, 409}, Role: rest.RoleOperator},
		{Method: "DELETE", Path: "/api/v1/cameras/:id", Summary: "Delete a camera", Handler: s.deleteCamera, Statuses: []int{204, 400, 404}, Role: rest.RoleOperator},
		{Method: "GET", Path: "/api/v1/pipelines", Summary: "List pipelines", Handler: s.listPipelines, Response: "PipelineList", Statuses: []int{200}, Role: rest.RoleViewer},
		{Method: "POST", Path: "/api/v1/pipelines", Summary: "Create a pipeline (validated DAG)", Handler: s.createPipeline, Request: "PipelineInput", Response: "Pipeline", Statuses: []int{201, 400, 409, 413}, Role: rest.RoleOperator},
		s.tryRoute(),
		{Method: "GET", Path: "/api/v1/pipelines/:id", Summary: "Get a pipeline", Handler: s.getPipeline, Response: "Pipeline", Statuses: []int{200, 400, 404}, Role: rest.RoleViewer},
		{Method: "PUT", Path: "/api/v1/pipelines/:id", Summary: "Replace a pipeline", Handler: s.updatePipeline, Request: "PipelineInput", Response: "Pipeline", Statuses: []int{200, 400, 404, 409}, Role: rest.RoleOperator},
		{Method: "DELETE", Path: "/api/v1/pipelines/:id", Summary: "Delete a pipeline not used by a camera", Handler: s.deletePipeline, Statuses: []int{204, 400, 404, 409}, Role: rest.RoleOperator},
		s.monitoringRoute(),
		{Method: "GET", Path: "/api/v1/nodes", Summary: "List the cluster's live nodes with their load", Handler: s.listNodes, Response: "NodeList", Statuses: []int{200}, Role: rest.RoleViewer},
		{Method: "GET", Path: "/api/v1/devices", Summary: "List USB/V4L2 capture devices and their formats", Handler: s.listDevices, Response: "DeviceList", Statuses: []int{200}, Role: rest.RoleViewer},
		{Method: "GET", Path: "/api/v1/openapi.json", Summary: "This document", Handler: s.openAPI, Response: "OpenAPIDocument", Statuses: []int{200}, Role: rest.RoleViewer},
	}, s.processorRoutes()...)
}

// allRoutes is the REST table plus the media endpoints (WHIP/WHEP) and the
// batch API: every documented endpoint.
func (s *Server) allRoutes() []route {
	return append(append(append(append(append(s.routes(), s.mediaRoutes()...), s.overlayRoutes()...), s.batchRoutes()...), s.recordingRoutes()...), s.eventRoutes()...)
}

// methodAll registers a route for every method.
const methodAll = "ALL"

// appRoutes is every route the HTTP server registers: the documented ones,
// /metrics, the API's not-found answer and the web UI.
func (s *Server) appRoutes() []route {
	notFound := func(c *fiber.Ctx) error {
		return writeError(c, fmt.Errorf("%w: no route %s %s", ErrNotFound, c.Method(), c.Path()))
	}
	ui := s.webUIHandler()
	return append(s.allRoutes(),
		route{Method: "GET", Path: "/metrics", Handler: s.metricsHandler(), Role: rest.RoleViewer, Open: !s.Config.MetricsAuth},
		// The API page holds no data; it asks for the document with the UI's token.
		route{Method: "GET", Path: "/api/docs", Handler: s.apiDocsHandler(), Open: true},
		route{Method: methodAll, Path: "/api/*", Handler: notFound, Role: rest.RoleViewer},
		// The web UI's files hold no data; the page asks for a token.
		route{Method: "GET", Path: "/*", Handler: ui, Open: true},
		route{Method: "HEAD", Path: "/*", Handler: ui, Open: true},
	)
}

func (s *Server) newApp() *fiber.App {
	return s.buildApp(s.appRoutes())
}

// buildApp registers routes behind their guard. Routing is case-sensitive
// and strict about trailing slashes, so one path names one route and the
// guard that runs is the one of the handler that runs.
func (s *Server) buildApp(routes []route) *fiber.App {
	limit := s.Config.BodyLimit
	for _, r := range routes {
		limit = max(limit, int(r.BodyLimit))
	}
	app := fiber.New(fiber.Config{
		AppName:               "imageflow",
		DisableStartupMessage: true,
		CaseSensitive:         true,
		StrictRouting:         true,
		// Bodies reach the handler as a stream: the route's guard checks the
		// token and the route's body limit before any of it is read, and
		// uploads go to the blob store part by part.
		StreamRequestBody: true,
		BodyLimit:         limit,
		// Batch handlers parse multipart themselves (streaming, with their own
		// limits); fasthttp's pre-parse would cap a form at 1000 parts and do
		// the work twice.
		DisablePreParseMultipartForm: true,
		// Path parameters and headers outlive their handler (WHEP/WHIP
		// sessions keep the camera id, SSE streams write after the handler
		// returned); by default fiber hands out strings over buffers it
		// reuses for the next request.
		Immutable: true,
		// The headers must arrive within the header timeout (a client
		// dribbling them, slowloris, is cut off); HeaderReceived below gives
		// the body its own time.
		ReadTimeout: s.Config.HTTPHeaderTimeout,
		IdleTimeout: s.Config.HTTPIdleTimeout,
		ErrorHandler: func(c *fiber.Ctx, err error) error {
			var fe *fiber.Error
			if errors.As(err, &fe) && fe.Code == fiber.StatusRequestEntityTooLarge {
				err = fmt.Errorf("%w: body over the limit of %d bytes", ErrTooLarge, limit)
			}
			return writeError(c, err)
		},
	})
	app.Server().HeaderReceived = func(*fasthttp.RequestHeader) fasthttp.RequestConfig {
		return fasthttp.RequestConfig{ReadTimeout: s.Config.HTTPReadTimeout}
	}
	// A bug in one handler answers 500 and is logged; it never takes the
	// server (and every camera) down.
	app.Use(recover.New(recover.Config{EnableStackTrace: true, StackTraceHandler: func(c *fiber.Ctx, e any) {
		s.Logger.Error("handler panic", "method", c.Method(), "route", c.Route().Path, "panic", fmt.Sprint(e))
	}}))
	app.Use(s.metrics.middleware, s.cors)
	for _, r := range routes {
		if r.Method == methodAll {
			app.All(r.Path, s.guard(r), r.Handler)
		} else {
			app.Add(r.Method, r.Path, s.guard(r), r.Handler)
		}
	}
	return app
}

func (s *Server) health(c *fiber.Ctx) error {
	return c.JSON(fiber.Map{"status": "ok"})
}

func (s *Server) ready(c *fiber.Ctx) error {
	if err := s.bus.Ready(c.UserContext()); err != nil {
		return writeError(c, fmt.Errorf("%w: %v", ErrUnavailable, err))
	}
	if _, err := s.bus.KV(bus.BucketCameras).Status(c.UserContext()); err != nil {
		return writeError(c, fmt.Errorf("%w: camera store: %v", ErrUnavailable, err))
	}
	if _, err := s.bus.Objects().Status(c.UserContext()); err != nil {
		return writeError(c, fmt.Errorf("%w: object store: %v", ErrUnavailable, err))
	}
	if s.placement == nil {
		return c.JSON(fiber.Map{"status": "ready"})
	}
	// A cluster node serves only while its JetStream has a meta leader (a
	// quorum of nodes reachable).
	leader := s.bus.MetaLeader()
	if leader == "" {
		return writeError(c, fmt.Errorf("%w: no JetStream meta leader", ErrUnavailable))
	}
	return c.JSON(fiber.Map{"status": "ready", "node": s.Config.Node, "meta_leader": leader})
}

func decodeStrict(body []byte, v any) error { return rest.DecodeStrict(body, v) }

func pathID(c *fiber.Ctx) (string, error) {
	id := c.Params("id")
	if err := bus.ValidateToken(id); err != nil {
		return "", invalidf("id %q: %v", id, err)
	}
	return id, nil
}

// cameraInput is the writable part of a camera.
type cameraInput struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Source   string `json:"source"`
	Enabled  *bool  `json:"enabled"`
	Pipeline string `json:"pipeline"`
	Archive  bool   `json:"archive"`
	// Record keeps the camera's video (package record); RecordRetention is
	// a duration ("72h", default 7 days), RecordMaxBytes a cap (0: none).
	Record          bool   `json:"record"`
	RecordRetention string `json:"record_retention"`
	RecordMaxBytes  int64  `json:"record_max_bytes"`
	// Zones replace the camera's zones (none when left out).
	Zones []zoneJSON `json:"zones"`
	// Node pins the camera to one node of a cluster.
	Node string `json:"node,omitempty"`
	// Labels restrict the camera to nodes carrying all of them.
	Labels []string `json:"labels,omitempty"`
}

// cameraView is a camera as the API shows it: credentials redacted, live
// state beside the configuration.
type cameraView struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Source   string `json:"source"`
	Enabled  bool   `json:"enabled"`
	Pipeline string `json:"pipeline"`
	Archive  bool   `json:"archive"`
	Record   bool   `json:"record"`
	// RecordRetention is the camera's retention as a duration ("168h0m0s").
	RecordRetention string     `json:"record_retention"`
	RecordMaxBytes  int64      `json:"record_max_bytes"`
	CreatedAt       time.Time  `json:"created_at"`
	UpdatedAt       time.Time  `json:"updated_at"`
	State           string     `json:"state"`
	Codec           string     `json:"codec,omitempty"`
	Width           uint32     `json:"width,omitempty"`
	Height          uint32     `json:"height,omitempty"`
	FPS             float64    `json:"fps"`
	Bitrate         float64    `json:"bitrate"`
	LastError       string     `json:"last_error,omitempty"`
	StateSince      time.Time  `json:"state_since"`
	Zones           []zoneJSON `json:"zones"`
	// Node is the pin; Owner the node ingesting the camera now.
	Node   string   `json:"node,omitempty"`
	Labels []string `json:"labels,omitempty"`
	Owner  string   `json:"owner,omitempty"`
}

func (s *Server) viewCamera(cam *busv1.Camera) cameraView {
	v := cameraView{
		ID: cam.Id, Name: cam.Name, Source: RedactURL(cam.Source), Enabled: cam.Enabled,
		Pipeline: cam.Pipeline, Archive: cam.Archive,
		Record: cam.Record, RecordRetention: recordRetention(cam).String(), RecordMaxBytes: cam.RecordMaxBytes,
		CreatedAt: time.Unix(0, cam.CreatedUnixNano).UTC(), UpdatedAt: time.Unix(0, cam.UpdatedUnixNano).UTC(),
		State: "offline", Zones: zonesJSON(cam.Zones), Node: cam.Node, Labels: cam.Labels,
	}
	v.Owner = s.cameraOwner(cam)
	st := s.super.status(cam.Id)
	if st == nil && v.Owner != "" && v.Owner != s.Config.Node {
		st = s.remoteStatus(cam.Id)
	}
	if st != nil {
		v.State, v.Codec, v.Width, v.Height = st.State, st.Codec, st.Width, st.Height
		v.FPS, v.Bitrate, v.LastError = st.Fps, st.Bitrate, redactError(st.LastError, cam.Source)
		v.StateSince = time.Unix(0, st.SinceUnixNano).UTC()
	}
	return v
}

// redactError removes a source URL's secrets from an error text that may
// quote it.
func redactError(msg, source string) string {
	if msg == "" || source == "" {
		return msg
	}
	return redact.Text(msg, source)
}

// checkCamera validates input and fills a stored camera from it. keepSource
// is the stored source: a redacted source sent back unchanged keeps it.
func (s *Server) checkCamera(c *fiber.Ctx, in *cameraInput, keepSource string) (*busv1.Camera, error) {
	if err := bus.ValidateToken(in.ID); err != nil {
		return nil, invalidf("id %q: %v", in.ID, err)
	}
	if len(in.Name) > 256 {
		return nil, invalidf("name: %d characters, at most 256", len(in.Name))
	}
	if keepSource != "" && in.Source == RedactURL(keepSource) {
		in.Source = keepSource
	}
	if err := s.validateSource(in.Source); err != nil {
		return nil, err
	}
	if in.Pipeline != "" {
		if err := bus.ValidateToken(in.Pipeline); err != nil {
			return nil, invalidf("pipeline %q: %v", in.Pipeline, err)
		}
		if _, _, err := s.pipelines.get(c.UserContext(), in.Pipeline); err != nil {
			if errors.Is(err, ErrNotFound) {
				return nil, invalidf("pipeline %q does not exist", in.Pipeline)
			}
			return nil, err
		}
	}
	enabled := true
	if in.Enabled != nil {
		enabled = *in.Enabled
	}
	name := in.Name
	if name == "" {
		name = in.ID
	}
	var retention time.Duration
	if in.RecordRetention != "" {
		d, err := time.ParseDuration(in.RecordRetention)
		if err != nil || d < time.Second {
			return nil, invalidf("record_retention %q: want a duration of at least 1s such as \"72h\"", in.RecordRetention)
		}
		retention = d
	}
	if in.RecordMaxBytes < 0 {
		return nil, invalidf("record_max_bytes %d: must not be negative (0: no cap)", in.RecordMaxBytes)
	}
	zones, err := zonesProto(in.Zones)
	if err != nil {
		return nil, err
	}
	if in.Node != "" {
		if err := bus.ValidateToken(in.Node); err != nil {
			return nil, invalidf("node %q: %v", in.Node, err)
		}
	}
	labels, err := checkLabels("labels", in.Labels)
	if err != nil {
		return nil, err
	}
	return &busv1.Camera{Id: in.ID, Name: name, Source: in.Source, Enabled: enabled, Pipeline: in.Pipeline, Archive: in.Archive,
		Record: in.Record, RecordRetentionNs: int64(retention), RecordMaxBytes: in.RecordMaxBytes, Zones: zones, Node: in.Node,
		Labels: labels}, nil
}

// recordRetention is how long a camera's recordings are kept.
func recordRetention(cam *busv1.Camera) time.Duration {
	if cam.RecordRetentionNs > 0 {
		return time.Duration(cam.RecordRetentionNs)
	}
	return record.DefaultRetention
}

func (s *Server) listCameras(c *fiber.Ctx) error {
	cams, err := s.cameras.list(c.UserContext())
	if err != nil {
		return writeError(c, err)
	}
	items := make([]cameraView, 0, len(cams))
	for _, cam := range cams {
		items = append(items, s.viewCamera(cam))
	}
	return c.JSON(fiber.Map{"items": items})
}

func (s *Server) createCamera(c *fiber.Ctx) error {
	var in cameraInput
	if err := decodeStrict(c.Body(), &in); err != nil {
		return writeError(c, err)
	}
	cam, err := s.checkCamera(c, &in, "")
	if err != nil {
		return writeError(c, err)
	}
	now := time.Now().UnixNano()
	cam.CreatedUnixNano, cam.UpdatedUnixNano = now, now
	if err := s.cameras.create(c.UserContext(), cam.Id, cam); err != nil {
		return writeError(c, err)
	}
	s.Logger.Info("camera created", "camera", cam.Id, "source", RedactURL(cam.Source))
	s.cameraChanged(cam)
	c.Location("/api/v1/cameras/" + cam.Id)
	return c.Status(fiber.StatusCreated).JSON(s.viewCamera(cam))
}

func (s *Server) getCamera(c *fiber.Ctx) error {
	id, err := pathID(c)
	if err != nil {
		return writeError(c, err)
	}
	cam, _, err := s.cameras.get(c.UserContext(), id)
	if err != nil {
		return writeError(c, err)
	}
	return c.JSON(s.viewCamera(cam))
}

func (s *Server) updateCamera(c *fiber.Ctx) error {
	id, err := pathID(c)
	if err != nil {
		return writeError(c, err)
	}
	var in cameraInput
	if err := decodeStrict(c.Body(), &in); err != nil {
		return writeError(c, err)
	}
	if in.ID == "" {
		in.ID = id
	}
	if in.ID != id {
		return writeError(c, invalidf("id %q in the body differs from %q in the path", in.ID, id))
	}
	old, rev, err := s.cameras.get(c.UserContext(), id)
	if err != nil {
		return writeError(c, err)
	}
	cam, err := s.checkCamera(c, &in, old.Source)
	if err != nil {
		return writeError(c, err)
	}
	cam.CreatedUnixNano, cam.UpdatedUnixNano = old.CreatedUnixNano, time.Now().UnixNano()
	if err := s.cameras.update(c.UserContext(), id, cam, rev); err != nil {
		return writeError(c, err)
	}
	s.Logger.Info("camera updated", "camera", id, "source", RedactURL(cam.Source))
	s.cameraChanged(cam)
	return c.JSON(s.viewCamera(cam))
}

func (s *Server) deleteCamera(c *fiber.Ctx) error {
	id, err := pathID(c)
	if err != nil {
		return writeError(c, err)
	}
	if err := s.cameras.delete(c.UserContext(), id); err != nil {
		return writeError(c, err)
	}
	s.camIndex.forget(id)
	if s.placement != nil {
		s.placement.changed()
	} else {
		s.super.remove(id)
	}
	s.Logger.Info("camera deleted", "camera", id)
	return c.SendStatus(fiber.StatusNoContent)
}

var pipelineJSON = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

func writePipeline(c *fiber.Ctx, status int, p *busv1.Pipeline) error {
	b, err := pipelineJSON.Marshal(p)
	if err != nil {
		return writeError(c, err)
	}
	c.Status(status).Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Send(b)
}

// decodePipeline reads a pipeline strictly (unknown fields rejected) and
// validates it against the registry.
func (s *Server) decodePipeline(body []byte, pathID string) (*busv1.Pipeline, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, invalidf("empty body: want a JSON object")
	}
	p := &busv1.Pipeline{}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(body, p); err != nil {
		return nil, invalidf("malformed JSON: %v", err)
	}
	if p.Id == "" {
		p.Id = pathID
	}
	if pathID != "" && p.Id != pathID {
		return nil, invalidf("id %q in the body differs from %q in the path", p.Id, pathID)
	}
	if err := bus.ValidateToken(p.Id); err != nil {
		return nil, invalidf("id %q: %v", p.Id, err)
	}
	if len(p.Name) > 256 || len(p.Description) > 4096 {
		return nil, invalidf("name or description too long")
	}
	if p.Name == "" {
		p.Name = p.Id
	}
	p.CreatedUnixNano, p.UpdatedUnixNano = 0, 0
	if err := s.Registry.ValidatePipeline(p); err != nil {
		return nil, err
	}
	return p, nil
}

func (s *Server) listPipelines(c *fiber.Ctx) error {
	ps, err := s.pipelines.list(c.UserContext())
	if err != nil {
		return writeError(c, err)
	}
	var buf bytes.Buffer
	buf.WriteString(`{"items":[`)
	for i, p := range ps {
		if i > 0 {
			buf.WriteByte(',')
		}
		b, err := pipelineJSON.Marshal(p)
		if err != nil {
			return writeError(c, err)
		}
		buf.Write(b)
	}
	buf.WriteString("]}")
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Send(buf.Bytes())
}

func (s *Server) createPipeline(c *fiber.Ctx) error {
	p, err := s.decodePipeline(c.Body(), "")
	if err != nil {
		return writeError(c, err)
	}
	now := time.Now().UnixNano()
	p.CreatedUnixNano, p.UpdatedUnixNano = now, now
	if err := s.pipelines.create(c.UserContext(), p.Id, p); err != nil {
		return writeError(c, err)
	}
	c.Location("/api/v1/pipelines/" + p.Id)
	return writePipeline(c, fiber.StatusCreated, p)
}

func (s *Server) getPipeline(c *fiber.Ctx) error {
	id, err := pathID(c)
	if err != nil {
		return writeError(c, err)
	}
	p, _, err := s.pipelines.get(c.UserContext(), id)
	if err != nil {
		return writeError(c, err)
	}
	return writePipeline(c, fiber.StatusOK, p)
}

func (s *Server) updatePipeline(c *fiber.Ctx) error {
	id, err := pathID(c)
	if err != nil {
		return writeError(c, err)
	}
	p, err := s.decodePipeline(c.Body(), id)
	if err != nil {
		return writeError(c, err)
	}
	old, rev, err := s.pipelines.get(c.UserContext(), id)
	if err != nil {
		return writeError(c, err)
	}
	p.CreatedUnixNano, p.UpdatedUnixNano = old.CreatedUnixNano, time.Now().UnixNano()
	if err := s.pipelines.update(c.UserContext(), id, p, rev); err != nil {
		return writeError(c, err)
	}
	if s.placement == nil {
		// In a cluster every node's pipelines watch restarts the cameras
		// it ingests, this one's included (placement.watchPipelines).
		s.super.pipelineChanged(id)
	}
	return writePipeline(c, fiber.StatusOK, p)
}

func (s *Server) deletePipeline(c *fiber.Ctx) error {
	id, err := pathID(c)
	if err != nil {
		return writeError(c, err)
	}
	cams, err := s.cameras.list(c.UserContext())
	if err != nil {
		return writeError(c, err)
	}
	for _, cam := range cams {
		if cam.Pipeline == id {
			return writeError(c, fmt.Errorf("%w: pipeline %q is used by camera %q", ErrConflict, id, cam.Id))
		}
	}
	if err := s.pipelines.delete(c.UserContext(), id); err != nil {
		return writeError(c, err)
	}
	return c.SendStatus(fiber.StatusNoContent)
}

// cloneCamera copies a stored camera for goroutines that outlive a request.
func cloneCamera(c *busv1.Camera) *busv1.Camera { return proto.Clone(c).(*busv1.Camera) }

func (s *Server) listDevices(c *fiber.Ctx) error {
	devs, err := usb.ListDevices()
	if err != nil {
		return writeError(c, err)
	}
	if devs == nil {
		devs = []usb.Device{}
	}
	return c.JSON(fiber.Map{"items": devs})
}
