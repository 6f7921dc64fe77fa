package server

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/png"
	"io"
	"mime/multipart"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"

	"github.com/imageflowcanvas/imageflow/ingest/usb"
	"github.com/imageflowcanvas/imageflow/record"
	"github.com/imageflowcanvas/imageflow/server/batch"
	"github.com/imageflowcanvas/imageflow/server/rest"
)

// servedOpenAPI fetches the document from a server started with API tokens
// on, so the security schemes and the 401/403 answers are in it.
func servedOpenAPI(t *testing.T) []byte {
	t.Helper()
	cfg := testConfig(t.TempDir())
	cfg.APIKeys = []APIKey{{Role: "viewer", SHA256: sha("openapi-viewer")}}
	return servedDocument(t, startServer(t, cfg), "openapi-viewer")
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

// Real requests and answers of a running server match the schemas the
// document gives them (required fields, types, statuses, the error shape):
// the document describes what the server takes and sends, not what it once
// meant to.
func TestOpenAPIResponsesMatchSchemas(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.APIKeys = []APIKey{{Role: "operator", SHA256: sha("openapi-operator")}}
	ts := startServer(t, cfg)
	const tok = "openapi-operator"
	doc, err := validateOpenAPI(servedDocument(t, ts, tok))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// SDP bodies are text: kin-openapi checks them as strings.
	openapi3filter.RegisterBodyDecoder("application/sdp", openapi3filter.PlainBodyDecoder)
	openapi3filter.RegisterBodyDecoder("application/trickle-ice-sdpfrag", openapi3filter.PlainBodyDecoder)
	// check sends one request, validates it and the answer against the
	// operation docPath documents, and returns the answer's body.
	check := func(method, path, docPath, contentType string, body []byte, wantStatus int) []byte {
		t.Helper()
		op := doc.Paths.Value(docPath).GetOperation(method)
		if op == nil {
			t.Fatalf("%s %s is not documented", method, docPath)
		}
		newReq := func() *http.Request {
			req, err := http.NewRequest(method, ts.base+path, bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if contentType != "" {
				req.Header.Set("Content-Type", contentType)
			}
			req.Header.Set("Authorization", "Bearer "+tok)
			return req
		}
		req := newReq()
		route := &routers.Route{Spec: doc, Path: docPath, PathItem: doc.Paths.Value(docPath), Method: method, Operation: op}
		pathParams := map[string]string{}
		docSegs, segs := strings.Split(docPath, "/"), strings.Split(strings.SplitN(path, "?", 2)[0], "/")
		for i, seg := range docSegs {
			if strings.HasPrefix(seg, "{") && i < len(segs) {
				pathParams[strings.Trim(seg, "{}")] = segs[i]
			}
		}
		reqIn := &openapi3filter.RequestValidationInput{Request: req, PathParams: pathParams, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
		// Requests meant to be refused may well be outside the schema.
		if err := openapi3filter.ValidateRequest(ctx, reqIn); err != nil && wantStatus < 400 {
			t.Errorf("%s %s: the request is outside its documented schema: %v", method, path, err)
		}
		resp, err := http.DefaultClient.Do(newReq())
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != wantStatus {
			t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, wantStatus, out)
		}
		in := &openapi3filter.ResponseValidationInput{RequestValidationInput: reqIn, Status: resp.StatusCode, Header: resp.Header,
			Options: &openapi3filter.Options{IncludeResponseStatus: true}}
		if ct := resp.Header.Get("Content-Type"); strings.HasPrefix(ct, "image/") || strings.HasPrefix(ct, "application/zip") {
			// Binary answers: kin-openapi checks the status and the content
			// type is documented, not the bytes.
			if op.Responses.Status(resp.StatusCode).Value.Content.Get(ct) == nil {
				t.Errorf("%s %s answers %s, not documented", method, path, ct)
			}
			return out
		}
		in.SetBodyBytes(out)
		if err := openapi3filter.ValidateResponse(ctx, in); err != nil {
			t.Errorf("%s %s answers %d outside its schema: %v\n%s", method, path, resp.StatusCode, err, out)
		}
		return out
	}
	jsonBody := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	const js = "application/json"
	check("POST", "/api/v1/pipelines", "/api/v1/pipelines", js, jsonBody(pipelineBody("thumbs", step("a", "resize", map[string]any{"width": 16}))), 201)
	check("GET", "/api/v1/pipelines", "/api/v1/pipelines", "", nil, 200)
	check("GET", "/api/v1/pipelines/thumbs", "/api/v1/pipelines/{id}", "", nil, 200)
	check("POST", "/api/v1/pipelines", "/api/v1/pipelines", js, jsonBody(pipelineBody("bad", step("a", "nosuch", nil))), 400)
	check("POST", "/api/v1/cameras", "/api/v1/cameras", js, jsonBody(map[string]any{"id": "cam1", "source": "publish", "pipeline": "thumbs"}), 201)
	check("GET", "/api/v1/cameras", "/api/v1/cameras", "", nil, 200)
	check("GET", "/api/v1/cameras/cam1", "/api/v1/cameras/{id}", "", nil, 200)
	check("PUT", "/api/v1/cameras/cam1", "/api/v1/cameras/{id}", js, jsonBody(map[string]any{"id": "cam1", "name": "Gate", "source": "publish"}), 200)
	check("GET", "/api/v1/cameras/nope", "/api/v1/cameras/{id}", "", nil, 404)
	check("POST", "/api/v1/cameras", "/api/v1/cameras", js, jsonBody(map[string]any{"id": "cam1", "source": "publish"}), 409)
	check("POST", "/api/v1/cameras/cam1/whep", "/api/v1/cameras/{id}/whep", "application/sdp", []byte("v=0\r\n"), 400)
	check("GET", "/api/v1/cameras/cam1/recordings", "/api/v1/cameras/{id}/recordings", "", nil, 200)
	check("GET", "/api/v1/cameras/cam1/recordings?since=2024-01-01T00:00:00Z&until=2024-01-01T01:00:00Z", "/api/v1/cameras/{id}/recordings", "", nil, 200)
	check("GET", "/api/v1/cameras/cam1/recordings/export?since=2024-01-01T00:00:00Z&until=2024-01-01T00:01:00Z", "/api/v1/cameras/{id}/recordings/export", "", nil, 404)
	check("GET", "/api/v1/cameras/cam1/recordings/export?since=2024-01-01T00:00:00Z", "/api/v1/cameras/{id}/recordings/export", "", nil, 400)
	check("DELETE", "/api/v1/cameras/cam1", "/api/v1/cameras/{id}", "", nil, 204)
	check("GET", "/api/v1/processors", "/api/v1/processors", "", nil, 200)
	check("GET", "/api/v1/health", "/api/v1/health", "", nil, 200)
	check("GET", "/api/v1/ready", "/api/v1/ready", "", nil, 200)

	// A batch execution, from upload to its results.
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	_ = w.WriteField("pipeline", "thumbs")
	fw, _ := w.CreateFormFile("files", "a.png")
	img := image.NewRGBA(image.Rect(0, 0, 32, 24))
	if err := png.Encode(fw, img); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	var created struct{ ID string }
	if err := json.Unmarshal(check("POST", "/api/v1/executions", "/api/v1/executions", w.FormDataContentType(), buf.Bytes(), 202), &created); err != nil || created.ID == "" {
		t.Fatalf("upload: %v %+v", err, created)
	}
	exec := "/api/v1/executions/" + created.ID
	deadline := time.Now().Add(30 * time.Second)
	for {
		var e struct{ State string }
		_ = json.Unmarshal(check("GET", exec, "/api/v1/executions/{id}", "", nil, 200), &e)
		if e.State == "done" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("execution state %q after 30s", e.State)
		}
		time.Sleep(100 * time.Millisecond)
	}
	check("GET", "/api/v1/executions?limit=5&state=done", "/api/v1/executions", "", nil, 200)
	check("GET", "/api/v1/executions?state=bogus", "/api/v1/executions", "", nil, 400)
	check("GET", exec+"/files/0", "/api/v1/executions/{id}/files/{index}", "", nil, 200)
	check("GET", exec+"/files/0/image", "/api/v1/executions/{id}/files/{index}/image", "", nil, 200)
	check("GET", exec+"/results.zip", "/api/v1/executions/{id}/results.zip", "", nil, 200)
	check("GET", exec+"/files/7", "/api/v1/executions/{id}/files/{index}", "", nil, 404)
	check("DELETE", exec+"?purge=true", "/api/v1/executions/{id}", "", nil, 204)
}

// The Go types the handlers encode are what the document says they send
// (and the request types what it says they take): a field added to one
// and not the other fails here.
func TestOpenAPISchemasMatchGoTypes(t *testing.T) {
	schemas := OpenAPIDocument(Defaults())["components"].(map[string]any)["schemas"].(map[string]any)
	for _, c := range []struct {
		schema string
		typ    reflect.Type
		sent   bool
	}{
		{"Camera", reflect.TypeFor[cameraView](), true},
		{"CameraInput", reflect.TypeFor[cameraInput](), false},
		{"Error", reflect.TypeFor[rest.ErrorBody](), true},
		{"Processor", reflect.TypeFor[processorView](), true},
		{"ProcessorInput", reflect.TypeFor[processorInput](), false},
		{"TryResult", reflect.TypeFor[tryResult](), true},
		{"SourceTestInput", reflect.TypeFor[sourceTestInput](), false},
		{"SourceTestResult", reflect.TypeFor[sourceTestResult](), true},
		{"Monitoring", reflect.TypeFor[monitoring](), true},
		{"Device", reflect.TypeFor[usb.Device](), true},
		{"RecordingList", reflect.TypeFor[recordingList](), true},
		{"RecordingSegment", reflect.TypeFor[recordingSegment](), true},
		{"RecordingGap", reflect.TypeFor[record.Gap](), true},
	} {
		for _, d := range rest.SchemaDrift(schemas, c.schema, c.typ, c.sent) {
			t.Errorf("%s", d)
		}
	}
	for name, typ := range batch.SchemaTypes() {
		for _, d := range rest.SchemaDrift(schemas, name, typ, true) {
			t.Errorf("%s", d)
		}
	}
}
