// Package file plays a video file as a live camera (source URL
// file:///path/to/video): H264 passes through, other codecs are re-encoded to
// H264, the file loops forever in real time and timestamps keep increasing
// across loops.
package file

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/imageflowcanvas/imageflow/ingest"
	"github.com/imageflowcanvas/imageflow/media"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
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
	au      busv1.AccessUnit
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
		OnTrack:       cfg.Sink.SetTrack,
		OnUnit:        s.write,
	}
	return s, nil
}

// Stats exposes the capture counters (units, loops, decode errors).
func (s *Source) Stats() *media.CaptureStats { return &s.capture.Stats }

func (s *Source) write(u *media.CaptureUnit) error {
	// One reused message: the sink fills camera, sequence and ingest time when
	// they are zero, so those are reset for every unit.
	au := &s.au
	*au = busv1.AccessUnit{
		Codec:        busv1.Codec_CODEC_H264,
		Pts:          u.PTS,
		RtpTimestamp: u.RTPTimestamp,
		ClockRate:    90000,
		Keyframe:     u.Keyframe,
		Nalus:        u.NALUs,
	}
	if u.Keyframe {
		au.Width, au.Height = uint32(u.Width), uint32(u.Height)
	}
	if err := s.cfg.Sink.WriteAccessUnit(au); err != nil {
		// A bus hiccup loses one unit, not the camera.
		s.log.Debug("write access unit", "err", err)
	}
	return nil
}

// Run plays the file until ctx ends; a file that cannot be opened or read is
// retried with backoff (capped at 2 s).
func (s *Source) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	defer s.cfg.Sink.SetState(ingest.StateOffline, nil)
	for {
		s.cfg.Sink.SetState(ingest.StateConnecting, nil)
		start := time.Now()
		err := s.capture.Run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, io.EOF) {
			err = errors.New("file ended")
		}
		s.log.Warn("file source stopped, retrying", "path", s.path, "err", err, "retry_in", backoff)
		s.cfg.Sink.SetState(ingest.StateOffline, err)
		if time.Since(start) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}
