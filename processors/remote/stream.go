package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"gocv.io/x/gocv"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	streamv1 "github.com/imageflowcanvas/imageflow/proto/streamv1"
)

// Pipeline is a compiled pipeline as the StreamService needs it.
type Pipeline interface {
	// Run processes one BGR picture, which the caller owns and closes, and
	// returns detections and values in its pixels.
	Run(ctx context.Context, img gocv.Mat) (*busv1.Result, error)
	// Close frees the pipeline's processors.
	Close() error
}

// StreamServer implements StreamService.Process (proto/stream.proto): frames
// in, pipeline results out. Publish, the service's camera ingest, lives in
// ingest/grpcstream; the server joins the two when it registers the service.
type StreamServer struct {
	streamv1.UnimplementedStreamServiceServer
	// Compile builds the pipeline with the given id for one Process stream.
	// Its error ends the stream: with the error's own gRPC status if it has
	// one, else NOT_FOUND.
	Compile func(ctx context.Context, pipeline string) (Pipeline, error)
	Logger  *slog.Logger
}

// Register adds the service, with Process only (Publish answers
// UNIMPLEMENTED), to a gRPC server. Raw frames are large: the server should
// allow messages of MaxMessageSize (grpc.MaxRecvMsgSize).
func (s *StreamServer) Register(g *grpc.Server) { streamv1.RegisterStreamServiceServer(g, s) }

func (s *StreamServer) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.Default()
	}
	return s.Logger
}

// asStatus keeps an error's gRPC status or gives it code c.
func asStatus(err error, c codes.Code) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(c, err.Error())
}

// Process implements the StreamService.
func (s *StreamServer) Process(stream grpc.BidiStreamingServer[streamv1.StreamRequest, streamv1.StreamResult]) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	if first.Pipeline == "" {
		return status.Error(codes.InvalidArgument, "the first message must name the pipeline")
	}
	if s.Compile == nil {
		return status.Error(codes.Unimplemented, "no pipelines on this server")
	}
	p, err := s.Compile(ctx, first.Pipeline)
	if err != nil {
		return asStatus(fmt.Errorf("pipeline %q: %w", first.Pipeline, err), codes.NotFound)
	}
	defer p.Close()
	log := s.logger().With("pipeline", first.Pipeline)
	log.Debug("stream started")
	req := first
	for {
		if req.Frame != nil {
			if err := stream.Send(s.runFrame(ctx, p, req.Frame)); err != nil {
				return err
			}
		}
		req, err = stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (s *StreamServer) runFrame(ctx context.Context, p Pipeline, f *streamv1.StreamFrame) *streamv1.StreamResult {
	start := time.Now()
	res := &streamv1.StreamResult{Sequence: f.Sequence, Timestamp: f.Timestamp}
	var img gocv.Mat
	var err error
	switch f.Format {
	case busv1.PixelFormat_PIXEL_FORMAT_JPEG, busv1.PixelFormat_PIXEL_FORMAT_PNG, busv1.PixelFormat_PIXEL_FORMAT_UNSPECIFIED:
		img, err = DecodeToMat(f.Data)
	default:
		img, err = RawToMat(f.Format, int(f.Width), int(f.Height), int(f.Stride), f.Data)
	}
	if err != nil {
		res.Error = err.Error()
		res.LatencyNs = time.Since(start).Nanoseconds()
		return res
	}
	defer img.Close()
	out, err := p.Run(ctx, img)
	if err != nil {
		res.Error = err.Error()
	}
	if out == nil {
		out = &busv1.Result{}
	}
	if out.Width == 0 && out.Height == 0 {
		out.Width, out.Height = uint32(img.Cols()), uint32(img.Rows())
	}
	out.Sequence = f.Sequence
	res.Result = out
	res.LatencyNs = time.Since(start).Nanoseconds()
	out.LatencyNs = res.LatencyNs
	return res
}
