package webrtc

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/imageflowcanvas/imageflow/ingest"
)

// PublisherConfig configures the WHIP publish endpoint.
type PublisherConfig struct {
	// API is the shared pion API (UDP mux, codecs, interceptors); required.
	API *webrtc.API
	// Configuration holds the ICE servers given to each peer connection.
	Configuration webrtc.Configuration
	// PLIInterval asks publishers for a keyframe this often; 0 means
	// DefaultPLIInterval, negative disables the periodic request.
	PLIInterval time.Duration
	// ConnectTimeout ends a session that does not connect in time (the
	// client vanished between POST and ICE), which frees the camera for
	// another publisher; 0 means DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// Pending caps sessions waiting to connect (shared with the Engine);
	// nil allows any number.
	Pending *PendingLimits
	Logger  *slog.Logger
}

// Publisher terminates WHIP sessions (RFC 9725): each POSTed offer becomes a
// peer connection whose tracks are written to the camera's sink.
type Publisher struct {
	cfg PublisherConfig

	sessions registry[*pubSession]
}

type pubSession struct {
	id, cam string
	pc      *webrtc.PeerConnection
	rx      *receiver
	release func()
	once    sync.Once
	done    chan struct{}
	// connecting gives back the session's pending slot (idempotent).
	connecting func()
}

// NewPublisher builds the WHIP endpoint logic over a shared API.
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	if cfg.API == nil {
		return nil, fmt.Errorf("webrtc publisher: API is required")
	}
	if cfg.PLIInterval == 0 {
		cfg.PLIInterval = DefaultPLIInterval
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Publisher{cfg: cfg}, nil
}

// Offer answers a WHIP offer for camera cam from client (its IP address,
// for PublisherConfig.Pending). The session writes to sink until it ends
// (DELETE, ICE failure, connect timeout, Close), then calls release exactly
// once; on error release is not called and nothing was started. Errors:
// ErrBadSDP, ErrCodecNotSupported, ErrPendingLimit, ErrClientPendingLimit,
// ErrClosed, or the context's error.
func (p *Publisher) Offer(ctx context.Context, cam, client, offerSDP string, sink ingest.Sink, release func()) (answerSDP, sessionID string, err error) {
	info, err := InspectOffer(offerSDP)
	if err != nil {
		return "", "", err
	}
	if !info.HasVideo {
		return "", "", fmt.Errorf("%w: the offer has no video", ErrCodecNotSupported)
	}
	if _, err := pickVideoCodec(info); err != nil {
		return "", "", fmt.Errorf("%w: the offer has none of H264 (packetization-mode=1), VP8, VP9", ErrCodecNotSupported)
	}
	if p.sessions.isClosed() {
		return "", "", ErrClosed
	}

	connecting, err := p.cfg.Pending.acquire(client)
	if err != nil {
		return "", "", err
	}
	defer answering.begin()()
	pc, err := p.cfg.API.NewPeerConnection(p.cfg.Configuration)
	if err != nil {
		connecting()
		return "", "", fmt.Errorf("webrtc: new peer connection: %w", err)
	}
	s := &pubSession{
		id: NewSessionID(), cam: cam, pc: pc, release: release, done: make(chan struct{}), connecting: connecting,
		rx: &receiver{pc: pc, sink: &lockedSink{sink: sink}, pliInterval: p.cfg.PLIInterval,
			log: p.cfg.Logger.With("camera", cam, "kind", "whip")},
	}
	pc.OnTrack(s.rx.onTrack)
	connected := make(chan struct{})
	var connOnce sync.Once
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		switch st {
		case webrtc.PeerConnectionStateConnected:
			connOnce.Do(func() { close(connected) })
			connecting()
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed, webrtc.PeerConnectionStateDisconnected:
			// Disconnected ends the session too: a WHIP client that lost
			// its network publishes again with a new POST.
			p.endAsync(s, st.String())
		}
	})
	ans, err := answer(ctx, pc, offerSDP, nil, func() error { preferVideoCodecs(pc); return nil })
	if err != nil {
		_ = pc.Close()
		connecting()
		return "", "", err
	}

	if !p.sessions.add(s.id, s, 1, nil) {
		_ = pc.Close()
		connecting()
		return "", "", ErrClosed
	}
	s.rx.sink.setState(ingest.StateConnecting, nil)
	s.rx.log.Info("whip session started", "session", s.id)

	// Watchdog: a client that never connects does not keep the session.
	go func() {
		defer p.sessions.done()
		t := time.NewTimer(p.cfg.ConnectTimeout)
		defer t.Stop()
		select {
		case <-connected:
		case <-s.done:
		case <-t.C:
			p.end(s, "connect timeout")
		}
	}()
	return ans, s.id, nil
}

// Patch applies a trickle-ICE fragment to a session. Errors:
// ErrSessionNotFound, ErrBadSDP, ErrNotSupported (ICE restart).
func (p *Publisher) Patch(id, fragment string) error {
	s := p.get(id)
	if s == nil {
		return ErrSessionNotFound
	}
	return addCandidates(s.pc, fragment)
}

// Delete ends a session; ErrSessionNotFound for an unknown id.
func (p *Publisher) Delete(id string) error {
	s := p.get(id)
	if s == nil {
		return ErrSessionNotFound
	}
	p.end(s, "deleted")
	return nil
}

// Sessions is the number of live WHIP sessions.
func (p *Publisher) Sessions() int { return p.sessions.len() }

// Camera returns the camera of a session, "" when unknown; lets the HTTP
// layer check that a DELETE names a session of the camera in its path.
func (p *Publisher) Camera(id string) string {
	if s := p.get(id); s != nil {
		return s.cam
	}
	return ""
}

// Close ends every session and waits for their goroutines.
func (p *Publisher) Close() {
	all, _ := p.sessions.close()
	for _, s := range all {
		p.end(s, "server closing")
	}
	p.sessions.wait()
}

func (p *Publisher) get(id string) *pubSession {
	s, _ := p.sessions.get(id)
	return s
}

// endAsync ends a session from a pion callback.
func (p *Publisher) endAsync(s *pubSession, why string) {
	p.sessions.async(s.id, func() { p.end(s, why) })
}

func (p *Publisher) end(s *pubSession, why string) {
	s.once.Do(func() {
		p.sessions.remove(s.id, nil)
		close(s.done)
		s.connecting()
		_ = s.pc.Close()
		s.rx.stop()
		s.rx.sink.setState(ingest.StateOffline, nil)
		s.rx.log.Info("whip session ended", "session", s.id, "reason", why, "video_aus", s.rx.videoAUs.Load())
		if s.release != nil {
			s.release()
		}
	})
}
