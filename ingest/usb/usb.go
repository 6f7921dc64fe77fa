// Package usb captures a V4L2 camera (/dev/videoN, raw or MJPEG) through
// libavdevice and re-encodes it to H264 with the same capture loop as the
// file source (media.Capture), and lists the machine's capture devices.
package usb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/imageflowcanvas/imageflow/ingest"
	"github.com/imageflowcanvas/imageflow/media"
)

// Errors of the USB source.
var (
	ErrNoDevice = errors.New("usb source: no device")
	ErrNoSink   = errors.New("usb source: no sink")
)

// Config configures a USB camera source.
type Config struct {
	// Camera is the camera id (for logs).
	Camera string
	// Device is /dev/videoN or a usb:///dev/videoN URL.
	Device string
	// InputFormat picks the camera's format: a FourCC ("MJPG", "YUYV") or a
	// libavdevice name ("mjpeg", "yuyv422"); empty lets the driver choose.
	InputFormat string
	// Width, Height and FPS ask the camera for a mode; 0 keeps its default.
	Width, Height, FPS int
	// Bitrate of the H264 encode in bits/s; 2 Mbit/s when 0.
	Bitrate int
	// Format is the libavformat input; "video4linux2" when empty. Tests set
	// "lavfi" or a file format to run the same path without a camera.
	Format string
	// Sink receives access units and state; it must not keep the access unit
	// (it is reused).
	Sink ingest.Sink
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
}

// Source is a running USB camera. It implements ingest.Source.
type Source struct {
	cfg     Config
	log     *slog.Logger
	capture *media.Capture
	loop    ingest.CaptureLoop
}

var _ ingest.Source = (*Source)(nil)

// NewSource validates cfg and builds the source.
func NewSource(cfg Config) (*Source, error) {
	if cfg.Sink == nil {
		return nil, ErrNoSink
	}
	dev := strings.TrimPrefix(cfg.Device, "usb://")
	dev = strings.TrimPrefix(dev, "v4l2://")
	if dev == "" {
		return nil, ErrNoDevice
	}
	if cfg.Width < 0 || cfg.Height < 0 || cfg.FPS < 0 || (cfg.Width == 0) != (cfg.Height == 0) {
		return nil, fmt.Errorf("usb source: bad mode %dx%d@%d", cfg.Width, cfg.Height, cfg.FPS)
	}
	opts := map[string]string{}
	if cfg.InputFormat != "" {
		f := inputFormat(strings.ToUpper(cfg.InputFormat))
		if f == "" {
			f = strings.ToLower(cfg.InputFormat)
		}
		opts["input_format"] = f
	}
	if cfg.Width > 0 {
		opts["video_size"] = strconv.Itoa(cfg.Width) + "x" + strconv.Itoa(cfg.Height)
	}
	if cfg.FPS > 0 {
		opts["framerate"] = strconv.Itoa(cfg.FPS)
	}
	format := cfg.Format
	if format == "" {
		format = "video4linux2"
	}
	if format != "video4linux2" {
		opts = nil // device options mean nothing to other inputs
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Source{cfg: cfg, log: log.With("camera", cfg.Camera, "source", "usb", "device", dev)}
	s.capture = &media.Capture{
		CaptureConfig: media.CaptureConfig{
			URL:     dev,
			Demux:   media.DemuxOptions{Format: format, Options: opts},
			Bitrate: cfg.Bitrate,
		},
		OnTrack: s.loop.SetTrack,
		OnUnit:  s.loop.Write,
	}
	s.loop = ingest.CaptureLoop{Capture: s.capture, Sink: cfg.Sink, Logger: s.log, What: "usb camera"}
	return s, nil
}

// Stats exposes the capture counters.
func (s *Source) Stats() *media.CaptureStats { return &s.capture.Stats }

// Run captures until ctx ends, reopening an unplugged or busy camera with
// backoff capped at 2 s.
func (s *Source) Run(ctx context.Context) error { return s.loop.Run(ctx) }
