package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/imageflowcanvas/imageflow/server/rest"
)

// keyring maps the SHA-256 of every accepted token to its role. Tokens are
// looked up by their hash, so neither the plain token nor its timing is
// compared against secrets.
type keyring map[[sha256.Size]byte]rest.Role

func newKeyring(c *Config) keyring {
	k := keyring{}
	for _, t := range c.APITokens {
		k[sha256.Sum256([]byte(t))] = rest.RoleAdmin
	}
	for _, key := range c.APIKeys {
		var h [sha256.Size]byte
		if b, err := hex.DecodeString(key.SHA256); err == nil && len(b) == len(h) {
			copy(h[:], b)
			role, _ := rest.ParseRole(key.Role)
			k[h] = role
		}
	}
	return k
}

// authOn reports whether any token is configured; without one every
// request has every right (the loopback default).
func (s *Server) authOn() bool {
	return len(s.Config.APITokens)+len(s.Config.APIKeys) > 0 || s.Config.JWTJWKSURL != ""
}

// roleOf is the role of a token, RoleNone when it is not known.
func (s *Server) roleOf(tok string) rest.Role {
	role, _ := s.lookup(tok)
	return role
}

// lookup gives a token's role and its hash.
func (s *Server) lookup(tok string) (rest.Role, [sha256.Size]byte) {
	if tok == "" {
		return rest.RoleNone, [sha256.Size]byte{}
	}
	h := sha256.Sum256([]byte(tok))
	role := s.keys[h]
	if role == rest.RoleNone && s.jwt != nil && looksLikeJWT(tok) {
		role = s.jwt.role(tok)
	}
	return role, h
}

// bearer extracts the token of an "Authorization: Bearer <token>" header.
func bearer(header string) string {
	const prefix = "bearer "
	if len(header) > len(prefix) && strings.EqualFold(header[:len(prefix)], prefix) {
		return strings.TrimSpace(header[len(prefix):])
	}
	return ""
}

// guard is the one gate in front of every handler: it is registered with
// the route itself, so the route that matched is the route whose rules are
// applied and no spelling of a path can reach a handler around it. In order:
// cross-origin writes, the token and its role, the client's request rate,
// and the body limit, before any of the body is read.
func (s *Server) guard(r rest.Route) fiber.Handler {
	limit := r.BodyLimit
	if limit <= 0 {
		limit = int64(s.Config.BodyLimit)
	}
	need := r.Needs()
	return func(c *fiber.Ctx) error {
		if err := s.checkOrigin(c); err != nil {
			return s.reject(c, err)
		}
		client := c.IP()
		if !r.Open && s.authOn() {
			tok := bearer(c.Get(fiber.HeaderAuthorization))
			// Browsers cannot set headers on WebSocket/EventSource: those
			// routes, and only those, take ?token=.
			if tok == "" && r.TokenQuery {
				tok = c.Query("token")
			}
			// A client that kept failing is refused before its token is
			// even looked at, so a right guess does not tell it anything.
			if wait, locked := s.authFails.locked(client); locked {
				c.Set(fiber.HeaderRetryAfter, retryAfter(wait))
				return s.reject(c, fmt.Errorf("%w: too many failed authentications from %s; retry after %ss", rest.ErrTooManyRequests, client, retryAfter(wait)))
			}
			role, hash := s.lookup(tok)
			if role == rest.RoleNone {
				return s.reject(c, s.failedAuth(c, client, tok == ""))
			}
			if role < need {
				return s.reject(c, fmt.Errorf("%w: %s %s needs the %s role; this token is %s", rest.ErrForbidden, c.Method(), r.Path, need, role))
			}
			// The rate is per token (a hash prefix names it in logs).
			client = "token:" + hex.EncodeToString(hash[:8])
		}
		if wait, ok := s.limits.allow(client); !ok {
			c.Set(fiber.HeaderRetryAfter, retryAfter(wait))
			return s.reject(c, fmt.Errorf("%w: over %g requests per second; retry after %s", rest.ErrTooManyRequests, s.Config.RateLimit, retryAfter(wait)+"s"))
		}
		return s.limitBody(c, r, limit)
	}
}

// limitBody refuses a body over limit from its Content-Length before reading
// any of it, and reads a chunked one only up to the limit. Stream routes
// read the body themselves, with a longer read deadline.
func (s *Server) limitBody(c *fiber.Ctx, r rest.Route, limit int64) error {
	req := c.Request()
	if n := req.Header.ContentLength(); int64(n) > limit {
		return s.reject(c, fmt.Errorf("%w: body of %d bytes is over the limit of %d bytes; %s %s takes at most %d", rest.ErrTooLarge, n, limit, c.Method(), r.Path, limit))
	}
	if r.StreamBody {
		if conn := c.Context().Conn(); conn != nil && s.Config.UploadTimeout > 0 {
			_ = conn.SetReadDeadline(time.Now().Add(s.Config.UploadTimeout))
		}
		err := c.Next()
		// What the handler left of the body (a multipart epilogue) must not
		// be read as the next request: drain a little, else close.
		if req.IsBodyStream() && !c.Context().Response.ConnectionClose() {
			if n, _ := io.Copy(io.Discard, io.LimitReader(c.Context().RequestBodyStream(), 64<<10)); n == 64<<10 {
				c.Context().SetConnectionClose()
			}
		}
		return err
	}
	if req.IsBodyStream() {
		body, err := io.ReadAll(io.LimitReader(c.Context().RequestBodyStream(), limit+1))
		if err != nil {
			return s.reject(c, rest.Invalidf("reading the body: %v", err))
		}
		if int64(len(body)) > limit {
			return s.reject(c, fmt.Errorf("%w: body over the limit of %d bytes; %s %s takes at most %d", rest.ErrTooLarge, limit, c.Method(), r.Path, limit))
		}
		req.SetBody(body)
	}
	return c.Next()
}

// reject answers with err and closes the connection when a body may still
// be unread, so its bytes are never parsed as the next request.
func (s *Server) reject(c *fiber.Ctx, err error) error {
	if n := c.Request().Header.ContentLength(); c.Request().IsBodyStream() && n != 0 {
		// A client still sending when the connection closes meets a reset
		// instead of this answer: take (and drop) a body of modest size
		// first, within a second. Large announced bodies are not read.
		if n > 0 && n <= maxDrainedBody || n == -1 {
			if conn := c.Context().Conn(); conn != nil {
				_ = conn.SetReadDeadline(time.Now().Add(time.Second))
			}
			_, _ = io.Copy(io.Discard, io.LimitReader(c.Context().RequestBodyStream(), maxDrainedBody))
		}
		c.Context().SetConnectionClose()
	}
	return writeError(c, err)
}

// maxDrainedBody bounds what reject reads of a refused body.
const maxDrainedBody = 1 << 20

func retryAfter(d time.Duration) string {
	return strconv.Itoa(int((d + time.Second - 1) / time.Second))
}

// failedAuth counts a failed attempt of a client and logs it (route and
// client, never the token); the attempt that uses up the client's allowance
// is logged as the start of its lockout.
func (s *Server) failedAuth(c *fiber.Ctx, client string, missing bool) error {
	s.authFails.allow(client)
	if _, locked := s.authFails.locked(client); locked {
		s.Logger.Warn("authentication failures: client locked out", "client", client, "method", c.Method(), "route", c.Route().Path,
			"per_minute", s.Config.AuthFailuresPerMinute)
	}
	s.Logger.Warn("authentication failed", "client", client, "method", c.Method(), "route", c.Route().Path, "token_sent", !missing)
	if missing {
		return &unauthorizedError{"missing bearer token: send Authorization: Bearer <token>"}
	}
	return &unauthorizedError{"invalid bearer token"}
}

type unauthorizedError struct{ msg string }

func (e *unauthorizedError) Error() string { return e.msg }
func (e *unauthorizedError) Unwrap() error { return ErrUnauthorized }

// checkOrigin refuses a state-changing request a browser sends from another
// origin (a web page posting to us from a victim's browser, text/plain
// included) unless cors_origins lists it. Clients without Origin (curl,
// ffmpeg, SDKs) and the UI itself (same origin) pass.
func (s *Server) checkOrigin(c *fiber.Ctx) error {
	switch c.Method() {
	case fiber.MethodGet, fiber.MethodHead, fiber.MethodOptions:
		return nil
	}
	origin := c.Get(fiber.HeaderOrigin)
	if origin == "" || c.Get("Sec-Fetch-Site") == "same-origin" {
		return nil
	}
	// Same host as the request asked for: the UI, also behind a proxy that
	// ends TLS (the scheme differs there).
	if u, err := url.Parse(origin); err == nil && u.Host != "" && strings.EqualFold(u.Host, c.Hostname()) {
		return nil
	}
	if s.corsAllowed(origin) {
		return nil
	}
	return fmt.Errorf("%w: cross-origin %s from %q refused; list the origin in cors_origins to allow it", rest.ErrForbidden, c.Method(), origin)
}

// corsAllowed reports whether cors_origins lists origin.
func (s *Server) corsAllowed(origin string) bool {
	for _, o := range s.Config.CORSOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	return false
}

// cors answers the preflight of, and labels responses to, the origins in
// cors_origins, so their pages can call the API with a token; other
// origins get no CORS headers and the browser keeps their pages out.
func (s *Server) cors(c *fiber.Ctx) error {
	origin := c.Get(fiber.HeaderOrigin)
	if origin == "" || !s.corsAllowed(origin) {
		return c.Next()
	}
	c.Set(fiber.HeaderAccessControlAllowOrigin, origin)
	c.Vary(fiber.HeaderOrigin)
	if c.Method() == fiber.MethodOptions && c.Get(fiber.HeaderAccessControlRequestMethod) != "" {
		c.Set(fiber.HeaderAccessControlAllowMethods, "GET, HEAD, POST, PUT, PATCH, DELETE")
		c.Set(fiber.HeaderAccessControlAllowHeaders, "Authorization, Content-Type, If-Match")
		c.Set(fiber.HeaderAccessControlExposeHeaders, "Location, ETag, Link, Retry-After")
		c.Set(fiber.HeaderAccessControlMaxAge, "600")
		return c.SendStatus(fiber.StatusNoContent)
	}
	return c.Next()
}

// limiters keeps one token bucket per client (a token's hash or an IP).
// Idle buckets are dropped, so the map stays as small as the set of active
// clients.
type limiters struct {
	every rate.Limit
	burst int

	mu      sync.Mutex
	clients map[string]*rate.Limiter
	adds    int
}

func newLimiters(perSecond float64, burst int) *limiters {
	if perSecond <= 0 {
		return nil
	}
	return &limiters{every: rate.Limit(perSecond), burst: max(burst, 1), clients: map[string]*rate.Limiter{}}
}

// locked reports whether client has no token left, and for how long.
func (l *limiters) locked(client string) (time.Duration, bool) {
	if l == nil {
		return 0, false
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.clients[client]
	if lim == nil {
		return 0, false
	}
	if t := lim.TokensAt(now); t < 1 {
		return time.Duration((1 - t) / float64(l.every) * float64(time.Second)), true
	}
	return 0, false
}

// allow takes one token of client; when none is left it says how long to wait.
func (l *limiters) allow(client string) (time.Duration, bool) {
	if l == nil {
		return 0, true
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.clients[client]
	if lim == nil {
		l.adds++
		if l.adds%1024 == 0 {
			for k, v := range l.clients {
				if v.TokensAt(now) >= float64(l.burst) {
					delete(l.clients, k)
				}
			}
		}
		lim = rate.NewLimiter(l.every, l.burst)
		l.clients[client] = lim
	}
	r := lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d, false
	}
	return 0, true
}

// grpcNeeds is the role a gRPC method needs: reads are a viewer's,
// publishing and processing an operator's, anything unknown an admin's.
func grpcNeeds(method string) rest.Role {
	_, name, _ := strings.Cut(strings.TrimPrefix(method, "/"), "/")
	switch name {
	case "Info", "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "Check", "Watch":
		return rest.RoleViewer
	case "Publish", "Process", "ProcessStream", "ModelInfer":
		return rest.RoleOperator
	}
	return rest.RoleAdmin
}

func (s *Server) grpcCheck(ctx context.Context, method string) error {
	if !s.authOn() {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	role := rest.RoleNone
	for _, v := range md.Get("authorization") {
		if r := s.roleOf(bearer(v)); r > role {
			role = r
		}
	}
	if role == rest.RoleNone {
		return status.Error(codes.Unauthenticated, "missing or invalid bearer token (metadata authorization: Bearer <token>)")
	}
	if need := grpcNeeds(method); role < need {
		return status.Errorf(codes.PermissionDenied, "%s needs the %s role; this token is %s", method, need, role)
	}
	return nil
}

// grpcUnaryAuth checks the token and turns a handler panic into an Internal
// error, so one bad call never takes the server down.
func (s *Server) grpcUnaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	if err := s.grpcCheck(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	defer s.grpcRecover(info.FullMethod, &err)
	return h(ctx, req)
}

func (s *Server) grpcStreamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
	if err := s.grpcCheck(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	defer s.grpcRecover(info.FullMethod, &err)
	return h(srv, ss)
}

func (s *Server) grpcRecover(method string, err *error) {
	if r := recover(); r != nil {
		s.Logger.Error("grpc handler panic", "method", method, "panic", fmt.Sprint(r))
		*err = status.Error(codes.Internal, "internal error")
	}
}

// rtspAuth lets RTSP clients carry a token as the password (any user name):
// publishing needs an operator, reading a viewer.
func (s *Server) rtspAuth(id, user, pass string, publish bool) bool {
	role := s.roleOf(pass)
	if publish {
		return role >= rest.RoleOperator
	}
	return role >= rest.RoleViewer
}
