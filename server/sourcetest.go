package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/imageflowcanvas/imageflow/ingest"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	"github.com/imageflowcanvas/imageflow/server/rest"
)

// Source tests: how long the server listens to a source before answering.
const (
	// sourceTestTimeout ends a test that got no video.
	sourceTestTimeout = 10 * time.Second
	// sourceTestWindow is how long video is counted to measure the rate
	// once the first frame arrived.
	sourceTestWindow = 2 * time.Second
)

// sourceTestInput is the body of POST /api/v1/cameras/test.
type sourceTestInput struct {
	Source string `json:"source"`
}

// sourceTestResult says what the server found at a source.
type sourceTestResult struct {
	OK      bool    `json:"ok"`
	Codec   string  `json:"codec,omitempty"`
	Width   int     `json:"width,omitempty"`
	Height  int     `json:"height,omitempty"`
	FPS     float64 `json:"fps"`
	Bitrate float64 `json:"bitrate"`
	Frames  int     `json:"frames"`
	Error   string  `json:"error,omitempty"`
	MS      float64 `json:"ms"`
}

func sourceTestSchemas() map[string]any {
	return map[string]any{
		"SourceTestInput": obj(map[string]any{"source": str}, "source"),
		"SourceTestResult": obj(map[string]any{"ok": boo, "codec": str, "width": integ, "height": integ, "fps": num, "bitrate": num,
			"frames": integ, "error": str, "ms": num}, "ok", "fps", "bitrate", "frames", "ms"),
	}
}

// probeSink is the Sink of a source under test: it keeps the track, counts
// video and remembers the first failure; nothing goes on the bus.
type probeSink struct {
	mu            sync.Mutex
	codec         busv1.Codec
	width, height int
	frames, bytes int
	first, last   time.Time
	err           error
	gotVideo      chan struct{}
	failed        chan struct{}
}

func newProbeSink() *probeSink {
	return &probeSink{gotVideo: make(chan struct{}), failed: make(chan struct{})}
}

func (p *probeSink) WriteAccessUnit(au *busv1.AccessUnit) error {
	if au.Codec >= busv1.Codec_CODEC_AAC {
		return nil
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.frames == 0 {
		p.first = now
		if p.codec == busv1.Codec_CODEC_UNSPECIFIED {
			p.codec = au.Codec
		}
		close(p.gotVideo)
	}
	p.frames++
	p.last = now
	p.bytes += len(au.Data)
	for _, n := range au.Nalus {
		p.bytes += len(n)
	}
	return nil
}

func (p *probeSink) SetState(_ string, err error) {
	if err == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err == nil {
		p.err = err
		close(p.failed)
	}
}

func (p *probeSink) SetTrack(codec busv1.Codec, width, height int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.codec = codec
	if width > 0 && height > 0 {
		p.width, p.height = width, height
	}
}

// testSource connects to a source as a camera would and reports its codec,
// size and frame rate, or why it cannot; no camera is created.
func (s *Server) testSource(c *fiber.Ctx) error {
	var in sourceTestInput
	if err := decodeStrict(c.Body(), &in); err != nil {
		return writeError(c, err)
	}
	if in.Source == SourcePublish {
		return writeError(c, invalidf("source %q is pushed to the server; there is nothing to connect to", SourcePublish))
	}
	if err := s.validateSource(in.Source); err != nil {
		return writeError(c, err)
	}
	factory := s.super.factories[sourceScheme(in.Source)]
	if factory == nil {
		return writeError(c, fmt.Errorf("%w: %w: %s sources are not available in this build", rest.ErrInvalid, ingest.ErrUnsupportedSource, sourceScheme(in.Source)))
	}
	start := time.Now()
	sink := newProbeSink()
	res := sourceTestResult{}
	src, err := factory(&busv1.Camera{Id: "source_test", Source: in.Source, Enabled: true}, sink)
	if err == nil {
		ctx, cancel := context.WithTimeout(c.UserContext(), sourceTestTimeout)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := src.Run(ctx); err != nil && ctx.Err() == nil {
				sink.SetState(ingest.StateOffline, err)
			}
		}()
		select {
		case <-sink.gotVideo:
			select {
			case <-time.After(sourceTestWindow):
			case <-ctx.Done():
			}
		case <-sink.failed:
		case <-ctx.Done():
		}
		cancel()
		<-done
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	res.MS = float64(time.Since(start).Microseconds()) / 1000
	res.Frames = sink.frames
	if sink.codec != busv1.Codec_CODEC_UNSPECIFIED {
		res.Codec = ingest.CodecName(sink.codec)
	}
	res.Width, res.Height = sink.width, sink.height
	if el := sink.last.Sub(sink.first).Seconds(); sink.frames > 1 && el > 0 {
		res.FPS = float64(sink.frames-1) / el
		res.Bitrate = float64(sink.bytes*8) / el
	}
	switch {
	case err != nil:
		res.Error = err.Error()
	case sink.frames > 0:
		res.OK = true
	case sink.err != nil:
		res.Error = sink.err.Error()
	default:
		res.Error = fmt.Sprintf("no video within %s", sourceTestTimeout)
	}
	res.Error = redactError(res.Error, in.Source)
	return c.JSON(res)
}

func (s *Server) sourceTestRoute() route {
	return route{Method: "POST", Path: "/api/v1/cameras/test", Summary: "Test a source before saving a camera: the server connects and reports codec, size and frame rate, or the error",
		Handler: s.testSource, Request: "SourceTestInput", Response: "SourceTestResult", Statuses: []int{200, 400}, Role: rest.RoleOperator}
}
