package rest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/gofiber/fiber/v2"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/processors"
)

// The one mapping from errors to statuses, including the sentinels of the
// packages below (bus, processors) and Kind errors of packages above.
func TestStatusOf(t *testing.T) {
	closed := Kind("batch manager closed", ErrUnavailable)
	for _, c := range []struct {
		err  error
		want int
		code string
	}{
		{fmt.Errorf("camera %q: %w", "x", ErrNotFound), 404, "not_found"},
		{Kind("pipeline not found", ErrNotFound), 404, "not_found"},
		{ErrExists, 409, "conflict"},
		{ErrConflict, 409, "conflict"},
		{Invalidf("bad"), 400, "invalid"},
		{fmt.Errorf("id: %w", bus.ErrInvalidToken), 400, "invalid"},
		{&processors.StepError{Step: "s", Err: errors.New("x")}, 400, "invalid"},
		{processors.ErrNoSteps, 400, "invalid"},
		{ErrUnauthorized, 401, "unauthorized"},
		{ErrForbidden, 403, "forbidden"},
		{ErrTooLarge, 413, "too_large"},
		{ErrTooManyRequests, 429, "too_many_requests"},
		{closed, 503, "unavailable"},
		{fiber.NewError(fiber.StatusUpgradeRequired, "ws"), 426, "upgrade_required"},
		{errors.New("boom"), 500, "internal"},
	} {
		st, code := StatusOf(c.err)
		if st != c.want || code != c.code {
			t.Errorf("%v: %d %s, want %d %s", c.err, st, code, c.want, c.code)
		}
	}
	if closed.Error() != "batch manager closed" || !errors.Is(closed, ErrUnavailable) {
		t.Fatalf("Kind: %q", closed)
	}
}

func TestDecodeStrict(t *testing.T) {
	var v struct{ A int }
	for _, bad := range []string{"", "  ", `{"A":1,"B":2}`, `{"A":1} {}`, `{"A":`} {
		if err := DecodeStrict([]byte(bad), &v); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if err := DecodeStrict([]byte(` {"A":7} `), &v); err != nil || v.A != 7 {
		t.Fatalf("good body: %v %+v", err, v)
	}
}
