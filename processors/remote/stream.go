package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image/jpeg"
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

// PublishSink takes the access units of a camera published over gRPC. It has
// ingest.Sink's methods, so the server passes an ingest sink as it is.
type PublishSink interface {
	WriteAccessUnit(au *busv1.AccessUnit) error
	SetState(state string, err error)
	SetTrack(codec busv1.Codec, width, height int)
}

// Camera states reported to a PublishSink (the ingest package's values).
const (
	stateOnline  = "online"
	stateOffline = "offline"
)

// StreamServer implements the StreamService (proto/stream.proto). The server
// fills in the two functions and registers it on its gRPC listener.
type StreamServer struct {
	streamv1.UnimplementedStreamServiceServer
	// Compile builds the pipeline with the given id for one Process stream.
	// Its error ends the stream: with the error's own gRPC status if it has
	// one, else NOT_FOUND.
	Compile func(ctx context.Context, pipeline string) (Pipeline, error)
	// OpenPublish returns the sink of a camera published over gRPC and a
	// release function called when the stream ends. Its error ends the stream
	// like Compile's.
	OpenPublish func(ctx context.Context, camera string) (PublishSink, func(), error)
	Logger      *slog.Logger
}

// Register adds the service to a gRPC server. Raw frames are large: the
// server should allow messages of MaxMessageSize (grpc.MaxRecvMsgSize).
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

// Publish implements the StreamService.
func (s *StreamServer) Publish(stream grpc.ClientStreamingServer[streamv1.PublishRequest, streamv1.PublishResponse]) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&streamv1.PublishResponse{})
		}
		return err
	}
	if first.Camera == "" {
		return status.Error(codes.InvalidArgument, "the first message must name the camera")
	}
	if s.OpenPublish == nil {
		return status.Error(codes.Unimplemented, "publishing is not enabled on this server")
	}
	sink, release, err := s.OpenPublish(ctx, first.Camera)
	if err != nil {
		return asStatus(fmt.Errorf("camera %q: %w", first.Camera, err), codes.NotFound)
	}
	if release != nil {
		defer release()
	}
	log := s.logger().With("camera", first.Camera)
	log.Info("gRPC publisher connected")
	sink.SetState(stateOnline, nil)
	var accepted uint64
	var trackCodec busv1.Codec
	var trackW, trackH int
	setTrack := func(c busv1.Codec, w, h int) {
		if c != trackCodec || (w != 0 && (w != trackW || h != trackH)) {
			trackCodec, trackW, trackH = c, w, h
			sink.SetTrack(c, w, h)
		}
	}
	fail := func(err error) error {
		sink.SetState(stateOffline, err)
		return err
	}
	for req := first; ; {
		switch pl := req.Payload.(type) {
		case *streamv1.PublishRequest_AccessUnit:
			au := pl.AccessUnit
			if au == nil || (len(au.Nalus) == 0 && len(au.Data) == 0) {
				return fail(status.Errorf(codes.InvalidArgument, "access unit %d is empty", accepted))
			}
			if au.Codec == busv1.Codec_CODEC_UNSPECIFIED {
				return fail(status.Errorf(codes.InvalidArgument, "access unit %d has no codec", accepted))
			}
			au.Camera = first.Camera
			if au.Keyframe {
				setTrack(au.Codec, int(au.Width), int(au.Height))
			}
			if err := sink.WriteAccessUnit(au); err != nil {
				return fail(status.Errorf(codes.Unavailable, "camera %q: %v", first.Camera, err))
			}
			accepted++
		case *streamv1.PublishRequest_Jpeg:
			cfg, err := jpeg.DecodeConfig(bytes.NewReader(pl.Jpeg.GetData()))
			if err != nil {
				return fail(status.Errorf(codes.InvalidArgument, "frame %d is not a JPEG: %v", accepted, err))
			}
			setTrack(busv1.Codec_CODEC_MJPEG, cfg.Width, cfg.Height)
			au := &busv1.AccessUnit{Camera: first.Camera, Codec: busv1.Codec_CODEC_MJPEG, Pts: pl.Jpeg.Pts,
				Keyframe: true, Data: pl.Jpeg.Data, Width: uint32(cfg.Width), Height: uint32(cfg.Height),
				RtpTimestamp: uint32(pl.Jpeg.Pts * 90000 / int64(time.Second)), ClockRate: 90000}
			if err := sink.WriteAccessUnit(au); err != nil {
				return fail(status.Errorf(codes.Unavailable, "camera %q: %v", first.Camera, err))
			}
			accepted++
		}
		req, err = stream.Recv()
		if errors.Is(err, io.EOF) {
			sink.SetState(stateOffline, nil)
			log.Info("gRPC publisher finished", "accepted", accepted)
			return stream.SendAndClose(&streamv1.PublishResponse{Accepted: accepted})
		}
		if err != nil {
			sink.SetState(stateOffline, err)
			return err
		}
	}
}
