package rest

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

type driftItem struct {
	N float64 `json:"n"`
}

type driftThing struct {
	ID    string      `json:"id"`
	Count int         `json:"count,omitempty"`
	At    time.Time   `json:"at"`
	Items []driftItem `json:"items"`
}

// SchemaDrift finds each kind of difference between a Go type and its
// schema, and nothing when they agree.
func TestSchemaDrift(t *testing.T) {
	good := map[string]any{
		"Item":  Obj(map[string]any{"n": Number}, "n"),
		"Thing": Obj(map[string]any{"id": String, "count": Integer, "at": Time, "items": Arr(Ref("Item"))}, "id", "at", "items"),
	}
	if d := SchemaDrift(good, "Thing", reflect.TypeFor[driftThing](), true); len(d) != 0 {
		t.Fatalf("drift where there is none: %v", d)
	}
	bad := map[string]any{
		"Item":  Obj(map[string]any{"n": String}, "n"),
		"Thing": Obj(map[string]any{"id": String, "count": Integer, "at": Time, "items": Arr(Ref("Item")), "gone": Bool}, "id", "items"),
	}
	d := strings.Join(SchemaDrift(bad, "Thing", reflect.TypeFor[driftThing](), true), "\n")
	for _, want := range []string{
		`Thing.items[].n: Go float64 is not "string"`,
		"Thing.at: always sent, not required",
		"Thing.gone: in the schema, not in Go",
	} {
		if !strings.Contains(d, want) {
			t.Errorf("drift does not report %q:\n%s", want, d)
		}
	}
	// A request type: fields the client may leave out are fine.
	if d := SchemaDrift(bad, "Thing", reflect.TypeFor[driftThing](), false); strings.Contains(strings.Join(d, "\n"), "always sent") {
		t.Errorf("required checked on a request type: %v", d)
	}
	delete(bad, "Item")
	if d := strings.Join(SchemaDrift(bad, "Thing", reflect.TypeFor[driftThing](), false), "\n"); !strings.Contains(d, "$ref Item is not defined") {
		t.Errorf("a dangling $ref is not reported: %s", d)
	}
}
