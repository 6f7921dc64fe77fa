package server

import (
	"context"
	"crypto/subtle"
	"fmt"
	"strings"

	"github.com/gofiber/fiber/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// tokenValid compares in constant time against every configured token.
func (s *Server) tokenValid(tok string) bool {
	ok := 0
	for _, t := range s.Config.APITokens {
		ok |= subtle.ConstantTimeCompare([]byte(tok), []byte(t))
	}
	return ok == 1
}

// bearer extracts the token of an "Authorization: Bearer <token>" header.
func bearer(header string) string {
	const prefix = "bearer "
	if len(header) > len(prefix) && strings.EqualFold(header[:len(prefix)], prefix) {
		return strings.TrimSpace(header[len(prefix):])
	}
	return ""
}

// authRequired reports whether a path needs a token under this configuration.
func (s *Server) authRequired(path string) bool {
	if len(s.Config.APITokens) == 0 {
		return false
	}
	switch {
	case path == "/metrics":
		return s.Config.MetricsAuth
	case path == "/api/v1/health" || path == "/api/v1/ready":
		return s.Config.HealthAuth
	case strings.HasPrefix(path, "/api/"):
		return true
	}
	// The web UI's static files hold no data; the page asks for a token.
	return false
}

func (s *Server) authMiddleware(c *fiber.Ctx) error {
	if !s.authRequired(c.Path()) {
		return c.Next()
	}
	tok := bearer(c.Get(fiber.HeaderAuthorization))
	// Browsers cannot set headers on WebSocket/EventSource: accept ?token=
	// there, and only there.
	if tok == "" && (strings.HasSuffix(c.Path(), "/ws") || strings.HasSuffix(c.Path(), "/events")) {
		tok = c.Query("token")
	}
	if tok == "" || !s.tokenValid(tok) {
		return writeError(c, fmtUnauthorized(tok == ""))
	}
	return c.Next()
}

func fmtUnauthorized(missing bool) error {
	if missing {
		return &unauthorizedError{"missing bearer token: send Authorization: Bearer <token>"}
	}
	return &unauthorizedError{"invalid bearer token"}
}

type unauthorizedError struct{ msg string }

func (e *unauthorizedError) Error() string { return e.msg }
func (e *unauthorizedError) Unwrap() error { return ErrUnauthorized }

func (s *Server) grpcCheck(ctx context.Context) error {
	if len(s.Config.APITokens) == 0 {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if tok := bearer(v); tok != "" && s.tokenValid(tok) {
			return nil
		}
	}
	return status.Error(codes.Unauthenticated, "missing or invalid bearer token (metadata authorization: Bearer <token>)")
}

// grpcUnaryAuth checks the token and turns a handler panic into an Internal
// error, so one bad call never takes the server down.
func (s *Server) grpcUnaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	if err := s.grpcCheck(ctx); err != nil {
		return nil, err
	}
	defer s.grpcRecover(info.FullMethod, &err)
	return h(ctx, req)
}

func (s *Server) grpcStreamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
	if err := s.grpcCheck(ss.Context()); err != nil {
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
