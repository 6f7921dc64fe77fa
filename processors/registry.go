package processors

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"
)

// ParamType is the JSON type a parameter accepts.
type ParamType string

// Parameter types.
const (
	ParamInt    ParamType = "int"
	ParamFloat  ParamType = "float"
	ParamString ParamType = "string"
	ParamBool   ParamType = "bool"
	ParamEnum   ParamType = "enum"
)

// ParamSpec describes one parameter of a processor.
type ParamSpec struct {
	Name        string    `json:"name"`
	Type        ParamType `json:"type"`
	Description string    `json:"description"`
	Default     any       `json:"default,omitempty"`
	Required    bool      `json:"required,omitempty"`
	Min         *float64  `json:"min,omitempty"`
	Max         *float64  `json:"max,omitempty"`
	Choices     []string  `json:"choices,omitempty"`
}

// Spec describes a processor for the API and for validation.
type Spec struct {
	Name        string      `json:"name"`
	Description string      `json:"description"`
	Params      []ParamSpec `json:"params"`
	// Outputs says what the step produces: "image", "detections", "values".
	Outputs []string `json:"outputs"`
	// Remote marks a registered grpc://host:port processor (Name is its
	// address): its steps' parameters are validated against Params, and
	// the engine builds the step as a remote client.
	Remote bool    `json:"remote,omitempty"`
	New    Factory `json:"-"`
	// Check, when set, vets resolved parameters beyond their types when a
	// pipeline is validated (that a named model file may be read, say),
	// without building the processor.
	Check func(Params) error `json:"-"`
}

// Params are a step's parameters after validation: every declared parameter
// is present (default filled in), ints are int64, floats float64.
type Params map[string]any

// Int returns an int parameter.
func (p Params) Int(name string) int { v, _ := p[name].(int64); return int(v) }

// Float returns a float parameter.
func (p Params) Float(name string) float64 { v, _ := p[name].(float64); return v }

// String returns a string or enum parameter.
func (p Params) String(name string) string { v, _ := p[name].(string); return v }

// Bool returns a bool parameter.
func (p Params) Bool(name string) bool { v, _ := p[name].(bool); return v }

// Errors of the registry and of validation.
var (
	ErrUnknownProcessor = errors.New("unknown processor")
	ErrBadParam         = errors.New("bad parameter")
)

// Registry lists the processors a server knows.
type Registry struct {
	mu    sync.RWMutex
	specs map[string]Spec
	// remoteCheck vets a grpc:// step's host:port (the server's deny list).
	remoteCheck func(hostport string) error
}

// SetRemoteCheck installs the check every grpc:// step's host:port must pass
// when a pipeline is validated; the composition root wires its host policy
// here, since processors do not know the server's configuration.
func (r *Registry) SetRemoteCheck(check func(hostport string) error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.remoteCheck = check
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{specs: make(map[string]Spec)} }

// Register adds a processor; registering a name twice replaces it.
func (r *Registry) Register(s Spec) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.specs[s.Name] = s
}

// Unregister removes a processor; removing an unknown name does nothing.
func (r *Registry) Unregister(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.specs, name)
}

// Lookup finds a processor by name.
func (r *Registry) Lookup(name string) (Spec, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	s, ok := r.specs[name]
	return s, ok
}

// Specs lists every processor sorted by name.
func (r *Registry) Specs() []Spec {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Spec, 0, len(r.specs))
	for _, s := range r.specs {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Resolve checks raw parameters (as decoded from JSON) against the spec and
// returns them typed with defaults filled in.
func (s Spec) Resolve(raw map[string]any) (Params, error) {
	known := make(map[string]ParamSpec, len(s.Params))
	for _, p := range s.Params {
		known[p.Name] = p
	}
	for name := range raw {
		if _, ok := known[name]; !ok {
			return nil, fmt.Errorf("%w %q: %s has no such parameter", ErrBadParam, name, s.Name)
		}
	}
	out := make(Params, len(s.Params))
	for _, p := range s.Params {
		v, ok := raw[p.Name]
		if !ok || v == nil {
			if p.Required {
				return nil, fmt.Errorf("%w %q: required", ErrBadParam, p.Name)
			}
			if p.Default != nil {
				v = p.Default
			} else {
				continue
			}
		}
		typed, err := p.coerce(v)
		if err != nil {
			return nil, fmt.Errorf("%w %q: %v", ErrBadParam, p.Name, err)
		}
		out[p.Name] = typed
	}
	return out, nil
}

func (p ParamSpec) coerce(v any) (any, error) {
	switch p.Type {
	case ParamInt:
		f, ok := toFloat(v)
		if !ok || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
			return nil, fmt.Errorf("want an integer, got %v", v)
		}
		if err := p.checkRange(f); err != nil {
			return nil, err
		}
		return int64(f), nil
	case ParamFloat:
		f, ok := toFloat(v)
		if !ok || math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("want a number, got %v", v)
		}
		if err := p.checkRange(f); err != nil {
			return nil, err
		}
		return f, nil
	case ParamBool:
		b, ok := v.(bool)
		if !ok {
			return nil, fmt.Errorf("want true or false, got %v", v)
		}
		return b, nil
	case ParamString:
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("want a string, got %v", v)
		}
		return s, nil
	case ParamEnum:
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("want one of %v, got %v", p.Choices, v)
		}
		for _, c := range p.Choices {
			if c == s {
				return s, nil
			}
		}
		return nil, fmt.Errorf("want one of %v, got %q", p.Choices, s)
	}
	return nil, fmt.Errorf("parameter type %q unknown", p.Type)
}

func (p ParamSpec) checkRange(f float64) error {
	if p.Min != nil && f < *p.Min {
		return fmt.Errorf("%v is below the minimum %v", f, *p.Min)
	}
	if p.Max != nil && f > *p.Max {
		return fmt.Errorf("%v is above the maximum %v", f, *p.Max)
	}
	return nil
}

func toFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case float32:
		return float64(n), true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case int32:
		return float64(n), true
	}
	return 0, false
}

// Range returns a pointer to v, for ParamSpec.Min and Max literals.
func Range(v float64) *float64 { return &v }
