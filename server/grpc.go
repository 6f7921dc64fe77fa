package server

import (
	"context"
	"errors"

	"gocv.io/x/gocv"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/imageflowcanvas/imageflow/ingest"
	"github.com/imageflowcanvas/imageflow/ingest/grpcstream"
	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/processors/remote"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	streamv1 "github.com/imageflowcanvas/imageflow/proto/streamv1"
)

// registerGRPC adds the StreamService: frames in, results out
// (StreamService.Process, processors/remote), and gRPC clients as cameras
// (StreamService.Publish, ingest/grpcstream).
func (s *Server) registerGRPC(g *grpc.Server) {
	streamv1.RegisterStreamServiceServer(g, streamService{
		process: &remote.StreamServer{
			Compile: s.compileForStream,
			Logger:  s.Logger.With("component", "grpc-stream"),
		},
		publish: &grpcstream.Publisher{
			Open: func(ctx context.Context, camera string) (ingest.Sink, func(), error) {
				sink, release, err := s.super.acquirePublisher(camera)
				if err != nil {
					return nil, nil, grpcStatus(err)
				}
				return sink, release, nil
			},
			Logger: s.Logger.With("component", "grpc-publish"),
		},
	})
}

// streamService joins the two halves of the StreamService: one proto
// service, so clients keep one stub, served by the processors and the
// ingest adapter.
type streamService struct {
	streamv1.UnimplementedStreamServiceServer
	process *remote.StreamServer
	publish *grpcstream.Publisher
}

func (s streamService) Process(st grpc.BidiStreamingServer[streamv1.StreamRequest, streamv1.StreamResult]) error {
	return s.process.Process(st)
}

func (s streamService) Publish(st grpc.ClientStreamingServer[streamv1.PublishRequest, streamv1.PublishResponse]) error {
	return s.publish.Publish(st)
}

func (s *Server) compileForStream(ctx context.Context, id string) (remote.Pipeline, error) {
	p, _, err := s.pipelines.get(ctx, id)
	if err != nil {
		return nil, grpcStatus(err)
	}
	pl, err := processors.Compile(s.Registry, p, processors.WithRemote(s.remoteFactory))
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	return &streamPipeline{id: id, pl: pl}, nil
}

// grpcStatus maps the API's errors to gRPC codes.
func grpcStatus(err error) error {
	switch {
	case errors.Is(err, ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrPublisherBusy), errors.Is(err, ErrConflict):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// streamPipeline adapts an engine pipeline to what the StreamService needs.
type streamPipeline struct {
	id  string
	pl  *processors.Pipeline
	out busv1.Result
}

func (p *streamPipeline) Run(ctx context.Context, img gocv.Mat) (*busv1.Result, error) {
	res, err := p.pl.Run(ctx, img)
	if err != nil {
		return nil, err
	}
	p.out = busv1.Result{Pipeline: p.id, Width: uint32(res.Width), Height: uint32(res.Height),
		Detections: res.Detections, Values: res.Values, LatencyNs: int64(res.Duration)}
	return &p.out, nil
}

func (p *streamPipeline) Close() error { return p.pl.Close() }
