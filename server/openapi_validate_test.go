package server

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
)

// servedOpenAPI fetches the document from a server started with API tokens
// on, so the security schemes and the 401/403 answers are in it.
func servedOpenAPI(t *testing.T) []byte {
	t.Helper()
	cfg := testConfig(t.TempDir())
	cfg.APIKeys = []APIKey{{Role: "viewer", SHA256: sha("openapi-viewer")}}
	ts := startServer(t, cfg)
	st, body, _ := ts.do("GET", "/api/v1/openapi.json", "openapi-viewer", nil)
	if st != 200 {
		t.Fatalf("openapi.json: %d %s", st, body)
	}
	return body
}

// validateOpenAPI loads raw with kin-openapi and runs its validator,
// examples included.
func validateOpenAPI(raw []byte) (*openapi3.T, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(raw)
	if err != nil {
		return nil, err
	}
	return doc, doc.Validate(context.Background(), openapi3.EnableExamplesValidation())
}

// The served document is valid OpenAPI 3 and complete: every operation has
// an id, every JSON request a body schema, every success a described
// answer, every error the one Error shape, and the routes that accept
// ?token= say so in their security.
func TestOpenAPIValidates(t *testing.T) {
	raw := servedOpenAPI(t)
	doc, err := validateOpenAPI(raw)
	if err != nil {
		t.Fatalf("the served document does not validate: %v", err)
	}
	if doc.Components == nil || doc.Components.SecuritySchemes["bearer"] == nil || doc.Components.SecuritySchemes["tokenQuery"] == nil {
		t.Fatalf("security schemes bearer and tokenQuery missing")
	}
	if q := doc.Components.SecuritySchemes["tokenQuery"].Value; q.Type != "apiKey" || q.In != "query" || q.Name != "token" {
		t.Errorf("tokenQuery scheme is %+v, want an apiKey in the query named token", q)
	}
	ops := 0
	ids := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			ops++
			name := method + " " + path
			if op.OperationID == "" || ids[op.OperationID] {
				t.Errorf("%s: operationId %q missing or repeated", name, op.OperationID)
			}
			ids[op.OperationID] = true
			if op.RequestBody != nil {
				for ct, mt := range op.RequestBody.Value.Content {
					if mt.Schema == nil {
						t.Errorf("%s: request body %s has no schema", name, ct)
					}
				}
			}
			for code, resp := range op.Responses.Map() {
				if resp.Value.Description == nil || *resp.Value.Description == "" {
					t.Errorf("%s %s: no description", name, code)
				}
				if code >= "400" {
					mt := resp.Value.Content.Get("application/json")
					if mt == nil || mt.Schema == nil || mt.Schema.Ref != "#/components/schemas/Error" {
						t.Errorf("%s %s: the error answer does not reference the Error component", name, code)
					}
				}
			}
			if op.Security != nil && len(*op.Security) == 0 && !strings.HasSuffix(path, "/health") && !strings.HasSuffix(path, "/ready") {
				t.Errorf("%s: documented as open", name)
			}
		}
	}
	if ops < 30 {
		t.Fatalf("only %d operations", ops)
	}
	// The batch progress streams take ?token=; their security says so.
	for _, p := range []string{"/api/v1/executions/{id}/events", "/api/v1/executions/{id}/ws"} {
		op := doc.Paths.Value(p).Get
		if op == nil || op.Security == nil || !hasScheme(*op.Security, "tokenQuery") || !hasScheme(*op.Security, "bearer") {
			t.Errorf("%s: security should offer bearer and tokenQuery", p)
		}
	}
	if op := doc.Paths.Value("/api/v1/cameras").Get; op.Security != nil && hasScheme(*op.Security, "tokenQuery") {
		t.Errorf("GET /api/v1/cameras does not accept ?token=, yet documents it")
	}
	// SDP and uploads are described as what they are.
	whep := doc.Paths.Value("/api/v1/cameras/{id}/whep").Post
	if whep.RequestBody.Value.Content.Get("application/sdp") == nil || whep.Responses.Value("201").Value.Content.Get("application/sdp") == nil {
		t.Errorf("WHEP offer/answer are not application/sdp")
	}
	upload := doc.Paths.Value("/api/v1/executions").Post
	if mt := upload.RequestBody.Value.Content.Get("multipart/form-data"); mt == nil || mt.Schema.Value.Properties["files"] == nil {
		t.Errorf("the batch upload is not multipart/form-data with files")
	}
}

func hasScheme(reqs openapi3.SecurityRequirements, name string) bool {
	for _, r := range reqs {
		if _, ok := r[name]; ok {
			return true
		}
	}
	return false
}

// The validator can fail: the served document with one dangling $ref added
// is refused, naming the missing schema.
func TestOpenAPIValidatorRefusesDanglingRef(t *testing.T) {
	raw := servedOpenAPI(t)
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
	schemas["Camera"].(map[string]any)["properties"].(map[string]any)["owner"] = map[string]any{"$ref": "#/components/schemas/NoSuchSchema"}
	broken, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := validateOpenAPI(broken); err == nil || !strings.Contains(err.Error(), "NoSuchSchema") {
		t.Fatalf("a dangling $ref passed validation (err %v)", err)
	}
	if _, err := validateOpenAPI(raw); err != nil {
		t.Fatalf("the unchanged document does not validate: %v", err)
	}
}

// The document the web UI's client is generated from (imageflow openapi)
// is the one a server with default settings and tokens on serves.
func TestOpenAPIGeneratedMatchesServed(t *testing.T) {
	raw := servedOpenAPI(t)
	gen, err := json.Marshal(OpenAPIDocument(Defaults()))
	if err != nil {
		t.Fatal(err)
	}
	var served, generated any
	if err := json.Unmarshal(raw, &served); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(gen, &generated); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(served, generated) {
		t.Fatalf("imageflow openapi differs from the served document:\n%s\n%s", gen, raw)
	}
}

// Real answers of a running server match the schemas the document gives
// them (required fields, types, the error shape): the document describes
// what the server sends, not what it once meant to.
func TestOpenAPIResponsesMatchSchemas(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.APIKeys = []APIKey{{Role: "operator", SHA256: sha("openapi-operator")}}
	ts := startServer(t, cfg)
	const tok = "openapi-operator"
	_, raw, _ := ts.do("GET", "/api/v1/openapi.json", tok, nil)
	doc, err := validateOpenAPI(raw)
	if err != nil {
		t.Fatal(err)
	}
	check := func(method, path, docPath string, body any, wantStatus int) {
		t.Helper()
		st, out, hdr := ts.do(method, path, tok, body)
		if st != wantStatus {
			t.Fatalf("%s %s: %d, want %d: %s", method, path, st, wantStatus, out)
		}
		op := doc.Paths.Value(docPath).GetOperation(method)
		if op == nil {
			t.Fatalf("%s %s is not documented", method, docPath)
		}
		req, _ := http.NewRequest(method, ts.base+path, nil)
		in := &openapi3filter.ResponseValidationInput{
			RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req,
				Route: &routers.Route{Spec: doc, Path: docPath, PathItem: doc.Paths.Value(docPath), Method: method, Operation: op}},
			Status: st, Header: hdr,
			Options: &openapi3filter.Options{IncludeResponseStatus: true},
		}
		in.SetBodyBytes(out)
		if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
			t.Errorf("%s %s answers %d outside its schema: %v\n%s", method, path, st, err, out)
		}
	}
	pipe := pipelineBody("thumbs", step("a", "resize", map[string]any{"width": 200}))
	check("POST", "/api/v1/pipelines", "/api/v1/pipelines", pipe, 201)
	check("GET", "/api/v1/pipelines", "/api/v1/pipelines", nil, 200)
	check("GET", "/api/v1/pipelines/thumbs", "/api/v1/pipelines/{id}", nil, 200)
	check("POST", "/api/v1/cameras", "/api/v1/cameras", map[string]any{"id": "cam1", "source": "publish", "pipeline": "thumbs"}, 201)
	check("GET", "/api/v1/cameras", "/api/v1/cameras", nil, 200)
	check("GET", "/api/v1/cameras/cam1", "/api/v1/cameras/{id}", nil, 200)
	check("GET", "/api/v1/cameras/nope", "/api/v1/cameras/{id}", nil, 404)
	check("POST", "/api/v1/cameras", "/api/v1/cameras", map[string]any{"id": "cam1", "source": "publish"}, 409)
	check("GET", "/api/v1/processors", "/api/v1/processors", nil, 200)
	check("GET", "/api/v1/executions", "/api/v1/executions", nil, 200)
	check("GET", "/api/v1/executions?state=bogus", "/api/v1/executions", nil, 400)
	check("GET", "/api/v1/health", "/api/v1/health", nil, 200)
}
