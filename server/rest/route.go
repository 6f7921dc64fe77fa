package rest

import (
	"strings"

	"github.com/gofiber/fiber/v2"
)

// Role is what a token may do; roles are ordered, each includes the ones
// below it.
type Role uint8

// Roles, lowest first. The zero value is no role at all.
const (
	RoleNone Role = iota
	// RoleViewer watches and reads: GETs, WHEP, RTSP read, progress streams.
	RoleViewer
	// RoleOperator also changes cameras and pipelines, publishes and runs batches.
	RoleOperator
	// RoleAdmin may do everything.
	RoleAdmin
)

// ParseRole reads a role name of the configuration.
func ParseRole(s string) (Role, bool) {
	switch strings.ToLower(s) {
	case "viewer":
		return RoleViewer, true
	case "operator":
		return RoleOperator, true
	case "admin":
		return RoleAdmin, true
	}
	return RoleNone, false
}

func (r Role) String() string {
	switch r {
	case RoleViewer:
		return "viewer"
	case RoleOperator:
		return "operator"
	case RoleAdmin:
		return "admin"
	}
	return "none"
}

// Route is one endpoint. The same table registers the handlers, decides who
// may call them and how large a body they take, and writes the OpenAPI
// document, so none of these can drift apart or be forgotten.
type Route struct {
	// Method and Path (fiber syntax, "/api/v1/cameras/:id").
	Method, Path, Summary string
	// Request and Response name schemas of the OpenAPI document; "SDP" is
	// application/sdp, "SDPFrag" application/trickle-ice-sdpfrag, "Upload" and "TryUpload"
	// multipart/form-data.
	Request, Response string
	// ResponseTypes are the content types of the success answer when it is
	// not JSON (images, zips, event streams); Response then describes it.
	ResponseTypes []string
	// Query documents the query parameters the handler reads.
	Query    []QueryParam
	Statuses []int
	Handler  fiber.Handler

	// Role is the least role a caller needs. Deny by default: a route that
	// does not say is admin-only.
	Role Role
	// Open routes need no token at all (health, the web UI's files).
	Open bool
	// TokenQuery accepts the token as ?token= as well, for WebSocket and
	// EventSource, which browsers cannot give headers.
	TokenQuery bool
	// BodyLimit caps the request body in bytes; 0 takes the server's
	// default. It is checked before any of the body is read.
	BodyLimit int64
	// StreamBody marks a handler that reads the body as a stream itself
	// (uploads), within BodyLimit; other handlers get it whole.
	StreamBody bool
}

// QueryParam is one documented query parameter.
type QueryParam struct {
	Name, Description string
	// Schema is the parameter's schema (String when nil).
	Schema map[string]any
}

// Needs is the least role the route requires (admin when unset).
func (r Route) Needs() Role {
	if r.Role == RoleNone {
		return RoleAdmin
	}
	return r.Role
}
