package server

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
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
