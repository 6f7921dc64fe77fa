package server

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"
)

// openAPIDoc builds the OpenAPI 3 document from the route table.
func (s *Server) openAPIDoc() map[string]any {
	paths := map[string]any{}
	for _, r := range s.allRoutes() {
		p := openAPIPath(r.path)
		item, _ := paths[p].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[p] = item
		}
		op := map[string]any{"summary": r.summary, "operationId": operationID(r.method, r.path)}
		var params []any
		for _, seg := range strings.Split(r.path, "/") {
			if strings.HasPrefix(seg, ":") {
				params = append(params, map[string]any{"name": seg[1:], "in": "path", "required": true,
					"schema": map[string]any{"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}})
			}
		}
		if params != nil {
			op["parameters"] = params
		}
		if r.request != "" {
			ct := "application/json"
			if r.request == "SDP" {
				ct = "application/sdp"
			} else if r.request == "Upload" {
				ct = "multipart/form-data"
			}
			op["requestBody"] = map[string]any{"required": true, "content": map[string]any{ct: map[string]any{"schema": schemaRef(r.request)}}}
		}
		responses := map[string]any{}
		for _, st := range r.statuses {
			resp := map[string]any{"description": statusText(st)}
			switch {
			case st >= 400:
				resp["content"] = map[string]any{"application/json": map[string]any{"schema": schemaRef("Error")}}
			case r.response == "SDP":
				resp["content"] = map[string]any{"application/sdp": map[string]any{"schema": map[string]any{"type": "string"}}}
			case r.response != "" && st != 204:
				resp["content"] = map[string]any{"application/json": map[string]any{"schema": schemaRef(r.response)}}
			}
			responses[strconv.Itoa(st)] = resp
		}
		if len(s.Config.APITokens) > 0 {
			responses["401"] = map[string]any{"description": "Unauthorized", "content": map[string]any{"application/json": map[string]any{"schema": schemaRef("Error")}}}
		}
		op["responses"] = responses
		item[strings.ToLower(r.method)] = op
	}
	return map[string]any{
		"openapi": "3.0.3",
		"info":    map[string]any{"title": "ImageFlowCanvas API", "version": "1"},
		"paths":   paths,
		"components": map[string]any{
			"securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer"}},
			"schemas":         s.openAPISchemas(),
		},
		"security": []any{map[string]any{"bearer": []any{}}},
	}
}

func schemaRef(name string) map[string]any {
	return map[string]any{"$ref": "#/components/schemas/" + name}
}

// openAPIPath turns fiber's /cameras/:id into OpenAPI's /cameras/{id}.
func openAPIPath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		if strings.HasPrefix(s, ":") {
			segs[i] = "{" + s[1:] + "}"
		}
	}
	return strings.Join(segs, "/")
}

func statusText(code int) string {
	if t := http.StatusText(code); t != "" {
		return t
	}
	return strconv.Itoa(code)
}

// operationID turns "POST /api/v1/cameras/:id/whep" into "postCamerasIdWhep".
func operationID(method, path string) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(method))
	for _, seg := range strings.FieldsFunc(strings.TrimPrefix(path, "/api/v1/"), func(r rune) bool { return r == '/' || r == ':' || r == '.' }) {
		b.WriteString(strings.ToUpper(seg[:1]) + seg[1:])
	}
	return b.String()
}

func (s *Server) openAPI(c *fiber.Ctx) error { return c.JSON(s.openAPIDoc()) }

func obj(props map[string]any, required ...string) map[string]any {
	o := map[string]any{"type": "object", "properties": props}
	if required != nil {
		o["required"] = required
	}
	return o
}

var (
	str   = map[string]any{"type": "string"}
	boo   = map[string]any{"type": "boolean"}
	num   = map[string]any{"type": "number"}
	integ = map[string]any{"type": "integer"}
)

func arr(items any) map[string]any { return map[string]any{"type": "array", "items": items} }

func (s *Server) openAPISchemas() map[string]any {
	out := coreSchemas()
	if s.batch != nil {
		for k, v := range s.batch.Schemas() {
			out[k] = v
		}
	}
	return out
}

func coreSchemas() map[string]any {
	step := obj(map[string]any{"id": str, "processor": str, "params": map[string]any{"type": "object"}, "inputs": arr(str)}, "id", "processor")
	camera := obj(map[string]any{"id": str, "name": str, "source": str, "enabled": boo, "pipeline": str, "archive": boo,
		"created_at": str, "updated_at": str, "state": str, "codec": str, "width": integ, "height": integ, "fps": num, "bitrate": num, "last_error": str, "state_since": str})
	pipeline := obj(map[string]any{"id": str, "name": str, "description": str, "steps": arr(step)}, "id", "steps")
	processor := obj(map[string]any{"name": str, "description": str, "outputs": arr(str), "params": arr(obj(map[string]any{
		"name": str, "type": str, "description": str, "default": map[string]any{}, "required": boo, "min": num, "max": num, "choices": arr(str)}))})
	return map[string]any{
		"Error":         obj(map[string]any{"error": obj(map[string]any{"status": integ, "code": str, "message": str, "step": str})}, "error"),
		"Health":        obj(map[string]any{"status": str}),
		"CameraInput":   obj(map[string]any{"id": str, "name": str, "source": str, "enabled": boo, "pipeline": str, "archive": boo}, "id", "source"),
		"Camera":        camera,
		"CameraList":    obj(map[string]any{"items": arr(camera)}),
		"Pipeline":      pipeline,
		"PipelineList":  obj(map[string]any{"items": arr(pipeline)}),
		"Processor":     processor,
		"ProcessorList": obj(map[string]any{"items": arr(processor)}),
		"DeviceList": obj(map[string]any{"items": arr(obj(map[string]any{"path": str, "name": str, "driver": str,
			"formats": arr(obj(map[string]any{"fourcc": str, "description": str}))}))}),
	}
}
