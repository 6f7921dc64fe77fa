// Package rtsp carries cameras in and out over RTSP (RFC 2326) with gortsplib:
// a pull Source for IP cameras, and a Server that accepts publishers
// (ANNOUNCE/RECORD from ffmpeg, OBS, GStreamer) and serves every camera to
// RTSP readers (DESCRIBE/SETUP/PLAY) from the bus hub.
//
// Access units follow the bus contract (proto/bus.proto): H264/H265 NAL units
// without start codes, parameter sets in front of every IDR, the RTP timestamp
// of the source kept end to end so overlays match frames. Audio (AAC, Opus,
// G711) is published beside the video; RTSP readers get the video only (the
// hub carries video).
//
// Wiring, done by the composition root:
//
//	src := rtsp.NewSource(rtsp.SourceConfig{Camera: id, URL: url, Sink: sink, Logger: log})
//	go src.Run(ctx) // reconnects by itself until ctx ends
//
//	srv := &rtsp.Server{Address: ":8554", Cameras: cams, Hub: hub,
//		Publishers: pubs, Authenticator: auth, Logger: log}
//	err := srv.Start() // srv.Addr() is the real address; srv.Close() stops all
//
// The server asks clients for Basic credentials because the Authenticator
// needs the clear password (digest cannot be checked against an opaque
// verifier); the pull source answers both Basic and Digest.
package rtsp

import (
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"
)

// Errors of the package; callers branch with errors.Is.
var (
	// ErrCameraNotFound is what a Cameras implementation returns for an
	// unknown id (any error from LookupCamera answers 404).
	ErrCameraNotFound = errors.New("camera not found")
	// ErrNoVideo means the stream carries no H264 or H265 video track.
	ErrNoVideo = errors.New("no H264 or H265 video track")
	// ErrBadConfig wraps configuration errors of Source and Server.
	ErrBadConfig = errors.New("rtsp: bad configuration")
)

// cameraFromPath turns an RTSP path ("/cam1", "/cam1/") into a camera id.
func cameraFromPath(p string) string {
	p = strings.TrimPrefix(p, "/")
	return strings.TrimSuffix(p, "/")
}

// rateLog writes at most one line per period for a noisy event (lost
// packets, decode errors) and counts the rest, so a broken peer cannot
// flood the log.
type rateLog struct {
	log    *slog.Logger
	msg    string
	last   atomic.Int64
	events atomic.Uint64
}

const rateLogPeriod = 10 * time.Second

func (r *rateLog) add(n uint64, args ...any) {
	total := r.events.Add(n)
	now := time.Now().UnixNano()
	last := r.last.Load()
	if now-last < int64(rateLogPeriod) || !r.last.CompareAndSwap(last, now) {
		return
	}
	r.log.Warn(r.msg, append(args, "total", total)...)
}
