package ingest

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/bus"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// BusSink publishes a camera's access units on the bus and keeps its live
// status (state, codec, size, fps, bitrate, last error).
type BusSink struct {
	nc     *nats.Conn
	camera string
	// The camera's subjects, built once rather than per access unit.
	videoSubject, audioSubject string
	// onChange is called (outside the lock) with a copy of the status after
	// every state change, to publish events and update metrics.
	onChange func(*busv1.CameraStatus)
	// feed and interest (FeedLocal) hand video to this process's hub
	// and tell whether the bus has other takers; guarded by mu.
	feed     func(data []byte) bool
	interest func(subject string) bool

	mu     sync.Mutex
	status busv1.CameraStatus
	seq    uint64
	// Rate window: fps and bitrate are averaged over the last rateWindow.
	winStart  time.Time
	winFrames int
	winBytes  int
	// Totals for metrics.
	frames, bytes uint64
	// What keyframes tell viewers about the camera's audio: its codec and
	// when a frame of it was last written, and when this session's first
	// access unit was (a session too young to have heard its audio yet
	// does not claim to know).
	audioCodec   busv1.Codec
	audioAt      time.Time
	sessionStart time.Time
}

const (
	rateWindow = 2 * time.Second
	// audioSettle is how long a session runs before its keyframes say
	// whether the camera has audio: audio frames come every 20-60 ms, and a
	// source may start its audio track a little after its video.
	audioSettle = time.Second
	// audioGone is how long without an audio frame means the camera's audio
	// stopped.
	audioGone = 3 * time.Second
)

// NewBusSink builds the sink of one camera.
func NewBusSink(nc *nats.Conn, subjects bus.Subjects, camera string, onChange func(*busv1.CameraStatus)) *BusSink {
	s := &BusSink{nc: nc, camera: camera, onChange: onChange,
		videoSubject: subjects.Video(camera), audioSubject: subjects.Audio(camera)}
	s.status.State = StateOffline
	s.status.SinceUnixNano = time.Now().UnixNano()
	return s
}

// WriteAccessUnit implements Sink.
func (s *BusSink) WriteAccessUnit(au *busv1.AccessUnit) error {
	now := time.Now()
	size := len(au.Data)
	for _, n := range au.Nalus {
		size += len(n)
	}
	s.mu.Lock()
	s.seq++
	if au.Camera == "" {
		au.Camera = s.camera
	}
	if au.Sequence == 0 {
		au.Sequence = s.seq
	}
	if au.IngestUnixNano == 0 {
		au.IngestUnixNano = now.UnixNano()
	}
	au.CompleteUnixNano = now.UnixNano()
	isVideo := au.Codec < busv1.Codec_CODEC_AAC
	if s.sessionStart.IsZero() {
		s.sessionStart = now
	}
	if !isVideo {
		s.audioCodec, s.audioAt = au.Codec, now
	} else {
		// Set on every video unit: a source may reuse the message of a
		// keyframe for the pictures after it.
		au.AudioKnown = au.Keyframe && now.Sub(s.sessionStart) >= audioSettle
		au.AudioCodec = busv1.Codec_CODEC_UNSPECIFIED
		if au.AudioKnown && now.Sub(s.audioAt) < audioGone {
			au.AudioCodec = s.audioCodec
		}
	}
	var changed *busv1.CameraStatus
	if isVideo {
		s.frames++
		s.bytes += uint64(size)
		s.winFrames++
		s.winBytes += size
		if s.winStart.IsZero() {
			s.winStart = now
		} else if el := now.Sub(s.winStart); el >= rateWindow {
			s.status.Fps = float64(s.winFrames) / el.Seconds()
			s.status.Bitrate = float64(s.winBytes*8) / el.Seconds()
			s.winStart, s.winFrames, s.winBytes = now, 0, 0
		}
		if s.status.State != StateOnline {
			s.status.State = StateOnline
			s.status.SinceUnixNano = now.UnixNano()
			changed = proto.Clone(&s.status).(*busv1.CameraStatus)
		}
	}
	feed, interest := s.feed, s.interest
	s.mu.Unlock()
	if changed != nil && s.onChange != nil {
		s.onChange(changed)
	}
	if !isVideo {
		return bus.Publish(s.nc, s.audioSubject, au)
	}
	if feed == nil {
		return bus.Publish(s.nc, s.videoSubject, au)
	}
	// The hub keeps the buffer (the access unit aliases it): a new one per
	// access unit, as the bus subscription's message was.
	data, err := proto.MarshalOptions{}.MarshalAppend(make([]byte, 0, size+128), au)
	if err != nil {
		return err
	}
	// Fed before published: see hub.KeepLocal.
	if feed(data) && !interest(s.videoSubject) {
		return nil
	}
	return s.nc.Publish(s.videoSubject, data)
}

// FeedLocal hands the camera's video to this process's hub through feed
// (hub.KeepLocal) and publishes it on the bus only while interest (bus.Bus.
// Interest) reports a subscriber; once feed reports false (released) every
// access unit is published again. Call it before the first access unit.
func (s *BusSink) FeedLocal(feed func(data []byte) bool, interest func(subject string) bool) {
	s.mu.Lock()
	s.feed, s.interest = feed, interest
	s.mu.Unlock()
}

// SetState implements Sink.
func (s *BusSink) SetState(state string, err error) {
	s.mu.Lock()
	changed := s.status.State != state
	s.status.State = state
	if err != nil {
		s.status.LastError = err.Error()
		changed = true
	}
	if changed {
		s.status.SinceUnixNano = time.Now().UnixNano()
	}
	if state != StateOnline {
		s.sessionStart = time.Time{}
		s.status.Fps, s.status.Bitrate = 0, 0
		s.winStart, s.winFrames, s.winBytes = time.Time{}, 0, 0
	}
	st := proto.Clone(&s.status).(*busv1.CameraStatus)
	s.mu.Unlock()
	if changed && s.onChange != nil {
		s.onChange(st)
	}
}

// SetTrack implements Sink.
func (s *BusSink) SetTrack(codec busv1.Codec, width, height int) {
	s.mu.Lock()
	s.status.Codec = CodecName(codec)
	if width > 0 && height > 0 {
		s.status.Width, s.status.Height = uint32(width), uint32(height)
	}
	s.mu.Unlock()
}

// Status returns a copy of the current status.
func (s *BusSink) Status() *busv1.CameraStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return proto.Clone(&s.status).(*busv1.CameraStatus)
}

// Totals returns the video frames and bytes written so far.
func (s *BusSink) Totals() (frames, bytes uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.frames, s.bytes
}

// CodecName is the short lower-case name of a codec ("h264").
func CodecName(c busv1.Codec) string {
	switch c {
	case busv1.Codec_CODEC_H264:
		return "h264"
	case busv1.Codec_CODEC_H265:
		return "h265"
	case busv1.Codec_CODEC_VP8:
		return "vp8"
	case busv1.Codec_CODEC_VP9:
		return "vp9"
	case busv1.Codec_CODEC_AV1:
		return "av1"
	case busv1.Codec_CODEC_MJPEG:
		return "mjpeg"
	case busv1.Codec_CODEC_AAC:
		return "aac"
	case busv1.Codec_CODEC_OPUS:
		return "opus"
	case busv1.Codec_CODEC_PCMU:
		return "pcmu"
	case busv1.Codec_CODEC_PCMA:
		return "pcma"
	}
	return ""
}
