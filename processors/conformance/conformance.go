// Package conformance checks that a gRPC service keeps the Processor contract
// of proto/processor.proto, whatever language it is written in: its Info is
// sane, it processes every image form of the contract, refuses bad input with
// INVALID_ARGUMENT, honours deadlines, serves the gRPC health service and
// takes parallel calls. `imageflow processor check` prints its report.
package conformance

import (
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	pb "github.com/imageflowcanvas/imageflow/proto/processorv1"
)

// Options configure a check.
type Options struct {
	// Target is the processor's address, host:port or grpc://host:port.
	Target string
	// Image is the JPEG or PNG every Process call carries; nil uses
	// DefaultImagePath when it exists, else a synthetic picture.
	Image []byte
	// Params are the step parameters sent with every good call (a detector
	// may need a model path); nil sends none, so the processor's defaults
	// apply.
	Params map[string]any
	// Parallel is how many calls the concurrency check keeps in flight
	// (default 8) and Rounds how many each of them makes (default 4).
	Parallel, Rounds int
	// Timeout bounds one good call (default 10 s).
	Timeout time.Duration
}

// DefaultImagePath is the picture checks use when none is given (Debian's
// opencv-doc).
const DefaultImagePath = "/usr/share/doc/opencv-doc/examples/data/messi5.jpg"

// Result is the outcome of one check.
type Result struct {
	Name    string
	Passed  bool
	Skipped bool
	Detail  string
	// Latencies of the calls that check made, for the p50/p99 columns.
	Latencies []time.Duration
}

// Report is the outcome of every check, in the order they ran.
type Report struct {
	Processor string
	Results   []Result
}

// Failed names the checks that failed.
func (r *Report) Failed() []string {
	var out []string
	for _, c := range r.Results {
		if !c.Passed && !c.Skipped {
			out = append(out, c.Name)
		}
	}
	return out
}

// WriteTable prints the report as a table: check, result, calls, p50, p99
// and what was seen.
func (r *Report) WriteTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "CHECK\tRESULT\tCALLS\tP50\tP99\tDETAIL\n")
	for _, c := range r.Results {
		res := "pass"
		switch {
		case c.Skipped:
			res = "skip"
		case !c.Passed:
			res = "FAIL"
		}
		p50, p99 := "-", "-"
		if len(c.Latencies) > 0 {
			p50, p99 = fmtDur(Percentile(c.Latencies, 50)), fmtDur(Percentile(c.Latencies, 99))
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", c.Name, res, len(c.Latencies), p50, p99, c.Detail)
	}
	tw.Flush()
}

func fmtDur(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000)
}

// Percentile is the p-th percentile (nearest rank) of ds.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	if i < 0 {
		i = 0
	}
	return s[i]
}

// checker holds what the checks share.
type checker struct {
	opts   Options
	conn   *grpc.ClientConn
	client pb.ProcessorClient
	params *structpb.Struct
	info   *pb.InfoResponse
	// images are the good inputs; w and h their size.
	images []variant
	w, h   int
	// baseline is the p50 of the good calls, used to scale the deadline check.
	baseline time.Duration
	// want is the answer to the packed BGR24 picture that lossless forms must
	// match.
	want *pb.ProcessResponse
}

// Run checks the processor at opts.Target. An error means the check could
// not run at all (bad options); a processor that fails checks gives a
// report whose Failed is not empty.
func Run(ctx context.Context, opts Options) (*Report, error) {
	opts.Target = strings.TrimPrefix(opts.Target, "grpc://")
	if opts.Target == "" {
		return nil, errors.New("conformance: no target")
	}
	if opts.Parallel <= 0 {
		opts.Parallel = 8
	}
	if opts.Rounds <= 0 {
		opts.Rounds = 4
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Image == nil {
		if b, err := os.ReadFile(DefaultImagePath); err == nil {
			opts.Image = b
		} else {
			opts.Image = jpegOf(syntheticImage())
		}
	}
	c := &checker{opts: opts}
	if opts.Params != nil {
		s, err := structpb.NewStruct(opts.Params)
		if err != nil {
			return nil, fmt.Errorf("conformance: params: %w", err)
		}
		c.params = s
	}
	var err error
	if c.images, c.w, c.h, err = testImages(opts.Image); err != nil {
		return nil, fmt.Errorf("conformance: %w", err)
	}
	const maxMsg = 64 << 20
	c.conn, err = grpc.NewClient(opts.Target, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsg), grpc.MaxCallSendMsgSize(maxMsg)))
	if err != nil {
		return nil, fmt.Errorf("conformance: %w", err)
	}
	defer c.conn.Close()
	c.client = pb.NewProcessorClient(c.conn)

	rep := &Report{}
	add := func(r Result) { rep.Results = append(rep.Results, r) }
	info := c.checkInfo(ctx)
	add(info)
	if c.info != nil {
		rep.Processor = c.info.Name
	}
	add(c.checkHealth(ctx))
	if !info.Passed && c.info == nil {
		return rep, nil // nothing answers: the other checks would only repeat it
	}
	for _, v := range c.images {
		add(c.checkProcess(ctx, v))
	}
	add(c.checkCorrupt(ctx))
	add(c.checkBadParams(ctx))
	add(c.checkDeadline(ctx))
	add(c.checkConcurrency(ctx))
	add(c.checkStream(ctx))
	return rep, nil
}

// syntheticImage is a 320x240 picture with edges and colours, for machines
// without opencv-doc.
func syntheticImage() image.Image {
	img := image.NewRGBA(image.Rect(0, 0, 320, 240))
	for y := 0; y < 240; y++ {
		for x := 0; x < 320; x++ {
			c := color.RGBA{uint8(x * 255 / 320), uint8(y * 255 / 240), 96, 255}
			if (x/40+y/40)%2 == 0 {
				c.B = 220
			}
			img.Set(x, y, c)
		}
	}
	return img
}

func (c *checker) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.opts.Timeout)
}

var validTypes = map[string]bool{"int": true, "float": true, "string": true, "bool": true, "enum": true}
var validOutputs = map[string]bool{"image": true, "detections": true, "values": true}

func (c *checker) checkInfo(ctx context.Context) Result {
	r := Result{Name: "info"}
	cctx, cancel := c.callCtx(ctx)
	defer cancel()
	start := time.Now()
	info, err := c.client.Info(cctx, &pb.InfoRequest{})
	r.Latencies = append(r.Latencies, time.Since(start))
	if err != nil {
		r.Detail = "Info: " + status.Convert(err).Code().String() + ": " + status.Convert(err).Message()
		return r
	}
	c.info = info
	var problems []string
	if strings.TrimSpace(info.Name) == "" {
		problems = append(problems, "empty name")
	}
	if len(info.Outputs) == 0 {
		problems = append(problems, "no outputs")
	}
	for _, o := range info.Outputs {
		if !validOutputs[o] {
			problems = append(problems, fmt.Sprintf("output %q is not image, detections or values", o))
		}
	}
	seen := map[string]bool{}
	for _, p := range info.Params {
		problems = append(problems, paramProblems(p, seen)...)
	}
	if len(problems) > 0 {
		r.Detail = strings.Join(problems, "; ")
		return r
	}
	r.Passed = true
	r.Detail = fmt.Sprintf("%s: %d params, outputs %s", info.Name, len(info.Params), strings.Join(info.Outputs, ","))
	return r
}

// paramProblems lists what is wrong with one parameter's description.
func paramProblems(p *pb.ParamSpec, seen map[string]bool) []string {
	var out []string
	name := p.Name
	if name == "" {
		return []string{"a parameter has no name"}
	}
	if seen[name] {
		out = append(out, "parameter "+name+" twice")
	}
	seen[name] = true
	if !validTypes[p.Type] {
		return append(out, fmt.Sprintf("%s: type %q is not int, float, string, bool or enum", name, p.Type))
	}
	if p.Min != nil && p.Max != nil && *p.Min > *p.Max {
		out = append(out, fmt.Sprintf("%s: min %g above max %g", name, *p.Min, *p.Max))
	}
	if (p.Min != nil || p.Max != nil) && p.Type != "int" && p.Type != "float" {
		out = append(out, name+": bounds on a "+p.Type)
	}
	if p.Type == "enum" && len(p.Choices) == 0 {
		out = append(out, name+": enum without choices")
	}
	if p.Default == nil {
		return out
	}
	switch d := p.Default.Kind.(type) {
	case *structpb.Value_NumberValue:
		if p.Type != "int" && p.Type != "float" {
			out = append(out, fmt.Sprintf("%s: number default for a %s", name, p.Type))
			break
		}
		if p.Type == "int" && d.NumberValue != math.Trunc(d.NumberValue) {
			out = append(out, fmt.Sprintf("%s: int default %g", name, d.NumberValue))
		}
		if (p.Min != nil && d.NumberValue < *p.Min) || (p.Max != nil && d.NumberValue > *p.Max) {
			out = append(out, fmt.Sprintf("%s: default %g outside its bounds", name, d.NumberValue))
		}
	case *structpb.Value_StringValue:
		if p.Type != "string" && p.Type != "enum" {
			out = append(out, fmt.Sprintf("%s: string default for a %s", name, p.Type))
			break
		}
		if p.Type == "enum" && !contains(p.Choices, d.StringValue) {
			out = append(out, fmt.Sprintf("%s: default %q not among its choices", name, d.StringValue))
		}
	case *structpb.Value_BoolValue:
		if p.Type != "bool" {
			out = append(out, fmt.Sprintf("%s: bool default for a %s", name, p.Type))
		}
	case *structpb.Value_NullValue:
	default:
		out = append(out, name+": default is a list or object")
	}
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (c *checker) checkHealth(ctx context.Context) Result {
	r := Result{Name: "health"}
	cctx, cancel := c.callCtx(ctx)
	defer cancel()
	start := time.Now()
	resp, err := healthpb.NewHealthClient(c.conn).Check(cctx, &healthpb.HealthCheckRequest{})
	r.Latencies = append(r.Latencies, time.Since(start))
	if err != nil {
		r.Detail = "grpc.health.v1.Health/Check: " + status.Convert(err).Code().String() + ": " + status.Convert(err).Message()
		return r
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		r.Detail = "status " + resp.Status.String() + ", want SERVING"
		return r
	}
	r.Passed, r.Detail = true, "SERVING"
	return r
}

// process makes one call and returns its latency.
func (c *checker) process(ctx context.Context, img *pb.Image, params *structpb.Struct, id string) (*pb.ProcessResponse, time.Duration, error) {
	cctx, cancel := c.callCtx(ctx)
	defer cancel()
	start := time.Now()
	resp, err := c.client.Process(cctx, &pb.ProcessRequest{RequestId: id, Image: img, Params: params})
	return resp, time.Since(start), err
}

func (c *checker) checkProcess(ctx context.Context, v variant) Result {
	r := Result{Name: "process " + v.name}
	const calls = 5
	var first *pb.ProcessResponse
	for i := 0; i < calls; i++ {
		id := fmt.Sprintf("%s-%d", v.name, i)
		resp, d, err := c.process(ctx, v.img, c.params, id)
		if err != nil {
			r.Detail = "Process: " + status.Convert(err).Code().String() + ": " + status.Convert(err).Message()
			return r
		}
		r.Latencies = append(r.Latencies, d)
		if resp.Error != "" {
			r.Detail = "response error: " + resp.Error
			return r
		}
		if resp.RequestId != id {
			r.Detail = fmt.Sprintf("request_id %q not echoed (got %q)", id, resp.RequestId)
			return r
		}
		if p := c.responseProblem(resp); p != "" {
			r.Detail = p
			return r
		}
		if first == nil {
			first = resp
		}
	}
	if v.name == "bgr24" {
		c.want = first
		c.baseline = Percentile(r.Latencies, 50)
	} else if v.lossless && c.want != nil {
		if diff := compareResponses(c.want, first); diff != "" {
			r.Detail = "differs from the same pixels as packed bgr24: " + diff
			return r
		}
	}
	r.Passed = true
	r.Detail = summarise(first)
	return r
}

// responseProblem checks a successful answer against the contract: an image
// that can be decoded, detections with finite coordinates.
func (c *checker) responseProblem(resp *pb.ProcessResponse) string {
	if resp.Image != nil {
		if _, _, err := outputSize(resp.Image); err != nil {
			return "returned image: " + err.Error()
		}
	}
	for _, d := range resp.Detections {
		for _, f := range []float32{d.X, d.Y, d.W, d.H, d.Score} {
			if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
				return fmt.Sprintf("detection with a non-finite number: %v", d)
			}
		}
		if d.W < 0 || d.H < 0 {
			return fmt.Sprintf("detection with negative size: %v", d)
		}
	}
	return ""
}

func summarise(resp *pb.ProcessResponse) string {
	var parts []string
	if resp.Image != nil {
		w, h, _ := outputSize(resp.Image)
		parts = append(parts, fmt.Sprintf("image %dx%d", w, h))
	}
	parts = append(parts, fmt.Sprintf("%d detections", len(resp.Detections)))
	if len(resp.Values) > 0 {
		parts = append(parts, fmt.Sprintf("%d values", len(resp.Values)))
	}
	return strings.Join(parts, ", ")
}

// outputSize validates a returned picture and gives its size.
func outputSize(img *pb.Image) (int, int, error) {
	switch d := img.Data.(type) {
	case *pb.Image_Raw:
		raw := d.Raw
		bpp := map[int32]int{1: 3, 2: 3, 3: 1}[int32(raw.Format)]
		if bpp == 0 {
			return 0, 0, fmt.Errorf("raw format %v (want BGR24, RGB24 or GRAY8)", raw.Format)
		}
		w, h, stride := int(raw.Width), int(raw.Height), int(raw.Stride)
		if stride == 0 {
			stride = w * bpp
		}
		if w <= 0 || h <= 0 || stride < w*bpp || len(raw.Data) < stride*(h-1)+w*bpp {
			return 0, 0, fmt.Errorf("raw %dx%d stride %d with %d bytes", w, h, raw.Stride, len(raw.Data))
		}
		return w, h, nil
	case *pb.Image_Encoded:
		cfg, _, err := image.DecodeConfig(strings.NewReader(string(d.Encoded.Data)))
		if err != nil {
			return 0, 0, fmt.Errorf("encoded %v: %v", d.Encoded.Format, err)
		}
		return cfg.Width, cfg.Height, nil
	}
	return 0, 0, errors.New("image with neither raw nor encoded data")
}

// compareResponses reports how b differs from a beyond rounding: the picture
// size and mean pixel difference, the detections.
func compareResponses(a, b *pb.ProcessResponse) string {
	if (a.Image == nil) != (b.Image == nil) {
		return "one returned an image, the other not"
	}
	if a.Image != nil {
		aw, ah, _ := outputSize(a.Image)
		bw, bh, _ := outputSize(b.Image)
		if aw != bw || ah != bh {
			return fmt.Sprintf("image %dx%d vs %dx%d", aw, ah, bw, bh)
		}
		if d, ok := meanRawDiff(a.Image.GetRaw(), b.Image.GetRaw()); ok && d > 2 {
			return fmt.Sprintf("mean pixel difference %.2f", d)
		}
	}
	if len(a.Detections) != len(b.Detections) {
		return fmt.Sprintf("%d detections vs %d", len(a.Detections), len(b.Detections))
	}
	for i := range a.Detections {
		x, y := a.Detections[i], b.Detections[i]
		if x.Label != y.Label || math.Abs(float64(x.X-y.X)) > 2 || math.Abs(float64(x.Y-y.Y)) > 2 ||
			math.Abs(float64(x.W-y.W)) > 2 || math.Abs(float64(x.H-y.H)) > 2 {
			return fmt.Sprintf("detection %d: %v vs %v", i, x, y)
		}
	}
	return ""
}

// meanRawDiff is the mean absolute byte difference of two raw pictures of the
// same format; ok is false when they cannot be compared byte for byte.
func meanRawDiff(a, b *pb.RawImage) (float64, bool) {
	if a == nil || b == nil || a.Format != b.Format || a.Width != b.Width || a.Height != b.Height {
		return 0, false
	}
	bpp := 3
	if a.Format == 3 {
		bpp = 1
	}
	row := int(a.Width) * bpp
	sa, sb := int(a.Stride), int(b.Stride)
	if sa == 0 {
		sa = row
	}
	if sb == 0 {
		sb = row
	}
	var sum float64
	for y := 0; y < int(a.Height); y++ {
		ra, rb := a.Data[y*sa:y*sa+row], b.Data[y*sb:y*sb+row]
		for i := range ra {
			sum += math.Abs(float64(ra[i]) - float64(rb[i]))
		}
	}
	return sum / float64(row*int(a.Height)), true
}

func (c *checker) checkCorrupt(ctx context.Context) Result {
	r := Result{Name: "corrupt image"}
	var bad []string
	for _, v := range corruptImages(c.w, c.h) {
		_, d, err := c.process(ctx, v.img, c.params, "corrupt")
		r.Latencies = append(r.Latencies, d)
		if code := status.Code(err); code != codes.InvalidArgument {
			bad = append(bad, fmt.Sprintf("%s: %s %s (want InvalidArgument)", v.name, code, status.Convert(err).Message()))
		}
	}
	if p := c.stillAlive(ctx); p != "" {
		bad = append(bad, p)
	}
	if len(bad) > 0 {
		r.Detail = strings.Join(bad, "; ")
		return r
	}
	r.Passed, r.Detail = true, "InvalidArgument for each of 4 bad images, still serving"
	return r
}

// stillAlive checks that the processor still answers a good call after bad
// input: a crash turns into UNAVAILABLE here.
func (c *checker) stillAlive(ctx context.Context) string {
	_, _, err := c.process(ctx, c.images[0].img, c.params, "alive")
	if err != nil {
		return "a good call after bad input: " + status.Code(err).String() + ": " + status.Convert(err).Message()
	}
	return ""
}

// wrongParams builds parameter sets that break the processor's own
// description: a wrong type, a value past a bound, an unknown choice.
func (c *checker) wrongParams() map[string]map[string]any {
	out := map[string]map[string]any{}
	with := func(k string, v any) map[string]any {
		m := map[string]any{}
		for pk, pv := range c.opts.Params {
			m[pk] = pv
		}
		m[k] = v
		return m
	}
	for _, p := range c.info.GetParams() {
		switch p.Type {
		case "int", "float":
			out[p.Name+"=\"not a number\""] = with(p.Name, "not a number")
			if p.Max != nil {
				out[fmt.Sprintf("%s=%g (max %g)", p.Name, *p.Max+1000, *p.Max)] = with(p.Name, *p.Max+1000)
			}
		case "enum":
			out[p.Name+"=\"no-such-choice\""] = with(p.Name, "no-such-choice")
		case "bool":
			out[p.Name+"=\"maybe\""] = with(p.Name, "maybe")
		}
		if len(out) >= 3 {
			break
		}
	}
	return out
}

func (c *checker) checkBadParams(ctx context.Context) Result {
	r := Result{Name: "wrong params"}
	sets := c.wrongParams()
	if len(sets) == 0 {
		r.Skipped, r.Detail = true, "no checkable parameters"
		return r
	}
	var bad []string
	names := make([]string, 0, len(sets))
	for n := range sets {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s, err := structpb.NewStruct(sets[n])
		if err != nil {
			continue
		}
		resp, d, err := c.process(ctx, c.images[0].img, s, "params")
		r.Latencies = append(r.Latencies, d)
		if code := status.Code(err); code != codes.InvalidArgument {
			detail := code.String()
			if err == nil && resp.Error != "" {
				detail += " with response error " + resp.Error
			}
			bad = append(bad, fmt.Sprintf("%s: %s (want InvalidArgument)", n, detail))
		}
	}
	if p := c.stillAlive(ctx); p != "" {
		bad = append(bad, p)
	}
	if len(bad) > 0 {
		r.Detail = strings.Join(bad, "; ")
		return r
	}
	r.Passed, r.Detail = true, fmt.Sprintf("InvalidArgument for %d bad parameter sets", len(sets))
	return r
}

// checkDeadline sends a burst of calls whose deadline passes before they can
// all be served, then one good call. A processor that honours cancellation
// drops the expired calls (or stops them) and answers the good one in about
// its usual time; one that ignores deadlines works through the whole burst
// first.
func (c *checker) checkDeadline(ctx context.Context) Result {
	r := Result{Name: "deadline"}
	base := c.baseline
	if base <= 0 {
		r.Detail = "no baseline: packed bgr24 calls failed"
		return r
	}
	const burst = 16
	// The smallest variant goes out in the burst: a large raw picture may
	// still be in flight when the deadline passes on a loaded machine, and
	// a call the server never received says nothing about how it treats
	// expired work (a deaf processor would then pass).
	img := c.smallestImage()
	short := base / 2
	if short < time.Millisecond {
		short = time.Millisecond
	}
	var wg sync.WaitGroup
	codesSeen := make([]codes.Code, burst)
	for i := 0; i < burst; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, short)
			defer cancel()
			_, err := c.client.Process(cctx, &pb.ProcessRequest{RequestId: "expired", Image: img, Params: c.params})
			codesSeen[i] = status.Code(err)
		}(i)
	}
	wg.Wait()
	for _, code := range codesSeen {
		if code != codes.OK && code != codes.DeadlineExceeded && code != codes.Canceled {
			r.Detail = fmt.Sprintf("an expired call ended with %s (want DeadlineExceeded)", code)
			return r
		}
	}
	_, d, err := c.process(ctx, img, c.params, "after-deadline")
	r.Latencies = append(r.Latencies, d)
	if err != nil {
		r.Detail = "the call after the burst: " + status.Convert(err).Code().String() + ": " + status.Convert(err).Message()
		return r
	}
	// Working through the whole burst would take burst*base; dropping the
	// expired calls leaves about two calls' work (the one running when the
	// deadline passed, then this one). A quarter of the burst plus
	// scheduling noise separates the two.
	limit := burst/4*base + 250*time.Millisecond
	if d > limit {
		r.Detail = fmt.Sprintf("a call after %d expired ones (deadline %s) took %s, usual %s: expired work was not dropped", burst, short, d.Round(time.Millisecond), base.Round(time.Millisecond))
		return r
	}
	r.Passed = true
	r.Detail = fmt.Sprintf("after %d calls with a %s deadline the next took %s (usual %s)", burst, short.Round(100*time.Microsecond), d.Round(time.Millisecond), base.Round(time.Millisecond))
	return r
}

// smallestImage is the good input with the fewest bytes on the wire.
func (c *checker) smallestImage() *pb.Image {
	best := c.images[0].img
	for _, v := range c.images[1:] {
		if proto.Size(v.img) < proto.Size(best) {
			best = v.img
		}
	}
	return best
}

func (c *checker) checkConcurrency(ctx context.Context) Result {
	r := Result{Name: fmt.Sprintf("concurrency x%d", c.opts.Parallel)}
	var mu sync.Mutex
	var problems []string
	var wg sync.WaitGroup
	for g := 0; g < c.opts.Parallel; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < c.opts.Rounds; i++ {
				id := fmt.Sprintf("par-%d-%d", g, i)
				resp, d, err := c.process(ctx, c.images[0].img, c.params, id)
				mu.Lock()
				switch {
				case err != nil:
					problems = append(problems, status.Code(err).String()+": "+status.Convert(err).Message())
				case resp.Error != "":
					problems = append(problems, "response error: "+resp.Error)
				case resp.RequestId != id:
					problems = append(problems, fmt.Sprintf("answer for %q came back as %q", id, resp.RequestId))
				case c.want != nil:
					if diff := compareResponses(c.want, resp); diff != "" {
						problems = append(problems, "differs from a lone call: "+diff)
					}
				}
				r.Latencies = append(r.Latencies, d)
				mu.Unlock()
			}
		}(g)
	}
	wg.Wait()
	if len(problems) > 0 {
		r.Detail = fmt.Sprintf("%d of %d calls: %s", len(problems), c.opts.Parallel*c.opts.Rounds, problems[0])
		return r
	}
	r.Passed = true
	r.Detail = fmt.Sprintf("%d calls, all equal to a lone call", c.opts.Parallel*c.opts.Rounds)
	return r
}

// checkStream checks ProcessStream when the processor has it: answers in
// order with the request ids. UNIMPLEMENTED is allowed (the server then
// falls back to Process).
func (c *checker) checkStream(ctx context.Context) Result {
	r := Result{Name: "stream"}
	cctx, cancel := c.callCtx(ctx)
	defer cancel()
	st, err := c.client.ProcessStream(cctx)
	if err != nil {
		r.Detail = "ProcessStream: " + err.Error()
		return r
	}
	const n = 4
	sent := make(chan time.Time, n)
	go func() {
		for i := 0; i < n; i++ {
			sent <- time.Now()
			if st.Send(&pb.ProcessRequest{RequestId: fmt.Sprintf("s%d", i), Image: c.images[0].img, Params: c.params}) != nil {
				return
			}
		}
		_ = st.CloseSend()
	}()
	for i := 0; i < n; i++ {
		resp, err := st.Recv()
		if status.Code(err) == codes.Unimplemented {
			r.Skipped, r.Detail = true, "ProcessStream unimplemented (the server falls back to Process)"
			return r
		}
		if err != nil {
			r.Detail = fmt.Sprintf("answer %d: %v", i, err)
			return r
		}
		r.Latencies = append(r.Latencies, time.Since(<-sent))
		if want := fmt.Sprintf("s%d", i); resp.RequestId != want {
			r.Detail = fmt.Sprintf("answer %d has request_id %q, want %q (order)", i, resp.RequestId, want)
			return r
		}
		if resp.Error != "" {
			r.Detail = "response error: " + resp.Error
			return r
		}
	}
	r.Passed, r.Detail = true, fmt.Sprintf("%d answers in order", n)
	return r
}
