package server

import (
	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/imageflowcanvas/imageflow/webapp"
)

func (s *Server) metricsHandler() fiber.Handler {
	return adaptor.HTTPHandler(promhttp.HandlerFor(s.Gatherer, promhttp.HandlerOpts{}))
}

// webUIHandler serves the embedded React build (or a "not built" page) for
// every path the API does not own, so client-side routes like /cameras/demo
// load.
func (s *Server) webUIHandler() fiber.Handler {
	return adaptor.HTTPHandler(webapp.Handler())
}
