// Package rest is the one request-handling layer every REST and media
// endpoint goes through: the route type endpoints are declared with, the
// error sentinels and their HTTP statuses, the one JSON error shape, strict
// JSON decoding and the OpenAPI document written from the routes.
package rest

import (
	"errors"
	"fmt"

	"github.com/gofiber/fiber/v2"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/processors"
)

// API errors: handlers wrap them with %w and StatusOf maps them to statuses.
var (
	// ErrNotFound: the resource does not exist (404).
	ErrNotFound = errors.New("not found")
	// ErrExists: the resource exists already (409).
	ErrExists = errors.New("already exists")
	// ErrInvalid: bad request input (400).
	ErrInvalid = errors.New("invalid request")
	// ErrUnauthorized: no valid credentials (401).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrForbidden: valid credentials without the right to do this (403).
	ErrForbidden = errors.New("forbidden")
	// ErrConflict: the resource's state does not allow the request (409).
	ErrConflict = errors.New("conflict")
	// ErrUnavailable: a component needed is not up (503).
	ErrUnavailable = errors.New("unavailable")
	// ErrTooLarge: a body, file or file count over a limit (413).
	ErrTooLarge = errors.New("request too large")
	// ErrTooManyRequests: a client over its request rate (429).
	ErrTooManyRequests = errors.New("too many requests")
)

// Kind returns a sentinel with its own text that maps to the status of kind,
// for packages that need a more specific error (batch's "pipeline not found").
func Kind(text string, kind error) error { return &kindError{text: text, kind: kind} }

type kindError struct {
	text string
	kind error
}

func (e *kindError) Error() string { return e.text }
func (e *kindError) Unwrap() error { return e.kind }

// Invalidf is an ErrInvalid with a message.
func Invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// ErrorBody is the one JSON error shape of the API.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the content of ErrorBody.
type ErrorDetail struct {
	Status  int    `json:"status"`
	Code    string `json:"code"`
	Message string `json:"message"`
	// Step names the pipeline step a validation error belongs to.
	Step string `json:"step,omitempty"`
}

// StatusOf maps an error to its HTTP status and error code, in one place.
func StatusOf(err error) (int, string) {
	var fe *fiber.Error
	var se *processors.StepError
	switch {
	case errors.As(err, &fe):
		return fe.Code, codeOf(fe.Code)
	case errors.Is(err, ErrNotFound):
		return fiber.StatusNotFound, "not_found"
	case errors.Is(err, ErrExists), errors.Is(err, ErrConflict):
		return fiber.StatusConflict, "conflict"
	case errors.Is(err, ErrUnauthorized):
		return fiber.StatusUnauthorized, "unauthorized"
	case errors.Is(err, ErrForbidden):
		return fiber.StatusForbidden, "forbidden"
	case errors.Is(err, ErrTooLarge):
		return fiber.StatusRequestEntityTooLarge, "too_large"
	case errors.Is(err, ErrTooManyRequests):
		return fiber.StatusTooManyRequests, "too_many_requests"
	case errors.Is(err, ErrUnavailable):
		return fiber.StatusServiceUnavailable, "unavailable"
	case errors.Is(err, ErrInvalid), errors.Is(err, bus.ErrInvalidToken), errors.As(err, &se),
		errors.Is(err, processors.ErrNoSteps), errors.Is(err, processors.ErrTooManySteps):
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
	case 403:
		return "forbidden"
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
	case 426:
		return "upgrade_required"
	case 429:
		return "too_many_requests"
	case 503:
		return "unavailable"
	}
	if status >= 500 {
		return "internal"
	}
	return "error"
}

// WriteError answers with the JSON error shape and the error's status.
func WriteError(c *fiber.Ctx, err error) error {
	status, code := StatusOf(err)
	body := ErrorBody{Error: ErrorDetail{Status: status, Code: code, Message: err.Error()}}
	var se *processors.StepError
	if errors.As(err, &se) {
		body.Error.Step = se.Step
	}
	if status == fiber.StatusUnauthorized {
		c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="imageflow"`)
	}
	return c.Status(status).JSON(body)
}
