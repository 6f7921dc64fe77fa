package server

// mediaRoutes lists the WHIP/WHEP endpoints.
func (s *Server) mediaRoutes() []route { return nil }
