package rest

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"
)

// SchemaDrift lists where the Go type typ, as encoding/json writes it,
// differs from the component schema name of schemas: a field the schema
// does not have, a property the type does not have, a type that does not
// match, and, when sent is set (an answer, not a request), a field always
// written that the schema does not mark required. Empty when they agree.
func SchemaDrift(schemas map[string]any, name string, typ reflect.Type, sent bool) []string {
	var out []string
	driftOf(schemas, Ref(name), typ, sent, name, &out)
	sort.Strings(out)
	return out
}

var (
	timeType = reflect.TypeFor[time.Time]()
	rawType  = reflect.TypeFor[json.RawMessage]()
)

func driftOf(schemas map[string]any, schema map[string]any, typ reflect.Type, sent bool, at string, out *[]string) {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	if ref, ok := schema["$ref"].(string); ok {
		name := strings.TrimPrefix(ref, "#/components/schemas/")
		s, ok := schemas[name].(map[string]any)
		if !ok {
			*out = append(*out, fmt.Sprintf("%s: $ref %s is not defined", at, name))
			return
		}
		schema = s
	}
	want, _ := schema["type"].(string)
	bad := func() { *out = append(*out, fmt.Sprintf("%s: Go %s is not %q", at, typ, want)) }
	switch {
	case typ == rawType || typ.Kind() == reflect.Interface:
		return // any JSON
	case typ == timeType:
		if want != "string" {
			bad()
		}
		return
	}
	switch typ.Kind() {
	case reflect.String:
		if want != "string" {
			bad()
		}
	case reflect.Bool:
		if want != "boolean" {
			bad()
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if want != "integer" {
			bad()
		}
	case reflect.Float32, reflect.Float64:
		if want != "number" {
			bad()
		}
	case reflect.Slice, reflect.Array:
		items, _ := schema["items"].(map[string]any)
		if want != "array" || items == nil {
			bad()
			return
		}
		driftOf(schemas, items, typ.Elem(), sent, at+"[]", out)
	case reflect.Map:
		if want != "object" {
			bad()
		}
	case reflect.Struct:
		if want != "object" {
			bad()
			return
		}
		structDrift(schemas, schema, typ, sent, at, out)
	default:
		*out = append(*out, fmt.Sprintf("%s: Go %s has no JSON schema", at, typ))
	}
}

func structDrift(schemas map[string]any, schema map[string]any, typ reflect.Type, sent bool, at string, out *[]string) {
	props, _ := schema["properties"].(map[string]any)
	required := map[string]bool{}
	switch r := schema["required"].(type) {
	case []string:
		for _, n := range r {
			required[n] = true
		}
	case []any:
		for _, n := range r {
			required[fmt.Sprint(n)] = true
		}
	}
	seen := map[string]bool{}
	for _, f := range jsonFields(typ) {
		seen[f.name] = true
		p, ok := props[f.name].(map[string]any)
		if !ok {
			*out = append(*out, fmt.Sprintf("%s.%s: sent by the server, not in the schema", at, f.name))
			continue
		}
		if sent && !f.omitempty && !required[f.name] {
			*out = append(*out, fmt.Sprintf("%s.%s: always sent, not required in the schema", at, f.name))
		}
		driftOf(schemas, p, f.typ, sent, at+"."+f.name, out)
	}
	for name := range props {
		if !seen[name] {
			*out = append(*out, fmt.Sprintf("%s.%s: in the schema, not in Go %s", at, name, typ))
		}
	}
}

type jsonField struct {
	name      string
	omitempty bool
	typ       reflect.Type
}

// jsonFields are the fields encoding/json writes for the struct typ,
// those of embedded structs without a tag included.
func jsonFields(typ reflect.Type) []jsonField {
	var out []jsonField
	for i := range typ.NumField() {
		f := typ.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		if f.Anonymous && tag == "" {
			et := f.Type
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				out = append(out, jsonFields(et)...)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		out = append(out, jsonField{name: name, omitempty: strings.Contains(opts, "omitempty"), typ: f.Type})
	}
	return out
}
