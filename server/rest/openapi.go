package rest

import (
	"net/http"
	"strconv"
	"strings"
)

// Document builds the OpenAPI 3 document of routes; schemas are the
// component schemas they reference. secured documents the 401 answer.
func Document(routes []Route, schemas map[string]any, secured bool) map[string]any {
	paths := map[string]any{}
	for _, r := range routes {
		p := OpenAPIPath(r.Path)
		item, _ := paths[p].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[p] = item
		}
		op := map[string]any{"summary": r.Summary, "operationId": OperationID(r.Method, r.Path)}
		var params []any
		for _, seg := range strings.Split(r.Path, "/") {
			if strings.HasPrefix(seg, ":") {
				params = append(params, map[string]any{"name": seg[1:], "in": "path", "required": true,
					"schema": map[string]any{"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}})
			}
		}
		if params != nil {
			op["parameters"] = params
		}
		if r.Request != "" {
			ct := "application/json"
			if r.Request == "SDP" {
				ct = "application/sdp"
			} else if r.Request == "Upload" {
				ct = "multipart/form-data"
			}
			op["requestBody"] = map[string]any{"required": true, "content": map[string]any{ct: map[string]any{"schema": Ref(r.Request)}}}
		}
		responses := map[string]any{}
		for _, st := range r.Statuses {
			resp := map[string]any{"description": statusText(st)}
			switch {
			case st >= 400:
				resp["content"] = map[string]any{"application/json": map[string]any{"schema": Ref("Error")}}
			case r.Response == "SDP":
				resp["content"] = map[string]any{"application/sdp": map[string]any{"schema": Ref("SDP")}}
			case r.Response != "" && st != 204:
				resp["content"] = map[string]any{"application/json": map[string]any{"schema": Ref(r.Response)}}
			}
			responses[strconv.Itoa(st)] = resp
		}
		if secured && !r.Open {
			responses["401"] = map[string]any{"description": "Unauthorized", "content": map[string]any{"application/json": map[string]any{"schema": Ref("Error")}}}
		}
		op["responses"] = responses
		item[strings.ToLower(r.Method)] = op
	}
	all := map[string]any{
		"Error": Obj(map[string]any{"error": Obj(map[string]any{"status": Integer, "code": String, "message": String, "step": String})}, "error"),
		"SDP":   map[string]any{"type": "string", "description": "A session description (RFC 8866)"},
	}
	for k, v := range schemas {
		all[k] = v
	}
	return map[string]any{
		"openapi": "3.0.3",
		"info":    map[string]any{"title": "ImageFlowCanvas API", "version": "1"},
		"paths":   paths,
		"components": map[string]any{
			"securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer"}},
			"schemas":         all,
		},
		"security": []any{map[string]any{"bearer": []any{}}},
	}
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
