package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/imageflowcanvas/imageflow/media"
	"github.com/imageflowcanvas/imageflow/media/mediabus"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// CaptureLoop runs a media.Capture (a file or a capture device) as a camera:
// it writes the capture's H264 units to the sink and reopens the input with
// backoff capped at 2 s. The file and USB adapters share it.
type CaptureLoop struct {
	Capture *media.Capture
	Sink    Sink
	Logger  *slog.Logger
	// What names the input in logs and errors ("file", "usb camera").
	What string

	// au is reused for every unit: the sink marshals it before returning.
	au busv1.AccessUnit
}

// Write is the capture's OnUnit callback.
func (l *CaptureLoop) Write(u *media.CaptureUnit) error {
	// The sink fills camera, sequence and ingest time when they are zero, so
	// the whole message is reset for every unit.
	l.au = busv1.AccessUnit{
		Codec:        busv1.Codec_CODEC_H264,
		Pts:          u.PTS,
		RtpTimestamp: u.RTPTimestamp,
		ClockRate:    90000,
		Keyframe:     u.Keyframe,
		Nalus:        u.NALUs,
	}
	if u.Keyframe {
		l.au.Width, l.au.Height = uint32(u.Width), uint32(u.Height)
	}
	if err := l.Sink.WriteAccessUnit(&l.au); err != nil {
		// A bus hiccup loses one unit, not the camera.
		l.Logger.Debug("write access unit", "err", err)
	}
	return nil
}

// SetTrack is the capture's OnTrack callback.
func (l *CaptureLoop) SetTrack(codec media.Codec, width, height int) {
	l.Sink.SetTrack(mediabus.BusCodec(codec), width, height)
}

// Run captures until ctx ends. An input that fails or ends is reopened after
// a backoff that starts again at 100 ms once units flowed.
func (l *CaptureLoop) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	defer l.Sink.SetState(StateOffline, nil)
	for {
		l.Sink.SetState(StateConnecting, nil)
		units := l.Capture.Stats.Units.Load()
		err := l.Capture.Run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("%s ended", l.What)
		}
		if l.Capture.Stats.Units.Load() > units {
			backoff = 100 * time.Millisecond
		}
		l.Logger.Warn(l.What+" stopped, retrying", "err", err, "retry_in", backoff)
		l.Sink.SetState(StateOffline, err)
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
