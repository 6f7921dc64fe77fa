// Package ingest declares what every protocol adapter under ingest/ shares:
// the Source an adapter runs and the Sink it writes access units and state
// to. Adapters never import each other; the server picks one by the camera's
// source URL.
package ingest

import (
	"context"
	"errors"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// Camera states reported in CameraStatus.State.
const (
	StateOffline    = "offline"
	StateConnecting = "connecting"
	StateOnline     = "online"
)

// ErrUnsupportedSource is returned for a source URL no adapter handles.
var ErrUnsupportedSource = errors.New("unsupported source")

// Sink takes what a source produces. Implementations are safe for use from
// one goroutine at a time per camera.
type Sink interface {
	// WriteAccessUnit puts one access unit on the bus. The sink fills camera,
	// sequence and ingest time when they are zero. It never blocks on readers.
	// au and its bytes are the caller's again when it returns (a source may
	// reuse them for the next unit): a sink that keeps them copies them.
	WriteAccessUnit(au *busv1.AccessUnit) error
	// SetState reports a connection state change; err is nil unless the
	// source failed.
	SetState(state string, err error)
	// SetTrack reports the video track's codec and picture size once known.
	SetTrack(codec busv1.Codec, width, height int)
}

// Source is one running camera input. Run returns when ctx ends; a pulled
// source retries its camera itself (backoff capped at 2 s).
type Source interface {
	Run(ctx context.Context) error
}
