// Package grpcstream is the gRPC camera ingest: a StreamService.Publish
// stream (proto/stream.proto) makes its client a camera whose access units
// or JPEG frames go to the camera's ingest.Sink, like an RTSP or WHIP
// publisher.
package grpcstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/imageflowcanvas/imageflow/ingest"
	"github.com/imageflowcanvas/imageflow/media/imagedecode"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	streamv1 "github.com/imageflowcanvas/imageflow/proto/streamv1"
)

// Publisher serves StreamService.Publish. The StreamService's other method,
// Process, belongs to the processors: the server joins the two halves when
// it registers the service; Register serves Publish alone.
type Publisher struct {
	streamv1.UnimplementedStreamServiceServer
	// Open returns the sink of a camera published over gRPC and a release
	// function called when the stream ends. Its error ends the stream: with
	// the error's own gRPC status if it has one, else NOT_FOUND.
	Open func(ctx context.Context, camera string) (ingest.Sink, func(), error)
	// Logger receives the publisher's log lines; slog.Default() when nil.
	Logger *slog.Logger
}

// Register adds the StreamService with Publish only (Process answers
// UNIMPLEMENTED) to a gRPC server.
func (p *Publisher) Register(g *grpc.Server) { streamv1.RegisterStreamServiceServer(g, p) }

func (p *Publisher) logger() *slog.Logger {
	if p.Logger == nil {
		return slog.Default()
	}
	return p.Logger
}

// asStatus keeps an error's gRPC status or gives it code c.
func asStatus(err error, c codes.Code) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(c, err.Error())
}

// Publish implements StreamService.Publish: the first message names the
// camera, access units or JPEG frames follow; the response counts what was
// accepted when the client closes its side.
func (p *Publisher) Publish(stream grpc.ClientStreamingServer[streamv1.PublishRequest, streamv1.PublishResponse]) error {
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
	if p.Open == nil {
		return status.Error(codes.Unimplemented, "publishing is not enabled on this server")
	}
	sink, release, err := p.Open(ctx, first.Camera)
	if err != nil {
		return asStatus(fmt.Errorf("camera %q: %w", first.Camera, err), codes.NotFound)
	}
	if release != nil {
		defer release()
	}
	log := p.logger().With("camera", first.Camera)
	log.Info("gRPC publisher connected")
	sink.SetState(ingest.StateOnline, nil)
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
		sink.SetState(ingest.StateOffline, err)
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
			// The frames are decoded later (live pipelines, snapshots): a
			// header claiming a huge picture is refused here, once.
			hdr, err := imagedecode.Check(pl.Jpeg.GetData(), imagedecode.Options{})
			if err == nil && hdr.Format != imagedecode.JPEG {
				err = fmt.Errorf("%s, not JPEG", hdr.Format)
			}
			if err != nil {
				return fail(status.Errorf(codes.InvalidArgument, "frame %d is not a usable JPEG: %v", accepted, err))
			}
			setTrack(busv1.Codec_CODEC_MJPEG, hdr.Width, hdr.Height)
			au := &busv1.AccessUnit{Camera: first.Camera, Codec: busv1.Codec_CODEC_MJPEG, Pts: pl.Jpeg.Pts,
				Keyframe: true, Data: pl.Jpeg.Data, Width: uint32(hdr.Width), Height: uint32(hdr.Height),
				RtpTimestamp: uint32(pl.Jpeg.Pts * 90000 / int64(time.Second)), ClockRate: 90000}
			if err := sink.WriteAccessUnit(au); err != nil {
				return fail(status.Errorf(codes.Unavailable, "camera %q: %v", first.Camera, err))
			}
			accepted++
		}
		req, err = stream.Recv()
		if errors.Is(err, io.EOF) {
			sink.SetState(ingest.StateOffline, nil)
			log.Info("gRPC publisher finished", "accepted", accepted)
			return stream.SendAndClose(&streamv1.PublishResponse{Accepted: accepted})
		}
		if err != nil {
			sink.SetState(ingest.StateOffline, err)
			return err
		}
	}
}
