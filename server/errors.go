package server

import (
	"github.com/gofiber/fiber/v2"

	"github.com/imageflowcanvas/imageflow/server/rest"
)

// The API's errors are package rest's: the names below only keep the
// server's handlers short.
var (
	ErrNotFound     = rest.ErrNotFound
	ErrExists       = rest.ErrExists
	ErrInvalid      = rest.ErrInvalid
	ErrUnauthorized = rest.ErrUnauthorized
	ErrConflict     = rest.ErrConflict
	ErrUnavailable  = rest.ErrUnavailable
	ErrTooLarge     = rest.ErrTooLarge
)

// errorBody is the one error shape of package rest.
type errorBody = rest.ErrorBody

// route is the one route type of package rest.
type route = rest.Route

func writeError(c *fiber.Ctx, err error) error { return rest.WriteError(c, err) }

func invalidf(format string, args ...any) error { return rest.Invalidf(format, args...) }
