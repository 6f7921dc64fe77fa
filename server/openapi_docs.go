package server

import (
	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"

	"github.com/imageflowcanvas/imageflow/webapp"
)

// apiDocsHandler serves /api/docs: the API page of the embedded UI, which
// renders GET /api/v1/openapi.json with the self-hosted Swagger UI.
func (s *Server) apiDocsHandler() fiber.Handler {
	return adaptor.HTTPHandler(webapp.DocsHandler())
}
