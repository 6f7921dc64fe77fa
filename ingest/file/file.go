// Package file plays a video file as a live camera (source URL
// file:///path/to/video): H264 passes through, other codecs are re-encoded to
// H264, the file loops forever in real time and timestamps keep increasing
// across loops.
package file

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"github.com/imageflowcanvas/imageflow/ingest"
	"github.com/imageflowcanvas/imageflow/media"
)

// Errors of the file source.
var (
	ErrNoPath = errors.New("file source: no path")
	ErrNoSink = errors.New("file source: no sink")
)

// Config configures a file source.
type Config struct {
	// Camera is the camera id (for logs).
	Camera string
	// Path is a file path or a file:// URL.
	Path string
	// Sink receives the access units and state. The access unit passed to
	// WriteAccessUnit is reused for the next one: the sink must not keep it
	// (BusSink marshals it before returning).
	Sink ingest.Sink
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
	// Width scales re-encoded video (0 keeps the file's size); Bitrate is the
	// re-encode bit rate (2 Mbit/s when 0). H264 files pass through untouched.
	Width   int
	Bitrate int
}

// Source is a running file camera. It implements ingest.Source.
type Source struct {
	cfg     Config
	path    string
	log     *slog.Logger
	capture *media.Capture
	loop    ingest.CaptureLoop
}

var _ ingest.Source = (*Source)(nil)

// PathFromURL turns a file:// URL (or a plain path) into a path.
func PathFromURL(s string) (string, error) {
	if !strings.HasPrefix(s, "file:") {
		return s, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("file source: %w", err)
	}
	p := u.Path
	if u.Host != "" && u.Host != "localhost" {
		// file://relative/dir/x.mp4 is a common typo for a relative path.
		p = u.Host + p
	}
	if p == "" {
		p = u.Opaque
	}
	if p == "" {
		return "", ErrNoPath
	}
	return p, nil
}

// NewSource validates cfg and builds the source; Run plays it.
func NewSource(cfg Config) (*Source, error) {
	if cfg.Sink == nil {
		return nil, ErrNoSink
	}
	p, err := PathFromURL(cfg.Path)
	if err != nil {
		return nil, err
	}
	if p == "" {
		return nil, ErrNoPath
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Source{cfg: cfg, path: p, log: log.With("camera", cfg.Camera, "source", "file")}
	s.capture = &media.Capture{
		CaptureConfig: media.CaptureConfig{URL: p, Loop: true, Realtime: true, Width: cfg.Width, Bitrate: cfg.Bitrate},
		OnTrack:       s.loop.SetTrack,
		OnUnit:        s.loop.Write,
	}
	s.loop = ingest.CaptureLoop{Capture: s.capture, Sink: cfg.Sink, Logger: s.log, What: "file"}
	return s, nil
}

// Stats exposes the capture counters (units, loops, decode errors).
func (s *Source) Stats() *media.CaptureStats { return &s.capture.Stats }

// Run plays the file until ctx ends; a file that cannot be opened or read is
// retried with backoff (capped at 2 s).
func (s *Source) Run(ctx context.Context) error { return s.loop.Run(ctx) }
