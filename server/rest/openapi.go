package rest

import (
	"net/http"
	"strconv"
	"strings"
)

// Document builds the OpenAPI 3 document of routes; schemas are the
// component schemas they reference. secured documents the token
// requirements and the 401/403 answers.
func Document(routes []Route, schemas map[string]any, secured bool) map[string]any {
	paths := map[string]any{}
	for _, r := range routes {
		p := OpenAPIPath(r.Path)
		item, _ := paths[p].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[p] = item
		}
		item[strings.ToLower(r.Method)] = operation(r, secured)
	}
	all := map[string]any{
		"Error": withExample(Obj(map[string]any{"error": Obj(map[string]any{
			"status":  Integer,
			"code":    map[string]any{"type": "string", "description": "Stable machine-readable code: invalid, unauthorized, forbidden, not_found, conflict, too_large, too_many_requests, unavailable, internal, ..."},
			"message": String,
			"step":    map[string]any{"type": "string", "description": "The pipeline step a validation error belongs to"},
		}, "status", "code", "message")}, "error"),
			map[string]any{"error": map[string]any{"status": 404, "code": "not_found", "message": "camera cam1: not found"}}),
		"SDP":     map[string]any{"type": "string", "description": "A session description (RFC 8866)"},
		"SDPFrag": map[string]any{"type": "string", "description": "Trickle ICE candidates as an SDP fragment (RFC 8840)"},
		"Binary":  map[string]any{"type": "string", "format": "binary"},
	}
	for k, v := range schemas {
		all[k] = v
	}
	doc := map[string]any{
		"openapi": "3.0.3",
		"info": map[string]any{"title": "ImageFlowCanvas API", "version": "1",
			"description": "REST, WHIP/WHEP and batch API of the ImageFlowCanvas media server. Every error answers with the one Error shape."},
		"paths": paths,
		"components": map[string]any{
			"securitySchemes": map[string]any{
				"bearer": map[string]any{"type": "http", "scheme": "bearer", "description": "An API token or JWT as Authorization: Bearer <token>"},
				"tokenQuery": map[string]any{"type": "apiKey", "in": "query", "name": "token",
					"description": "The token as ?token=, only on the routes browsers cannot give headers (WebSocket, EventSource)"},
			},
			"schemas": all,
		},
	}
	if secured {
		doc["security"] = []any{map[string]any{"bearer": []any{}}}
	}
	return doc
}

func operation(r Route, secured bool) map[string]any {
	op := map[string]any{"summary": r.Summary, "operationId": OperationID(r.Method, r.Path)}
	if tag := tagOf(r.Path); tag != "" {
		op["tags"] = []any{tag}
	}
	var params []any
	for _, seg := range strings.Split(r.Path, "/") {
		if strings.HasPrefix(seg, ":") {
			params = append(params, map[string]any{"name": seg[1:], "in": "path", "required": true,
				"schema": map[string]any{"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}})
		}
	}
	for _, q := range r.Query {
		schema := q.Schema
		if schema == nil {
			schema = String
		}
		params = append(params, map[string]any{"name": q.Name, "in": "query", "description": q.Description, "schema": schema})
	}
	if params != nil {
		op["parameters"] = params
	}
	if r.Request != "" {
		ct := "application/json"
		switch r.Request {
		case "SDP":
			ct = "application/sdp"
		case "SDPFrag":
			ct = "application/trickle-ice-sdpfrag"
		case "Upload", "TryUpload":
			ct = "multipart/form-data"
		}
		op["requestBody"] = map[string]any{"required": true, "content": map[string]any{ct: map[string]any{"schema": Ref(r.Request)}}}
	}
	errorContent := map[string]any{"application/json": map[string]any{"schema": Ref("Error")}}
	responses := map[string]any{}
	for _, st := range r.Statuses {
		resp := map[string]any{"description": statusText(st)}
		switch {
		case st >= 400:
			resp["content"] = errorContent
		case st == 101 || st == 204:
		case len(r.ResponseTypes) > 0:
			schema := Ref("Binary")
			if r.Response != "" {
				schema = Ref(r.Response)
			}
			content := map[string]any{}
			for _, ct := range r.ResponseTypes {
				content[ct] = map[string]any{"schema": schema}
			}
			resp["content"] = content
		case r.Response == "SDP":
			resp["content"] = map[string]any{"application/sdp": map[string]any{"schema": Ref("SDP")}}
			resp["headers"] = map[string]any{"Location": map[string]any{"description": "The session's URL, for trickle ICE (PATCH) and to end it (DELETE)", "schema": String}}
		case r.Response != "":
			resp["content"] = map[string]any{"application/json": map[string]any{"schema": Ref(r.Response)}}
		}
		responses[strconv.Itoa(st)] = resp
	}
	// What the route guard and the server answer on any route: a client
	// over its rate, a body over the route's limit, a handler's bug.
	retryAfter := map[string]any{"Retry-After": map[string]any{"description": "Seconds to wait", "schema": Integer}}
	responses["429"] = map[string]any{"description": "Over the request rate or locked out after failed authentications", "headers": retryAfter, "content": errorContent}
	if r.Request != "" {
		responses["413"] = map[string]any{"description": "Body over the route's limit", "content": errorContent}
	}
	responses["500"] = map[string]any{"description": "Internal error", "content": errorContent}
	switch {
	case r.Open:
		op["security"] = []any{}
	case secured:
		responses["401"] = map[string]any{"description": "No valid token", "content": errorContent,
			"headers": map[string]any{"WWW-Authenticate": map[string]any{"description": "Bearer realm", "schema": String}}}
		if r.Needs() > RoleViewer {
			responses["403"] = map[string]any{"description": "The token's role is below " + r.Needs().String(), "content": errorContent}
		}
		if r.TokenQuery {
			op["security"] = []any{map[string]any{"bearer": []any{}}, map[string]any{"tokenQuery": []any{}}}
		}
	}
	op["responses"] = responses
	return op
}

// tagOf groups operations by their first path segment under /api/v1/.
func tagOf(path string) string {
	rest, ok := strings.CutPrefix(path, "/api/v1/")
	if !ok {
		return ""
	}
	seg, _, _ := strings.Cut(rest, "/")
	if seg == "health" || seg == "ready" || seg == "openapi.json" {
		return "service"
	}
	return seg
}

func withExample(schema map[string]any, example any) map[string]any {
	schema["example"] = example
	return schema
}

// Schema helpers for the component schemas.
var (
	String  = map[string]any{"type": "string"}
	Bool    = map[string]any{"type": "boolean"}
	Number  = map[string]any{"type": "number"}
	Integer = map[string]any{"type": "integer"}
	Time    = map[string]any{"type": "string", "format": "date-time"}
)

// Obj is an object schema with its properties and required ones.
func Obj(props map[string]any, required ...string) map[string]any {
	o := map[string]any{"type": "object", "properties": props}
	if len(required) > 0 {
		o["required"] = required
	}
	return o
}

// Arr is an array schema of items.
func Arr(items any) map[string]any { return map[string]any{"type": "array", "items": items} }

// Ref points at a component schema.
func Ref(name string) map[string]any {
	return map[string]any{"$ref": "#/components/schemas/" + name}
}

// OpenAPIPath turns fiber's /cameras/:id into OpenAPI's /cameras/{id}.
func OpenAPIPath(p string) string {
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

// OperationID turns "POST /api/v1/cameras/:id/whep" into "postCamerasIdWhep".
func OperationID(method, path string) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(method))
	for _, seg := range strings.FieldsFunc(strings.TrimPrefix(path, "/api/v1/"), func(r rune) bool { return r == '/' || r == ':' || r == '.' }) {
		b.WriteString(strings.ToUpper(seg[:1]) + seg[1:])
	}
	return b.String()
}
