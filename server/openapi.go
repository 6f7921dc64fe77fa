package server

import (
	"github.com/gofiber/fiber/v2"

	"github.com/imageflowcanvas/imageflow/server/batch"
	"github.com/imageflowcanvas/imageflow/server/rest"
)

// openAPIDoc builds the OpenAPI 3 document from the route table.
func (s *Server) openAPIDoc() map[string]any {
	return rest.Document(s.allRoutes(), s.openAPISchemas(), s.authOn())
}

// OpenAPIDocument is the document a server with cfg and API tokens on
// serves, built without starting anything: the web UI's client is
// generated from it (imageflow openapi).
func OpenAPIDocument(cfg Config) map[string]any {
	s := &Server{Config: cfg, batch: &batch.Manager{}}
	return rest.Document(s.allRoutes(), s.openAPISchemas(), true)
}

func (s *Server) openAPI(c *fiber.Ctx) error { return c.JSON(s.openAPIDoc()) }

var (
	obj   = rest.Obj
	arr   = rest.Arr
	str   = rest.String
	boo   = rest.Bool
	num   = rest.Number
	integ = rest.Integer
)

func (s *Server) openAPISchemas() map[string]any {
	out := coreSchemas()
	for k, v := range overlaySchemas() {
		out[k] = v
	}
	for k, v := range recordingSchemas() {
		out[k] = v
	}
	for k, v := range eventSchemas() {
		out[k] = v
	}
	for k, v := range monitoringSchemas() {
		out[k] = v
	}
	for k, v := range sourceTestSchemas() {
		out[k] = v
	}
	for k, v := range trySchemas() {
		out[k] = v
	}
	if s.batch != nil {
		for k, v := range s.batch.Schemas() {
			out[k] = v
		}
	}
	return out
}

func coreSchemas() map[string]any {
	stepProps := map[string]any{"id": str, "processor": str, "params": map[string]any{"type": "object", "nullable": true, "additionalProperties": true}, "inputs": arr(str)}
	step := obj(stepProps, "id", "processor")
	storedStep := obj(stepProps, "id", "processor", "params", "inputs")
	camera := obj(map[string]any{"id": str, "name": str, "source": str, "enabled": boo, "pipeline": str, "archive": boo,
		"record": boo, "record_retention": str, "record_max_bytes": integ,
		"created_at": rest.Time, "updated_at": rest.Time, "state": str, "codec": str, "width": integ, "height": integ, "fps": num, "bitrate": num, "last_error": str, "state_since": rest.Time, "zones": arr(rest.Ref("Zone")), "node": str, "labels": arr(str), "owner": str},
		"id", "name", "source", "enabled", "pipeline", "archive", "record", "record_retention", "record_max_bytes", "created_at", "updated_at", "state", "fps", "bitrate", "state_since", "zones")
	pipelineInput := obj(map[string]any{"id": str, "name": str, "description": str, "steps": arr(step)}, "id", "steps")
	pipeline := obj(map[string]any{"id": str, "name": str, "description": str, "steps": arr(storedStep)}, "id", "name", "description", "steps")
	nullableArr := func(items any) map[string]any { a := arr(items); a["nullable"] = true; return a }
	processor := obj(map[string]any{"name": str, "description": str, "outputs": nullableArr(str), "params": nullableArr(obj(map[string]any{
		"name": str, "type": str, "description": str, "default": map[string]any{}, "required": boo, "min": num, "max": num, "choices": arr(str)}, "name", "type", "description")),
		"remote":       map[string]any{"type": "boolean", "description": "A registered grpc://host:port processor (name is its address)"},
		"health":       map[string]any{"type": "string", "description": "A remote's grpc.health.v1 status when listed: SERVING, NOT_SERVING, ... or UNREACHABLE"},
		"health_error": str},
		"name", "description", "params", "outputs")
	cameraInput := obj(map[string]any{"id": str, "name": str, "source": str, "enabled": boo, "pipeline": str, "archive": boo,
		"record": boo, "record_retention": str, "record_max_bytes": integ, "zones": arr(rest.Ref("ZoneInput")), "node": str,
		"labels": map[string]any{"type": "array", "items": str, "description": "In a cluster, only nodes whose node_labels include all of these ingest the camera"}}, "id", "source")
	cameraInput["example"] = map[string]any{"id": "cam1", "name": "Gate", "source": "rtsp://192.0.2.10:554/stream1", "enabled": true, "pipeline": "detect", "archive": false}
	pipelineInput["example"] = map[string]any{"id": "detect", "name": "Detect people", "steps": []any{
		map[string]any{"id": "resize", "processor": "resize", "params": map[string]any{"width": 640}},
		map[string]any{"id": "detect", "processor": "detect", "inputs": []any{"resize"}}}}
	return map[string]any{
		"Health":          obj(map[string]any{"status": str, "node": str, "meta_leader": str}, "status"),
		"OpenAPIDocument": map[string]any{"type": "object", "description": "An OpenAPI 3 document", "additionalProperties": true},
		"CameraInput":     cameraInput,
		"Camera":          camera,
		"CameraList":      obj(map[string]any{"items": arr(camera)}, "items"),
		"PipelineInput":   pipelineInput,
		"Pipeline":        pipeline,
		"PipelineList":    obj(map[string]any{"items": arr(pipeline)}, "items"),
		"Processor":       processor,
		"ProcessorInput":  obj(map[string]any{"address": map[string]any{"type": "string", "description": "grpc://host:port"}}, "address"),
		"ProcessorList":   obj(map[string]any{"items": arr(processor)}, "items"),
		"Device": obj(map[string]any{"path": str, "name": str, "driver": str, "bus_info": str,
			"formats": arr(obj(map[string]any{"fourcc": str, "description": str, "compressed": boo}, "fourcc", "description", "compressed"))},
			"path", "name", "driver", "bus_info", "formats"),
		"Node": obj(map[string]any{"node": str, "role": map[string]any{"type": "string", "enum": []string{"serve", "worker"}, "description": "serve: cameras, API and processors; worker: processors only, never a camera"}, "cameras": integ, "sessions": integ, "cpu": num, "updated_at": rest.Time, "meta_leader": boo, "labels": arr(str)},
			"node", "role", "cameras", "sessions", "cpu", "updated_at", "meta_leader"),
		"NodeList":   obj(map[string]any{"items": arr(rest.Ref("Node"))}, "items"),
		"DeviceList": obj(map[string]any{"items": arr(rest.Ref("Device"))}, "items"),
	}
}
