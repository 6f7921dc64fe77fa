package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	iwebrtc "github.com/imageflowcanvas/imageflow/ingest/webrtc"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	"github.com/imageflowcanvas/imageflow/server/rest"
)

// maxSDP bounds an SDP offer or trickle fragment; real offers are a few KiB.
const maxSDP = 64 << 10

// mediaRoutes lists the WHIP/WHEP endpoints (RFC 9725 and the WHEP draft):
// POST an offer, PATCH trickle ICE, DELETE to end the session.
func (s *Server) mediaRoutes() []route {
	if s.Config.WebRTCUDPAddr == "" {
		return nil
	}
	return []route{
		{Method: "OPTIONS", Path: "/api/v1/cameras/:id/whep", Summary: "WHEP endpoint options: methods and ICE servers (Link headers)", Handler: s.mediaOptions, Statuses: []int{204}, Role: rest.RoleViewer},
		{Method: "POST", Path: "/api/v1/cameras/:id/whep", Summary: "Watch a camera over WebRTC (WHEP): SDP offer in, answer out", Handler: s.whepOffer, Request: "SDP", Response: "SDP", Statuses: []int{201, 400, 404, 415, 429, 503}, Role: rest.RoleViewer, BodyLimit: maxSDP},
		{Method: "PATCH", Path: "/api/v1/cameras/:id/whep/:session", Summary: "Trickle ICE for a WHEP session", Handler: s.patchSession(s.whepOps), Request: "SDPFrag", Statuses: []int{204, 400, 404}, Role: rest.RoleViewer, BodyLimit: maxSDP},
		{Method: "DELETE", Path: "/api/v1/cameras/:id/whep/:session", Summary: "End a WHEP session", Handler: s.deleteSession(s.whepOps), Statuses: []int{200, 404}, Role: rest.RoleViewer, BodyLimit: maxSDP},
		{Method: "OPTIONS", Path: "/api/v1/cameras/:id/whip", Summary: "WHIP endpoint options: methods and ICE servers (Link headers)", Handler: s.mediaOptions, Statuses: []int{204}, Role: rest.RoleOperator},
		{Method: "POST", Path: "/api/v1/cameras/:id/whip", Summary: "Publish a camera over WebRTC (WHIP): SDP offer in, answer out", Handler: s.whipOffer, Request: "SDP", Response: "SDP", Statuses: []int{201, 400, 404, 409, 415, 429, 503}, Role: rest.RoleOperator, BodyLimit: maxSDP},
		{Method: "PATCH", Path: "/api/v1/cameras/:id/whip/:session", Summary: "Trickle ICE for a WHIP session", Handler: s.patchSession(s.whipOps), Request: "SDPFrag", Statuses: []int{204, 400, 404}, Role: rest.RoleOperator, BodyLimit: maxSDP},
		{Method: "DELETE", Path: "/api/v1/cameras/:id/whip/:session", Summary: "End a WHIP session", Handler: s.deleteSession(s.whipOps), Statuses: []int{200, 404}, Role: rest.RoleOperator, BodyLimit: maxSDP},
	}
}

// sdpBody checks the content type and size of an SDP request body.
func sdpBody(c *fiber.Ctx, want string) (string, error) {
	ct := strings.ToLower(strings.TrimSpace(strings.Split(c.Get(fiber.HeaderContentType), ";")[0]))
	if ct != want {
		return "", fiber.NewError(fiber.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type must be %s, got %q", want, ct))
	}
	body := c.Body()
	if len(body) > maxSDP {
		return "", fmt.Errorf("%w: SDP of %d bytes, at most %d", ErrTooLarge, len(body), maxSDP)
	}
	if len(body) == 0 {
		return "", invalidf("empty SDP")
	}
	return string(body), nil
}

// mediaError maps WebRTC errors to the API's errors.
func mediaError(err error) error {
	switch {
	case errors.Is(err, iwebrtc.ErrBadSDP), errors.Is(err, iwebrtc.ErrCodecNotSupported):
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	case errors.Is(err, iwebrtc.ErrSessionNotFound):
		return fmt.Errorf("%w: %v", ErrNotFound, err)
	case errors.Is(err, iwebrtc.ErrNotSupported):
		return fiber.NewError(fiber.StatusNotImplemented, err.Error())
	case errors.Is(err, iwebrtc.ErrClientPendingLimit):
		return fmt.Errorf("%w: %v: connect the ones open or wait for them to time out", rest.ErrTooManyRequests, err)
	case errors.Is(err, iwebrtc.ErrNoVideo), errors.Is(err, iwebrtc.ErrClosed), errors.Is(err, iwebrtc.ErrPendingLimit):
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	case errors.Is(err, ErrPublisherBusy):
		return fmt.Errorf("%w: %v", ErrConflict, err)
	}
	return err
}

// writeMediaError answers an offer's error; over a pending-session limit it
// says when to try again: by then the oldest unconnected session has
// connected or timed out.
func (s *Server) writeMediaError(c *fiber.Ctx, err error) error {
	if errors.Is(err, iwebrtc.ErrPendingLimit) || errors.Is(err, iwebrtc.ErrClientPendingLimit) {
		c.Set(fiber.HeaderRetryAfter, strconv.Itoa(int(math.Ceil(s.webrtcConnectTimeout().Seconds()))))
	}
	return writeError(c, mediaError(err))
}

func (s *Server) webrtcConnectTimeout() time.Duration {
	if s.Config.WebRTCConnectTimeout > 0 {
		return s.Config.WebRTCConnectTimeout
	}
	return iwebrtc.DefaultConnectTimeout
}

func (s *Server) mediaContext(c *fiber.Ctx) (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.ctx, 15*time.Second)
}

// mediaOptions answers OPTIONS on a WHIP/WHEP endpoint. WHIP/WHEP clients
// such as mediamtx's send it before the offer and give up on anything but
// 200/204; it names the endpoint's methods (no PATCH here: trickle ICE goes
// to the session URL) and the ICE servers as Link headers (RFC 9725 §4.6),
// to a client that passed the same auth as POST.
func (s *Server) mediaOptions(c *fiber.Ctx) error {
	c.Set(fiber.HeaderAllow, "OPTIONS, POST")
	c.Set(fiber.HeaderAccessControlAllowMethods, "OPTIONS, POST")
	for _, is := range s.Config.ICEServers {
		for _, u := range is.URLs {
			c.Append(fiber.HeaderLink, iceServerLink(u, is.Username, is.Credential))
		}
	}
	return c.SendStatus(fiber.StatusNoContent)
}

// iceServerLink is one Link header value for an ICE server (RFC 9725 §4.6).
func iceServerLink(url, username, credential string) string {
	quote := strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace
	v := "<" + url + `>; rel="ice-server"`
	if username != "" || credential != "" {
		v += `; username="` + quote(username) + `"; credential="` + quote(credential) + `"; credential-type="password"`
	}
	return v
}

func (s *Server) whepOffer(c *fiber.Ctx) error {
	id, err := pathID(c)
	if err != nil {
		return writeError(c, err)
	}
	offer, err := sdpBody(c, "application/sdp")
	if err != nil {
		return writeError(c, err)
	}
	handlerStart := time.Now()
	if !s.camIndex.has(id) {
		if _, _, err := s.cameras.get(c.UserContext(), id); err != nil {
			return writeError(c, err)
		}
	}
	lookedUp := time.Now()
	ctx, cancel := s.mediaContext(c)
	defer cancel()
	answer, session, err := s.webrtc.NewViewer(ctx, id, c.IP(), offer, s.hub, iwebrtc.BusResults{Conn: s.bus.Conn(), Subjects: s.bus.Subjects()})
	if err != nil {
		return s.writeMediaError(c, err)
	}
	if s.Logger.Enabled(ctx, slog.LevelDebug) {
		// Where a join's time goes outside the engine (scripts/bench/vs-mediamtx.sh -steps).
		msSince := func(a, b time.Time) float64 { return float64(b.Sub(a).Microseconds()) / 1000 }
		s.Logger.Debug("whep offer", "camera", id, "session", session,
			"conn_to_handler_ms", msSince(c.Context().ConnTime(), handlerStart),
			"camera_lookup_ms", msSince(handlerStart, lookedUp), "new_viewer_ms", msSince(lookedUp, time.Now()),
			"start_unix_us", handlerStart.UnixMicro(), "end_unix_us", time.Now().UnixMicro())
	}
	c.Location("/api/v1/cameras/" + id + "/whep/" + session)
	c.Set(fiber.HeaderContentType, "application/sdp")
	return c.Status(fiber.StatusCreated).SendString(answer)
}

func (s *Server) whipOffer(c *fiber.Ctx) error {
	id, err := pathID(c)
	if err != nil {
		return writeError(c, err)
	}
	offer, err := sdpBody(c, "application/sdp")
	if err != nil {
		return writeError(c, err)
	}
	sink, release, err := s.super.acquirePublisher(id)
	if err != nil {
		return writeError(c, mediaError(err))
	}
	ctx, cancel := s.mediaContext(c)
	defer cancel()
	answer, session, err := s.whip.Offer(ctx, id, c.IP(), offer, sink, release)
	if err != nil {
		release()
		return s.writeMediaError(c, err)
	}
	c.Location("/api/v1/cameras/" + id + "/whip/" + session)
	c.Set(fiber.HeaderContentType, "application/sdp")
	return c.Status(fiber.StatusCreated).SendString(answer)
}

// sessionOps are the per-session operations WHIP and WHEP share.
type sessionOps struct {
	kind   string
	camera func(session string) string
	patch  func(session, fragment string) error
	remove func(session string) error
}

func (s *Server) whepOps() sessionOps {
	return sessionOps{"WHEP", s.webrtc.SessionCamera, s.webrtc.PatchViewer, s.webrtc.CloseSession}
}

func (s *Server) whipOps() sessionOps {
	return sessionOps{"WHIP", s.whip.Camera, s.whip.Patch, s.whip.Delete}
}

// session finds the session of the path, checking it belongs to the camera
// of the path so one camera's URL cannot end another's session.
func (o sessionOps) session(c *fiber.Ctx) (string, error) {
	session := c.Params("session")
	if o.camera(session) != c.Params("id") {
		return "", fmt.Errorf("%w: %s session %q", ErrNotFound, o.kind, session)
	}
	return session, nil
}

// patchSession applies trickle ICE (RFC 9725 section 4.3).
func (s *Server) patchSession(ops func() sessionOps) fiber.Handler {
	return func(c *fiber.Ctx) error {
		o := ops()
		frag, err := sdpBody(c, "application/trickle-ice-sdpfrag")
		if err != nil {
			return writeError(c, err)
		}
		session, err := o.session(c)
		if err != nil {
			return writeError(c, err)
		}
		if err := o.patch(session, frag); err != nil {
			return writeError(c, mediaError(err))
		}
		return c.SendStatus(fiber.StatusNoContent)
	}
}

// deleteSession ends a session.
func (s *Server) deleteSession(ops func() sessionOps) fiber.Handler {
	return func(c *fiber.Ctx) error {
		o := ops()
		session, err := o.session(c)
		if err != nil {
			return writeError(c, err)
		}
		if err := o.remove(session); err != nil {
			return writeError(c, mediaError(err))
		}
		return c.SendStatus(fiber.StatusOK)
	}
}

// startWebRTC opens the shared WebRTC port and the WHIP endpoint.
func (s *Server) startWebRTC() error {
	if s.Config.WebRTCUDPAddr == "" {
		return nil
	}
	// One budget of unconnected sessions for viewers and publishers.
	pending := iwebrtc.NewPendingLimits(s.Config.WebRTCMaxPending, s.Config.WebRTCMaxPendingPerClient)
	eng, err := iwebrtc.NewEngine(iwebrtc.EngineConfig{
		UDPAddr:          s.Config.WebRTCUDPAddr,
		TCPAddr:          s.Config.WebRTCTCPAddr,
		ICEServers:       s.Config.ICEServers,
		HostAddresses:    s.Config.WebRTCHosts,
		ConnectTimeout:   s.webrtcConnectTimeout(),
		Pending:          pending,
		TranscodeWidth:   s.Config.WebRTCTranscodeWidth,
		TranscodeBitrate: s.Config.WebRTCTranscodeBitrate,
		Logger:           s.Logger.With("component", "webrtc"),
	})
	if err != nil {
		return fmt.Errorf("webrtc: %w", err)
	}
	s.webrtc = eng
	s.listen.WebRTCUDP = eng.UDPAddr().String()
	if host, port, _ := net.SplitHostPort(s.Config.WebRTCUDPAddr); host == "" {
		// Every interface is served; the engine reports only the first.
		s.listen.WebRTCUDP = ":" + port
		if port == "0" {
			_, p, _ := net.SplitHostPort(eng.UDPAddr().String())
			s.listen.WebRTCUDP = ":" + p
		}
	}
	if a := eng.TCPAddr(); a != nil {
		s.listen.WebRTCTCP = a.String()
	}
	s.whip, err = iwebrtc.NewPublisher(iwebrtc.PublisherConfig{
		API: eng.API(), Configuration: eng.Configuration(), ConnectTimeout: s.webrtcConnectTimeout(),
		Pending: pending, Logger: s.Logger.With("component", "whip"),
	})
	return err
}

// SubscribeResults calls fn with each pipeline result of a camera
// (ifc.results.<cam>) until the returned function is called; for code that
// embeds the server, such as tests.
func (s *Server) SubscribeResults(cam string, fn func(*busv1.Result)) (func(), error) {
	return iwebrtc.BusResults{Conn: s.bus.Conn(), Subjects: s.bus.Subjects()}.SubscribeResults(cam, fn)
}
