package processors

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/imageflowcanvas/imageflow/bus"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// Validation errors of a pipeline; StepError wraps them with the step's id.
var (
	ErrNoSteps      = errors.New("pipeline has no steps")
	ErrTooManySteps = errors.New("pipeline has too many steps")
	ErrDuplicateID  = errors.New("duplicate step id")
	ErrInvalidID    = errors.New("invalid step id")
	ErrMissingInput = errors.New("missing input")
	ErrCycle        = errors.New("cycle")
	ErrBadRemote    = errors.New("bad remote processor address")
)

// MaxSteps bounds a pipeline's size.
const MaxSteps = 64

// StepError names the step a validation error belongs to.
type StepError struct {
	Step string
	Err  error
}

func (e *StepError) Error() string { return fmt.Sprintf("step %q: %v", e.Step, e.Err) }
func (e *StepError) Unwrap() error { return e.Err }

// RemotePrefix marks a step whose processor is a gRPC service.
const RemotePrefix = "grpc://"

// IsRemote reports whether a step's processor is a remote gRPC address.
func IsRemote(processor string) bool { return strings.HasPrefix(processor, RemotePrefix) }

// ParseRemote checks a grpc://host:port processor and returns host:port.
func ParseRemote(processor string) (string, error) {
	u, err := url.Parse(processor)
	if err != nil || u.Scheme != "grpc" || u.Host == "" || u.Path != "" && u.Path != "/" || u.User != nil || u.RawQuery != "" {
		return "", fmt.Errorf("%w %q: want grpc://host:port", ErrBadRemote, processor)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil || host == "" || port == "" {
		return "", fmt.Errorf("%w %q: want grpc://host:port", ErrBadRemote, processor)
	}
	return u.Host, nil
}

// ValidatePipeline checks a pipeline against the registry: step ids, known
// processors, parameters, inputs that exist, and no cycle. The returned
// error is a *StepError when one step is at fault.
func (r *Registry) ValidatePipeline(p *busv1.Pipeline) error {
	if len(p.GetSteps()) == 0 {
		return ErrNoSteps
	}
	if len(p.Steps) > MaxSteps {
		return fmt.Errorf("%w: %d, at most %d", ErrTooManySteps, len(p.Steps), MaxSteps)
	}
	ids := make(map[string]int, len(p.Steps))
	for i, s := range p.Steps {
		if err := bus.ValidateToken(s.GetId()); err != nil {
			return &StepError{Step: s.GetId(), Err: fmt.Errorf("%w (step #%d): %v", ErrInvalidID, i+1, err)}
		}
		if _, dup := ids[s.Id]; dup {
			return &StepError{Step: s.Id, Err: ErrDuplicateID}
		}
		ids[s.Id] = i
	}
	for _, s := range p.Steps {
		if err := r.validateStep(s); err != nil {
			return &StepError{Step: s.Id, Err: err}
		}
		for _, in := range s.Inputs {
			if _, ok := ids[in]; !ok {
				return &StepError{Step: s.Id, Err: fmt.Errorf("%w %q: no step has that id", ErrMissingInput, in)}
			}
		}
	}
	if _, err := TopoOrder(p); err != nil {
		return err
	}
	return nil
}

// CheckRemote checks a grpc://host:port processor's form and the remote
// check (the server's deny list) and returns host:port.
func (r *Registry) CheckRemote(processor string) (string, error) {
	addr, err := ParseRemote(processor)
	if err != nil {
		return "", err
	}
	r.mu.RLock()
	check := r.remoteCheck
	r.mu.RUnlock()
	if check != nil {
		if err := check(addr); err != nil {
			return "", fmt.Errorf("%w: processor %q: %v", ErrBadRemote, processor, err)
		}
	}
	return addr, nil
}

func (r *Registry) validateStep(s *busv1.Step) error {
	if IsRemote(s.Processor) {
		if _, err := r.CheckRemote(s.Processor); err != nil {
			return err
		}
		// A registered remote's parameters are checked like a built-in's;
		// an unregistered one validates them itself when called.
		if spec, ok := r.Lookup(s.Processor); ok && spec.Remote {
			_, err := spec.Resolve(s.GetParams().AsMap())
			return err
		}
		return nil
	}
	spec, ok := r.Lookup(s.Processor)
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownProcessor, s.Processor)
	}
	params, err := spec.Resolve(s.GetParams().AsMap())
	if err != nil || spec.Check == nil {
		return err
	}
	return spec.Check(params)
}

// TopoOrder returns the step indexes in an order where every step comes after
// its inputs, or a *StepError wrapping ErrCycle naming a step on a cycle.
func TopoOrder(p *busv1.Pipeline) ([]int, error) {
	ids := make(map[string]int, len(p.Steps))
	for i, s := range p.Steps {
		ids[s.Id] = i
	}
	indegree := make([]int, len(p.Steps))
	consumers := make([][]int, len(p.Steps))
	for i, s := range p.Steps {
		for _, in := range s.Inputs {
			j, ok := ids[in]
			if !ok {
				return nil, &StepError{Step: s.Id, Err: fmt.Errorf("%w %q", ErrMissingInput, in)}
			}
			indegree[i]++
			consumers[j] = append(consumers[j], i)
		}
	}
	order := make([]int, 0, len(p.Steps))
	var ready []int
	for i, d := range indegree {
		if d == 0 {
			ready = append(ready, i)
		}
	}
	for len(ready) > 0 {
		i := ready[0]
		ready = ready[1:]
		order = append(order, i)
		for _, c := range consumers[i] {
			indegree[c]--
			if indegree[c] == 0 {
				ready = append(ready, c)
			}
		}
	}
	if len(order) != len(p.Steps) {
		for i, d := range indegree {
			if d > 0 {
				return nil, &StepError{Step: p.Steps[i].Id, Err: fmt.Errorf("%w through its inputs %v", ErrCycle, p.Steps[i].Inputs)}
			}
		}
	}
	return order, nil
}
