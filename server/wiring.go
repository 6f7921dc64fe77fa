package server

import (
	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/processors/builtin"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// This file is where concrete adapters and processors are wired in: the only
// place besides cmd/ that names them.

// registerBuiltins adds the built-in processors.
func registerBuiltins(r *processors.Registry) { builtin.Register(r) }

// sourceFactories maps a source scheme to its ingest adapter.
func (s *Server) sourceFactories() map[string]sourceFactory {
	return map[string]sourceFactory{}
}

// startLive starts a camera's live components (decoder, pipeline) and
// returns their stop functions.
func (s *Server) startLive(cam *busv1.Camera) []func() { return nil }
