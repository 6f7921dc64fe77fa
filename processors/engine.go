package processors

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gocv.io/x/gocv"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// Errors of the pipeline engine.
var (
	// ErrNoRemote is returned by Compile for a grpc:// step when no
	// RemoteFactory was given.
	ErrNoRemote = errors.New("remote processors are not available (no RemoteFactory configured)")
	// ErrInputFailed marks a step that did not run because one of its inputs
	// failed.
	ErrInputFailed = errors.New("input step failed")
	// ErrClosed is returned by Run after Close.
	ErrClosed = errors.New("pipeline closed")
	// ErrEmptyImage is returned by Run for an empty source picture.
	ErrEmptyImage = errors.New("empty source image")
	// ErrPanic wraps a panic recovered from a processor.
	ErrPanic = errors.New("processor panicked")
)

// RemoteFactory builds the processor of a step whose processor is
// grpc://host:port; addr is host:port and params the step's raw parameters
// (the remote side validates them).
type RemoteFactory func(addr string, params map[string]any) (Processor, error)

// Option configures Compile.
type Option func(*compileOptions)

type compileOptions struct {
	inspect func(StepOutput)
	remote  RemoteFactory
	metrics *Metrics
}

// WithRemote lets Compile build grpc:// steps through f.
func WithRemote(f RemoteFactory) Option { return func(o *compileOptions) { o.remote = f } }

// WithInspect calls fn after every step of every Run with what the step
// produced, for tools that show each step's output (the designer's "try
// it"); live and batch pipelines leave it unset and pay nothing.
func WithInspect(fn func(StepOutput)) Option { return func(o *compileOptions) { o.inspect = fn } }

// StepOutput is what one step produced in a Run. Its Mats and detections
// belong to the Pipeline and are valid only during the call: copy what must
// outlive it.
type StepOutput struct {
	ID, Processor string
	// Image is the picture the step's consumers see: its own, or its
	// input's when it makes none. Empty when the step failed.
	Image gocv.Mat
	// Detections are those the step passes on, in source pixels.
	Detections []*busv1.Detection
	// Width and Height are the source picture's (Detections' coordinates).
	Width, Height int
	Values        map[string]string
	Duration      time.Duration
	// Err is a *StepError, nil when the step succeeded.
	Err error
}

// WithMetrics records per-step durations and errors in m.
func WithMetrics(m *Metrics) Option { return func(o *compileOptions) { o.metrics = m } }

// Pipeline is a compiled pipeline: its processors built and ordered. It runs
// one image at a time (Run serialises callers); compile one per worker, or
// use a Pool, to run several at once. Stateful processors (motion) keep their
// state in the Pipeline, so a live camera needs its own.
//
// Coordinates: every step reports boxes in pixels of its own input picture.
// The engine knows the size of each step's input and maps each step's
// detections back to the source picture by scaling (source size / step input
// size on each axis), and maps detections handed to a step into that step's
// input pixels the same way. This assumes every image step shows the whole
// frame (resize, filters, overlay); a cropping step would need an offset the
// Output cannot express yet.
type Pipeline struct {
	id    string
	steps []*step // in topological order
	seen  map[*busv1.Detection]struct{}
	// inspect, when set, sees every step's output (WithInspect).
	inspect func(StepOutput)

	mu     sync.Mutex
	closed bool
	src    gocv.Mat // the running image, held here so steps can point at it
	result Result
}

type step struct {
	id, processor string
	proc          Processor
	inputs        []int // positions in Pipeline.steps
	sink          bool
	imageOut      bool // the spec says the step produces a picture

	// scratch is the Mat the step writes its picture into, kept across runs
	// so a steady stream reuses its pixel buffer.
	scratch gocv.Mat
	in      Input
	out     Output

	// Per-run state.
	ok     bool
	err    error
	dur    time.Duration
	img    *gocv.Mat // picture consumers of this step see
	w, h   int
	own    []*busv1.Detection // this step's detections, source pixels
	reach  []*busv1.Detection // inputs' reach plus own, source pixels
	conv   []*busv1.Detection // reach mapped into this step's input pixels
	values map[string]string  // inputs' values merged, then own

	latency prometheus.Observer
	errors  prometheus.Counter
}

// StepResult is how one step went.
type StepResult struct {
	ID        string
	Processor string
	Duration  time.Duration
	// Err is a *StepError, nil when the step succeeded.
	Err error
}

// Result is what one Run produced. It belongs to the Pipeline and is valid
// until the next Run or Close; copy what must outlive that.
type Result struct {
	// Image is the picture of the last step (in topological order) that
	// produced one, nil when no step did.
	Image *gocv.Mat
	// Width and Height are the source picture's: the coordinate system of
	// Detections.
	Width, Height int
	// Detections are those reaching sink steps (steps no other step
	// consumes). A step passes on its inputs' detections plus its own (only
	// its own when it set Output.ReplaceDetections), so a
	// detection reaching two sinks (or one sink by two paths) is listed once;
	// detections from different steps with the same label, class and box
	// (to the pixel) are merged too, keeping the higher score.
	Detections []*busv1.Detection
	// Values are the sinks' values merged in topological order (a later
	// sink wins); each step's values are its inputs' merged plus its own.
	Values map[string]string
	// Steps lists every step in topological order.
	Steps []StepResult
	// Duration is the whole run's wall time.
	Duration time.Duration
}

// Compile validates p against reg, resolves parameters and builds every
// processor in topological order. A failing step is reported as *StepError.
func Compile(reg *Registry, p *busv1.Pipeline, opts ...Option) (*Pipeline, error) {
	var o compileOptions
	for _, opt := range opts {
		opt(&o)
	}
	if err := reg.ValidatePipeline(p); err != nil {
		return nil, err
	}
	order, err := TopoOrder(p)
	if err != nil {
		return nil, err
	}
	pl := &Pipeline{id: p.GetId(), inspect: o.inspect, seen: make(map[*busv1.Detection]struct{}), result: Result{Values: make(map[string]string)}}
	pos := make(map[string]int, len(order))
	consumed := make(map[string]bool, len(order))
	for _, s := range p.Steps {
		for _, in := range s.Inputs {
			consumed[in] = true
		}
	}
	for _, i := range order {
		s := p.Steps[i]
		proc, imageOut, err := build(reg, s, &o)
		if err != nil {
			pl.Close()
			return nil, &StepError{Step: s.Id, Err: err}
		}
		st := &step{
			id: s.Id, processor: s.Processor, proc: proc, imageOut: imageOut, sink: !consumed[s.Id],
			scratch: gocv.NewMat(),
			in:      Input{Values: make(map[string]string)},
			out:     Output{Values: make(map[string]string)},
			values:  make(map[string]string),
		}
		for _, in := range s.Inputs {
			st.inputs = append(st.inputs, pos[in])
		}
		if m := o.metrics; m != nil {
			st.latency = m.StepDuration.WithLabelValues(pl.id, s.Id, s.Processor)
			st.errors = m.StepErrors.WithLabelValues(pl.id, s.Id)
		}
		pos[s.Id] = len(pl.steps)
		pl.steps = append(pl.steps, st)
	}
	pl.result.Steps = make([]StepResult, len(pl.steps))
	return pl, nil
}

func build(reg *Registry, s *busv1.Step, o *compileOptions) (Processor, bool, error) {
	if IsRemote(s.Processor) {
		addr, err := ParseRemote(s.Processor)
		if err != nil {
			return nil, false, err
		}
		if o.remote == nil {
			return nil, false, fmt.Errorf("%w: %s", ErrNoRemote, s.Processor)
		}
		proc, err := o.remote(addr, s.GetParams().AsMap())
		return proc, false, err
	}
	spec, ok := reg.Lookup(s.Processor)
	if !ok {
		return nil, false, fmt.Errorf("%w %q", ErrUnknownProcessor, s.Processor)
	}
	params, err := spec.Resolve(s.GetParams().AsMap())
	if err != nil {
		return nil, false, err
	}
	if spec.New == nil {
		return nil, false, fmt.Errorf("%w %q: no factory", ErrUnknownProcessor, s.Processor)
	}
	proc, err := spec.New(params)
	return proc, slices.Contains(spec.Outputs, "image"), err
}

// ID returns the pipeline's id.
func (pl *Pipeline) ID() string { return pl.id }

// Run passes img (BGR, owned by the caller and left untouched) through the
// DAG. Each step gets the picture of its first input (the source when it has
// none), the detections of all its inputs and their merged values, and
// passes on those detections plus its own, or only its own when it set
// Output.ReplaceDetections. A failed
// step is reported in Result.Steps and its consumers do not run; Run then
// returns the Result with the first *StepError.
func (pl *Pipeline) Run(ctx context.Context, img gocv.Mat) (*Result, error) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.closed {
		return nil, ErrClosed
	}
	if img.Ptr() == nil || img.Empty() {
		return nil, ErrEmptyImage
	}
	start := time.Now()
	W, H := img.Cols(), img.Rows()
	pl.src = img
	defer func() { pl.src = gocv.Mat{} }()
	var firstErr error
	for i, s := range pl.steps {
		pl.runStep(ctx, s, &pl.src, W, H)
		pl.result.Steps[i] = StepResult{ID: s.id, Processor: s.processor, Duration: s.dur, Err: s.err}
		if pl.inspect != nil {
			out := StepOutput{ID: s.id, Processor: s.processor, Width: W, Height: H, Values: s.values, Duration: s.dur, Err: s.err}
			if s.ok {
				out.Image, out.Detections = *s.img, s.reach
			}
			pl.inspect(out)
		}
		if s.err != nil && firstErr == nil {
			firstErr = s.err
		}
	}
	pl.collect(W, H)
	pl.result.Duration = time.Since(start)
	return &pl.result, firstErr
}

func (pl *Pipeline) runStep(ctx context.Context, s *step, src *gocv.Mat, W, H int) {
	s.ok, s.err, s.dur = false, nil, 0
	s.img, s.w, s.h = src, W, H
	s.own, s.reach = s.own[:0], s.reach[:0]
	clear(s.values)
	clear(s.in.Values)
	for _, j := range s.inputs {
		if u := pl.steps[j]; !u.ok {
			s.err = &StepError{Step: s.id, Err: fmt.Errorf("%w: %q", ErrInputFailed, u.id)}
			return
		}
	}
	if err := ctx.Err(); err != nil {
		s.err = &StepError{Step: s.id, Err: err}
		return
	}
	inImg, inW, inH := src, W, H
	if len(s.inputs) > 0 {
		u := pl.steps[s.inputs[0]]
		inImg, inW, inH = u.img, u.w, u.h
	}
	// Gather the inputs' detections once each (a diamond reaches the same
	// detection by two paths) and their values.
	clear(pl.seen)
	for _, j := range s.inputs {
		u := pl.steps[j]
		for _, d := range u.reach {
			if _, dup := pl.seen[d]; !dup {
				pl.seen[d] = struct{}{}
				s.reach = append(s.reach, d)
			}
		}
		for k, v := range u.values {
			s.in.Values[k] = v
		}
	}
	s.in.Image = *inImg
	s.in.Detections = s.mapIn(W, H, inW, inH)

	// A step whose spec does not promise a picture gets an empty Mat; if it
	// wrote into it last time, start over so a stale picture is not taken
	// for a new one.
	if !s.imageOut && s.scratch.Ptr() != nil && !s.scratch.Empty() {
		s.scratch.Close()
		s.scratch = gocv.NewMat()
	}
	s.out.Image = s.scratch
	s.out.Detections = s.out.Detections[:0]
	s.out.ReplaceDetections = false
	clear(s.out.Values)

	t0 := time.Now()
	err := safeProcess(ctx, s.proc, &s.in, &s.out)
	s.dur = time.Since(t0)
	if s.latency != nil {
		s.latency.Observe(s.dur.Seconds())
	}
	// A processor that set a Mat of its own hands it to the engine: it
	// replaces the scratch Mat.
	if s.out.Image.Ptr() != s.scratch.Ptr() {
		if s.scratch.Ptr() != nil {
			s.scratch.Close()
		}
		s.scratch = s.out.Image
	}
	s.out.Image = gocv.Mat{}
	s.in.Image = gocv.Mat{}
	if err != nil {
		if s.errors != nil {
			s.errors.Inc()
		}
		s.err = &StepError{Step: s.id, Err: err}
		return
	}
	s.ok = true
	if s.scratch.Ptr() != nil && !s.scratch.Empty() {
		s.img, s.w, s.h = &s.scratch, s.scratch.Cols(), s.scratch.Rows()
	} else {
		s.img, s.w, s.h = inImg, inW, inH
	}
	if s.out.ReplaceDetections {
		// The inputs' detections end here. s.in.Detections may share this
		// array; the step is done with it.
		s.reach = s.reach[:0]
	}
	// Own detections: from this step's input pixels to source pixels.
	sx, sy := float32(W)/float32(inW), float32(H)/float32(inH)
	for _, d := range s.out.Detections {
		if d == nil {
			continue
		}
		if inW != W || inH != H {
			d.X, d.Y, d.W, d.H = d.X*sx, d.Y*sy, d.W*sx, d.H*sy
		}
		s.own = append(s.own, d)
		s.reach = append(s.reach, d)
	}
	for k, v := range s.in.Values {
		s.values[k] = v
	}
	for k, v := range s.out.Values {
		s.values[k] = v
	}
}

// mapIn returns the gathered detections in the step's input pixels. When the
// step sees the source size they are shared as they are (steps must not
// change their input); otherwise scaled copies reuse the step's own
// Detection structs across runs.
func (s *step) mapIn(W, H, inW, inH int) []*busv1.Detection {
	if inW == W && inH == H {
		return s.reach
	}
	sx, sy := float32(inW)/float32(W), float32(inH)/float32(H)
	for len(s.conv) < len(s.reach) {
		s.conv = append(s.conv, &busv1.Detection{})
	}
	out := s.conv[:len(s.reach)]
	for i, d := range s.reach {
		c := out[i]
		c.X, c.Y, c.W, c.H = d.X*sx, d.Y*sy, d.W*sx, d.H*sy
		c.Label, c.Score, c.TrackId, c.ClassId = d.Label, d.Score, d.TrackId, d.ClassId
	}
	return out
}

func safeProcess(ctx context.Context, p Processor, in *Input, out *Output) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrPanic, r)
		}
	}()
	return p.Process(ctx, in, out)
}

// collect fills the result from the sink steps.
func (pl *Pipeline) collect(W, H int) {
	r := &pl.result
	r.Image, r.Width, r.Height = nil, W, H
	r.Detections = r.Detections[:0]
	clear(r.Values)
	clear(pl.seen)
	for _, s := range pl.steps {
		if s.ok && s.img == &s.scratch {
			r.Image = s.img
		}
		if !s.sink || !s.ok {
			continue
		}
		for _, d := range s.reach {
			if _, dup := pl.seen[d]; dup {
				continue
			}
			pl.seen[d] = struct{}{}
			if j := sameBox(r.Detections, d); j >= 0 {
				if d.Score > r.Detections[j].Score {
					r.Detections[j] = d
				}
				continue
			}
			r.Detections = append(r.Detections, d)
		}
		for k, v := range s.values {
			r.Values[k] = v
		}
	}
}

// sameBox finds a detection with d's label, class and box to the pixel.
func sameBox(ds []*busv1.Detection, d *busv1.Detection) int {
	px := func(v float32) int { return int(math.Round(float64(v))) }
	for i, e := range ds {
		if e.Label == d.Label && e.ClassId == d.ClassId &&
			px(e.X) == px(d.X) && px(e.Y) == px(d.Y) && px(e.W) == px(d.W) && px(e.H) == px(d.H) {
			return i
		}
	}
	return -1
}

// Close closes every processor and frees the engine's pictures; the last
// Result becomes invalid. A second Close does nothing.
func (pl *Pipeline) Close() error {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.closed {
		return nil
	}
	pl.closed = true
	var errs []error
	for _, s := range pl.steps {
		if err := s.proc.Close(); err != nil {
			errs = append(errs, &StepError{Step: s.id, Err: err})
		}
		if s.scratch.Ptr() != nil {
			s.scratch.Close()
		}
	}
	pl.result = Result{}
	return errors.Join(errs...)
}

// Pool runs one pipeline definition on several images at once with one
// compiled Pipeline per worker. Use it for batch work; a live camera needs a
// single Pipeline of its own (motion keeps per-camera state).
type Pool struct {
	free chan *Pipeline
	all  []*Pipeline
	done chan struct{}

	mu     sync.Mutex
	closed bool
}

// NewPool compiles n copies of p.
func NewPool(reg *Registry, p *busv1.Pipeline, n int, opts ...Option) (*Pool, error) {
	if n < 1 {
		n = 1
	}
	pp := &Pool{free: make(chan *Pipeline, n), done: make(chan struct{})}
	for range n {
		pl, err := Compile(reg, p, opts...)
		if err != nil {
			for _, c := range pp.all {
				c.Close()
			}
			return nil, err
		}
		pp.all = append(pp.all, pl)
		pp.free <- pl
	}
	return pp, nil
}

// Run waits for a free Pipeline, runs img through it and calls use with the
// result while the Pipeline is still held (the Result is only valid then).
// It returns use's error, or the run's when use is nil.
func (pp *Pool) Run(ctx context.Context, img gocv.Mat, use func(*Result, error) error) error {
	var pl *Pipeline
	select {
	case <-pp.done:
		return ErrClosed
	default:
	}
	select {
	case pl = <-pp.free:
	case <-pp.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { pp.free <- pl }()
	res, err := pl.Run(ctx, img)
	if use == nil {
		return err
	}
	return use(res, err)
}

// Close waits for running images to finish and closes every Pipeline.
func (pp *Pool) Close() error {
	pp.mu.Lock()
	if pp.closed {
		pp.mu.Unlock()
		return nil
	}
	pp.closed = true
	close(pp.done)
	pp.mu.Unlock()
	var errs []error
	for range pp.all {
		pl := <-pp.free
		errs = append(errs, pl.Close())
	}
	return errors.Join(errs...)
}
