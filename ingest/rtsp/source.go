package rtsp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/pion/rtp"

	"github.com/imageflowcanvas/imageflow/ingest"
	"github.com/imageflowcanvas/imageflow/redact"
)

// Transports accepted in SourceConfig.Transport.
const (
	TransportAuto = "auto" // UDP first, TCP when no UDP packet arrives
	TransportTCP  = "tcp"
	TransportUDP  = "udp"
)

// Retry and liveness timing of a pulled camera.
const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 2 * time.Second
	// readTimeout is how long a camera may send nothing (and answer nothing)
	// before it counts as dead and is reconnected.
	readTimeout = 3 * time.Second
)

// SourceConfig configures a pulled RTSP camera.
type SourceConfig struct {
	// Camera is the camera id (for logs; the sink already knows it).
	Camera string
	// URL is rtsp:// or rtsps://, optionally with user:password@ (basic and
	// digest are answered from it). It is never logged unredacted.
	URL string
	// DialContext opens the TCP connections to the camera (redirects
	// included); the server passes its host policy's dialer so denied
	// addresses are refused after DNS resolution. nil dials directly.
	DialContext func(ctx context.Context, network, address string) (net.Conn, error)
	// Sink receives access units and state.
	Sink ingest.Sink
	// Logger receives the source's log lines; slog.Default() when nil.
	Logger *slog.Logger
	// Transport is "auto" (default), "tcp" or "udp".
	Transport string
}

// source pulls one camera.
type source struct {
	cfg        SourceConfig
	url        *base.URL
	tr         *gortsplib.Transport
	log        *slog.Logger
	lost       rateLog
	decodeErrs rateLog
}

// NewSource builds a pull source; configuration errors are reported by Run
// (through the sink state and the returned error) so the constructor fits
// the ingest dispatcher's signature.
func NewSource(cfg SourceConfig) ingest.Source {
	return &source{cfg: cfg}
}

func (s *source) init() error {
	if s.cfg.Sink == nil {
		return fmt.Errorf("%w: Sink is nil", ErrBadConfig)
	}
	s.log = s.cfg.Logger
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("camera", s.cfg.Camera, "url", redact.URL(s.cfg.URL))
	s.lost = rateLog{log: s.log, msg: "rtp packets lost"}
	s.decodeErrs = rateLog{log: s.log, msg: "rtp decode errors"}
	u, err := base.ParseURL(s.cfg.URL)
	if err != nil {
		// The parse error quotes the URL, password included: leave it out.
		return fmt.Errorf("%w: URL %s does not parse", ErrBadConfig, redact.URL(s.cfg.URL))
	}
	if u.Scheme != "rtsp" && u.Scheme != "rtsps" {
		return fmt.Errorf("%w: URL scheme %q (want rtsp or rtsps)", ErrBadConfig, u.Scheme)
	}
	s.url = u
	switch s.cfg.Transport {
	case "", TransportAuto:
	case TransportTCP:
		v := gortsplib.TransportTCP
		s.tr = &v
	case TransportUDP:
		v := gortsplib.TransportUDP
		s.tr = &v
	default:
		return fmt.Errorf("%w: Transport %q (want auto, tcp or udp)", ErrBadConfig, s.cfg.Transport)
	}
	return nil
}

// Run pulls the camera until ctx ends, reconnecting a lost or dead camera
// with exponential backoff from 100 ms capped at 2 s.
func (s *source) Run(ctx context.Context) error {
	if err := s.init(); err != nil {
		if s.cfg.Sink != nil {
			s.cfg.Sink.SetState(ingest.StateOffline, err)
		}
		return err
	}
	backoff := backoffMin
	failures := 0
	for {
		s.cfg.Sink.SetState(ingest.StateConnecting, nil)
		got, err := s.session(ctx)
		if ctx.Err() != nil {
			s.cfg.Sink.SetState(ingest.StateOffline, nil)
			return nil
		}
		err = redact.Error(err, s.cfg.URL)
		s.cfg.Sink.SetState(ingest.StateOffline, err)
		if got {
			// The camera worked: a blip reconnects fast again.
			backoff, failures = backoffMin, 0
		}
		failures++
		// One warning per outage; the retries of a camera that stays down
		// go to debug.
		if failures == 1 {
			s.log.Warn("rtsp camera lost, retrying", "err", err, "in", backoff)
		} else {
			s.log.Debug("rtsp camera still down", "err", err, "in", backoff, "attempt", failures)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(backoff*2, backoffMax)
	}
}

// session runs one connection; got reports whether any access unit arrived.
func (s *source) session(ctx context.Context) (got bool, err error) {
	c := &gortsplib.Client{
		Scheme:       s.url.Scheme,
		Host:         s.url.Host,
		ReadTimeout:  readTimeout,
		WriteTimeout: readTimeout,
		Transport:    s.tr,
		DialContext:  s.cfg.DialContext,
		OnTransportSwitch: func(err error) {
			s.log.Info("rtsp transport switch", "why", redact.Error(err, s.cfg.URL))
		},
		OnPacketsLost: func(n uint64) { s.lost.add(n) },
		OnDecodeError: func(err error) { s.decodeErrs.add(1, "err", redact.Error(err, s.cfg.URL)) },
	}
	if err := c.Start2(); err != nil {
		return false, err
	}
	// Close the client when ctx ends, even in the middle of a request; the
	// watcher is waited for before returning.
	stop, watched := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-ctx.Done():
			c.Close()
		case <-stop:
		}
	}()
	var vt *videoTrack
	defer func() {
		close(stop)
		<-watched
		c.Close()
		if vt != nil {
			got = vt.aus.Load() > 0
		}
	}()

	desc, _, err := c.Describe(s.url)
	if err != nil {
		return false, err
	}
	vmedia, vforma := findVideo(desc)
	if vmedia == nil {
		return false, ErrNoVideo
	}
	vt, err = newVideoTrack(vforma, s.cfg.Sink, s.log)
	if err != nil {
		return false, err
	}
	if _, err := c.Setup(desc.BaseURL, vmedia, 0, 0); err != nil {
		return false, err
	}
	c.OnPacketRTP(vmedia, vforma, vt.writePacket)
	s.setupAudio(c, desc, vmedia)

	if _, err := c.Play(nil); err != nil {
		return false, err
	}
	s.log.Info("rtsp camera playing", "codec", vforma.Codec(), "transport", transportName(c))
	return false, c.Wait()
}

// setupAudio adds the first audio track the bus has a codec for; a failure
// only loses the audio.
func (s *source) setupAudio(c *gortsplib.Client, desc *description.Session, vmedia *description.Media) {
	for _, m := range desc.Medias {
		if m == vmedia || m.Type != description.MediaTypeAudio {
			continue
		}
		for _, f := range m.Formats {
			at := newAudioTrack(f, s.cfg.Sink)
			if at == nil {
				continue
			}
			if _, err := c.Setup(desc.BaseURL, m, 0, 0); err != nil {
				s.log.Warn("rtsp audio setup", "err", redact.Error(err, s.cfg.URL))
				return
			}
			c.OnPacketRTP(m, f, func(pkt *rtp.Packet) { at.writePacket(pkt) })
			return
		}
	}
}

func transportName(c *gortsplib.Client) string {
	if t := c.Transport; t != nil {
		return t.String()
	}
	return TransportAuto
}
