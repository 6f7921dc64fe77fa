package server

import "google.golang.org/grpc"

// registerGRPC adds the gRPC services (streaming, processors).
func (s *Server) registerGRPC(g *grpc.Server) {}
