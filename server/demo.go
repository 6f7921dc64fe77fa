package server

import "context"

// ensureDemo creates the demo camera and its pipeline on first start.
func (s *Server) ensureDemo(ctx context.Context) error { return nil }
