package rest

import (
	"encoding/json"
	"regexp"
	"testing"
)

// Every $ref of the document names a schema it defines (SDP included).
func TestDocumentRefsResolve(t *testing.T) {
	routes := []Route{
		{Method: "POST", Path: "/api/v1/cameras/:id/whep", Request: "SDP", Response: "SDP", Statuses: []int{201, 400}},
		{Method: "GET", Path: "/api/v1/things", Response: "ThingList", Statuses: []int{200}},
	}
	doc := Document(routes, map[string]any{"ThingList": Obj(map[string]any{"items": Arr(String)})}, true)
	raw, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
	refs := regexp.MustCompile(`"#/components/schemas/([A-Za-z0-9_]+)"`).FindAllStringSubmatch(string(raw), -1)
	if len(refs) < 4 {
		t.Fatalf("only %d refs", len(refs))
	}
	for _, m := range refs {
		if _, ok := schemas[m[1]]; !ok {
			t.Errorf("$ref %s is not defined", m[1])
		}
	}
}
