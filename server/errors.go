package server

import (
	"errors"
	"fmt"

	"github.com/gofiber/fiber/v2"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/processors"
)

// API errors; handlers wrap them with %w and apiError maps them to statuses.
var (
	ErrNotFound     = errors.New("not found")
	ErrExists       = errors.New("already exists")
	ErrInvalid      = errors.New("invalid request")
	ErrUnauthorized = errors.New("unauthorized")
	ErrConflict     = errors.New("conflict")
	ErrUnavailable  = errors.New("unavailable")
	ErrTooLarge     = errors.New("request too large")
)

// errorBody is the one JSON error shape of the API.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Status  int    `json:"status"`
	Code    string `json:"code"`
	Message string `json:"message"`
	// Step names the pipeline step a validation error belongs to.
	Step string `json:"step,omitempty"`
}

// statusOf maps an error to its HTTP status in one place.
func statusOf(err error) (int, string) {
	var fe *fiber.Error
	switch {
	case errors.As(err, &fe):
		return fe.Code, codeOf(fe.Code)
	case errors.Is(err, ErrNotFound):
		return fiber.StatusNotFound, "not_found"
	case errors.Is(err, ErrExists), errors.Is(err, ErrConflict):
		return fiber.StatusConflict, "conflict"
	case errors.Is(err, ErrUnauthorized):
		return fiber.StatusUnauthorized, "unauthorized"
	case errors.Is(err, ErrTooLarge):
		return fiber.StatusRequestEntityTooLarge, "too_large"
	case errors.Is(err, ErrUnavailable):
		return fiber.StatusServiceUnavailable, "unavailable"
	case errors.Is(err, ErrInvalid), errors.Is(err, bus.ErrInvalidToken),
		errors.Is(err, processors.ErrNoSteps), errors.Is(err, processors.ErrTooManySteps):
		return fiber.StatusBadRequest, "invalid"
	}
	var se *processors.StepError
	if errors.As(err, &se) {
		return fiber.StatusBadRequest, "invalid"
	}
	return fiber.StatusInternalServerError, "internal"
}

func codeOf(status int) string {
	switch status {
	case 400:
		return "invalid"
	case 401:
		return "unauthorized"
	case 404:
		return "not_found"
	case 405:
		return "method_not_allowed"
	case 409:
		return "conflict"
	case 413:
		return "too_large"
	case 415:
		return "unsupported_media_type"
	case 503:
		return "unavailable"
	}
	if status >= 500 {
		return "internal"
	}
	return "error"
}

// writeError answers with the JSON error shape.
func writeError(c *fiber.Ctx, err error) error {
	status, code := statusOf(err)
	body := errorBody{Error: errorDetail{Status: status, Code: code, Message: err.Error()}}
	var se *processors.StepError
	if errors.As(err, &se) {
		body.Error.Step = se.Step
	}
	if status == fiber.StatusUnauthorized {
		c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="imageflow"`)
	}
	return c.Status(status).JSON(body)
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}
