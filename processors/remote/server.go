// Package remote carries processors over gRPC: Serve exposes any
// processors.Processor as the Processor service (proto/processor.proto),
// NewClient turns a remote service back into a processors.Processor, and
// StreamServer implements StreamService.Process, which lets clients push
// frames through pipelines.
package remote

import (
	"context"
	"errors"
	"fmt"
	"gocv.io/x/gocv"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/imageflowcanvas/imageflow/processors"
	pb "github.com/imageflowcanvas/imageflow/proto/processorv1"
)

// MaxMessageSize bounds one gRPC message: a raw 4K BGR frame (25 MB) fits.
const MaxMessageSize = 64 << 20

// processorService serves one kind of processor. Each distinct parameter set
// gets its own instance, built on first use, because a processor's
// parameters are fixed when it is built.
type processorService struct {
	pb.UnimplementedProcessorServer
	spec processors.Spec
	// build makes the processor for a parameter set; nil for a fixed one.
	build func(raw map[string]any) (processors.Processor, error)

	mu    sync.Mutex
	insts map[string]*instance
	fixed *instance
}

// instance serialises calls on one processor: Process calls never overlap.
type instance struct {
	mu sync.Mutex
	p  processors.Processor
}

// maxInstances bounds the per-parameter cache so a client cycling parameters
// cannot grow it without end.
const maxInstances = 16

func (s *processorService) instanceFor(params *structpb.Struct) (*instance, error) {
	if s.fixed != nil {
		return s.fixed, nil
	}
	key := ""
	if params != nil {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(params)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "params: %v", err)
		}
		key = string(b)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if in, ok := s.insts[key]; ok {
		return in, nil
	}
	p, err := s.build(params.AsMap())
	if err != nil {
		if errors.Is(err, processors.ErrBadParam) {
			return nil, status.Errorf(codes.InvalidArgument, "%s: %v", s.spec.Name, err)
		}
		return nil, status.Errorf(codes.FailedPrecondition, "%s: %v", s.spec.Name, err)
	}
	if len(s.insts) >= maxInstances {
		for k, old := range s.insts {
			old.mu.Lock()
			old.p.Close()
			old.mu.Unlock()
			delete(s.insts, k)
			break
		}
	}
	in := &instance{p: p}
	s.insts[key] = in
	return in, nil
}

func (s *processorService) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, in := range s.insts {
		in.mu.Lock()
		in.p.Close()
		in.mu.Unlock()
		delete(s.insts, k)
	}
}

// Info implements the Processor service.
func (s *processorService) Info(ctx context.Context, _ *pb.InfoRequest) (*pb.InfoResponse, error) {
	return SpecToInfo(s.spec), nil
}

// SpecToInfo describes a spec in the service's terms.
func SpecToInfo(spec processors.Spec) *pb.InfoResponse {
	out := &pb.InfoResponse{Name: spec.Name, Description: spec.Description, Outputs: spec.Outputs}
	for _, p := range spec.Params {
		ps := &pb.ParamSpec{Name: p.Name, Type: string(p.Type), Description: p.Description,
			Required: p.Required, Min: p.Min, Max: p.Max, Choices: p.Choices}
		if p.Default != nil {
			if v, err := structpb.NewValue(normalise(p.Default)); err == nil {
				ps.Default = v
			}
		}
		out.Params = append(out.Params, ps)
	}
	return out
}

// normalise turns Go numbers structpb does not know into float64.
func normalise(v any) any {
	switch n := v.(type) {
	case int64:
		return float64(n)
	case int32:
		return float64(n)
	case float32:
		return float64(n)
	}
	return v
}

// Process implements the Processor service.
func (s *processorService) Process(ctx context.Context, req *pb.ProcessRequest) (*pb.ProcessResponse, error) {
	return s.handle(ctx, req)
}

// ProcessStream implements the Processor service: one response per request,
// in order.
func (s *processorService) ProcessStream(stream grpc.BidiStreamingServer[pb.ProcessRequest, pb.ProcessResponse]) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil // client closed its side (io.EOF) or went away
		}
		resp, err := s.handle(stream.Context(), req)
		if err != nil {
			resp = &pb.ProcessResponse{RequestId: req.RequestId, Error: status.Convert(err).Message()}
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

func (s *processorService) handle(ctx context.Context, req *pb.ProcessRequest) (*pb.ProcessResponse, error) {
	if req.Image == nil {
		return nil, status.Error(codes.InvalidArgument, "image is required")
	}
	img, err := imageToMat(req.Image)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	defer img.Close()
	inst, err := s.instanceFor(req.Params)
	if err != nil {
		return nil, err
	}
	in := processors.Input{Image: img, Detections: req.Detections, Values: req.Values}
	// Steps with an image output write into the Mat they are given, as the
	// engine hands them one; a zero Mat would crash them inside OpenCV.
	out := processors.Output{Image: gocv.NewMat()}
	defer func() {
		if out.Image.Ptr() != nil {
			out.Image.Close()
		}
	}()
	inst.mu.Lock()
	// A call that waited here past its deadline is dropped: its caller has
	// given up, and running it would delay the calls queued behind it.
	if ctx.Err() != nil {
		inst.mu.Unlock()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	err = inst.p.Process(ctx, &in, &out)
	inst.mu.Unlock()
	resp := &pb.ProcessResponse{RequestId: req.RequestId, Detections: out.Detections, Values: out.Values, ReplaceDetections: out.ReplaceDetections}
	if err != nil {
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		resp.Error = err.Error()
		return resp, nil
	}
	if out.Image.Ptr() != nil && !out.Image.Empty() {
		raw := &pb.RawImage{}
		if err := matToRaw(out.Image, raw); err != nil {
			resp.Error = err.Error()
			return resp, nil
		}
		// The response is marshalled after this function returns, when the
		// Mat is closed: copy its bytes.
		raw.Data = append([]byte(nil), raw.Data...)
		resp.Image = &pb.Image{Data: &pb.Image_Raw{Raw: raw}}
	}
	return resp, nil
}

// windowSize is the HTTP/2 flow-control window: a raw 640x480 frame (900 KB)
// crosses in one window instead of waiting for ~14 window updates at gRPC's
// 64 KB start.
const windowSize = 4 << 20

func newGRPCServer() *grpc.Server {
	return grpc.NewServer(grpc.MaxRecvMsgSize(MaxMessageSize), grpc.MaxSendMsgSize(MaxMessageSize),
		grpc.InitialWindowSize(windowSize), grpc.InitialConnWindowSize(windowSize))
}

// Serve exposes one built processor as the Processor service on lis until
// ctx ends. Request parameters are ignored: p was built with its own. It
// closes lis but not p.
func Serve(ctx context.Context, lis net.Listener, name string, spec processors.Spec, p processors.Processor) error {
	if spec.Name == "" {
		spec.Name = name
	}
	svc := &processorService{spec: spec, fixed: &instance{p: p}}
	return serveGRPC(ctx, lis, func(g *grpc.Server) { pb.RegisterProcessorServer(g, svc) })
}

// serveGRPC runs a gRPC server on lis until ctx ends, then stops it
// gracefully (in-flight calls get a second to finish). It also serves the
// standard gRPC health service (SERVING until shutdown) for K3s probes and
// `imageflow processor check`.
func serveGRPC(ctx context.Context, lis net.Listener, register func(*grpc.Server)) error {
	g := newGRPCServer()
	register(g)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(g, hs)
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(lis) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	hs.Shutdown() // NOT_SERVING while in-flight calls finish
	done := make(chan struct{})
	go func() { g.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
		g.Stop()
		<-done
	}
	<-errc
	return nil
}

// RunProcessorServer serves the registry's processor name on addr until ctx
// ends (`imageflow processor serve <name>`). Each distinct parameter set a
// caller sends gets its own processor instance, built from the spec.
func RunProcessorServer(ctx context.Context, addr string, name string, reg *processors.Registry, logger *slog.Logger) error {
	spec, ok := reg.Lookup(name)
	if !ok {
		return fmt.Errorf("%w %q", processors.ErrUnknownProcessor, name)
	}
	if spec.New == nil {
		return fmt.Errorf("processor %q cannot be built", name)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	svc := &processorService{spec: spec, insts: make(map[string]*instance),
		build: func(raw map[string]any) (processors.Processor, error) {
			params, err := spec.Resolve(raw)
			if err != nil {
				return nil, err
			}
			return spec.New(params)
		}}
	defer svc.close()
	if logger == nil {
		logger = slog.Default()
	}
	logger.Info("processor server listening", "processor", name, "addr", lis.Addr().String())
	return serveGRPC(ctx, lis, func(g *grpc.Server) { pb.RegisterProcessorServer(g, svc) })
}
