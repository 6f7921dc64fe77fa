package webrtc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/imageflowcanvas/imageflow/ingest"
	"github.com/imageflowcanvas/imageflow/redact"
)

// WHEPSourceConfig configures a camera pulled from a WHEP server.
type WHEPSourceConfig struct {
	// URL is whep://host[:port]/path (plain HTTP) or wheps://… (HTTPS). A
	// bearer token may ride in ?token= or the user-info; it is sent as
	// "Authorization: Bearer" only to this URL's origin (scheme, host and
	// port), never on a redirect or to a session URL elsewhere, and never
	// logged.
	URL string
	// Camera names the camera in logs.
	Camera string
	// Sink receives the access units and state changes; required.
	Sink ingest.Sink
	// API is the shared pion API; required.
	API *webrtc.API
	// Configuration holds the ICE servers.
	Configuration webrtc.Configuration
	// HTTPClient sends the WHEP requests; http.DefaultClient when nil. Its
	// redirect policy is wrapped so the token stays with its origin; the
	// server passes one whose dialer applies its host policy.
	HTTPClient *http.Client
	// NoMediaTimeout reconnects when no video arrives for this long; 0 means 3 s.
	NoMediaTimeout time.Duration
	// MaxBackoff caps the wait between attempts; 0 means 2 s.
	MaxBackoff time.Duration
	// PLIInterval as in PublisherConfig.
	PLIInterval time.Duration
	Logger      *slog.Logger
}

// WHEPSource is an ingest.Source that plays a remote WHEP endpoint.
type WHEPSource struct {
	cfg      WHEPSourceConfig
	endpoint string // http(s) URL without credentials
	origin   string // scheme://host:port the token may go to
	token    string
	redacted string // for logs and errors
	client   *http.Client
	log      *slog.Logger
}

// ErrBadURL is returned by NewWHEPSource for a URL it cannot use.
var ErrBadURL = errors.New("invalid WHEP URL")

// NewWHEPSource validates the configuration and builds the source.
func NewWHEPSource(cfg WHEPSourceConfig) (*WHEPSource, error) {
	if cfg.Sink == nil || cfg.API == nil {
		return nil, fmt.Errorf("whep source: Sink and API are required")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		// url's error repeats the URL, token included: say only what failed.
		return nil, fmt.Errorf("%w: does not parse", ErrBadURL)
	}
	switch strings.ToLower(u.Scheme) {
	case "whep":
		u.Scheme = "http"
	case "wheps":
		u.Scheme = "https"
	default:
		return nil, fmt.Errorf("%w: scheme %q (want whep or wheps)", ErrBadURL, u.Scheme)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%w: no host", ErrBadURL)
	}
	s := &WHEPSource{cfg: cfg}
	q := u.Query()
	if t := q.Get("token"); t != "" {
		s.token = t
		q.Del("token")
		u.RawQuery = q.Encode()
	}
	if u.User != nil {
		if pw, ok := u.User.Password(); ok && s.token == "" {
			s.token = pw
		} else if s.token == "" {
			s.token = u.User.Username()
		}
		u.User = nil
	}
	s.endpoint = u.String()
	s.origin = originOf(u)
	s.redacted = redact.URL(cfg.URL)
	if s.cfg.HTTPClient == nil {
		s.cfg.HTTPClient = http.DefaultClient
	}
	client := *s.cfg.HTTPClient
	client.CheckRedirect = s.checkRedirect
	s.client = &client
	if s.cfg.NoMediaTimeout <= 0 {
		s.cfg.NoMediaTimeout = 3 * time.Second
	}
	if s.cfg.MaxBackoff <= 0 {
		s.cfg.MaxBackoff = 2 * time.Second
	}
	if s.cfg.PLIInterval == 0 {
		s.cfg.PLIInterval = DefaultPLIInterval
	}
	if s.cfg.Logger == nil {
		s.cfg.Logger = slog.Default()
	}
	s.log = s.cfg.Logger.With("camera", cfg.Camera, "kind", "whep-pull", "url", s.redacted)
	return s, nil
}

// Run plays the source until ctx ends, reconnecting with backoff (capped at
// MaxBackoff) when the connection fails or media stops.
func (s *WHEPSource) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for {
		s.cfg.Sink.SetState(ingest.StateConnecting, nil)
		gotMedia, err := s.session(ctx)
		if ctx.Err() != nil {
			s.cfg.Sink.SetState(ingest.StateOffline, nil)
			return nil
		}
		if gotMedia {
			backoff = 100 * time.Millisecond
		}
		s.log.Info("whep pull: session ended, reconnecting", "err", err, "in", backoff)
		s.cfg.Sink.SetState(ingest.StateConnecting, err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			s.cfg.Sink.SetState(ingest.StateOffline, nil)
			return nil
		case <-t.C:
		}
		backoff = min(backoff*2, s.cfg.MaxBackoff)
	}
}

var (
	errNoMedia      = errors.New("no media")
	errDisconnected = errors.New("connection lost")
)

// session runs one WHEP session; gotMedia tells whether video flowed.
func (s *WHEPSource) session(ctx context.Context) (gotMedia bool, err error) {
	pc, err := s.cfg.API.NewPeerConnection(s.cfg.Configuration)
	if err != nil {
		return false, err
	}
	rx := &receiver{pc: pc, sink: &lockedSink{sink: s.cfg.Sink}, log: s.log, pliInterval: s.cfg.PLIInterval}
	defer func() {
		_ = pc.Close()
		rx.stop()
	}()
	pc.OnTrack(rx.onTrack)
	ended := make(chan struct{})
	var endOnce sync.Once
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		if st == webrtc.PeerConnectionStateFailed || st == webrtc.PeerConnectionStateDisconnected || st == webrtc.PeerConnectionStateClosed {
			endOnce.Do(func() { close(ended) })
		}
	})
	recv := webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, recv); err != nil {
		return false, err
	}
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio, recv); err != nil {
		return false, err
	}
	preferVideoCodecs(pc)
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return false, err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		return false, err
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return false, ctx.Err()
	}

	ans, location, err := s.post(ctx, pc.LocalDescription().SDP)
	if err != nil {
		return false, err
	}
	if location != "" {
		defer s.delete(location)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: ans}); err != nil {
		return false, errors.Join(ErrBadSDP, err)
	}

	start := time.Now()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return rx.videoAUs.Load() > 0, ctx.Err()
		case <-ended:
			return rx.videoAUs.Load() > 0, errDisconnected
		case now := <-tick.C:
			last := start
			if ns := rx.lastMedia.Load(); ns > 0 {
				last = time.Unix(0, ns)
			}
			if now.Sub(last) > s.cfg.NoMediaTimeout {
				return rx.videoAUs.Load() > 0, errNoMedia
			}
		}
	}
}

// post sends the offer (RFC 9725 §4.2) and returns the answer and the
// absolute session URL.
func (s *WHEPSource) post(ctx context.Context, offer string) (answer, location string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.endpoint, strings.NewReader(offer))
	if err != nil {
		return "", "", fmt.Errorf("%w: %s", ErrBadURL, s.redacted)
	}
	req.Header.Set("Content-Type", "application/sdp")
	req.Header.Set("Accept", "application/sdp")
	s.auth(req)
	resp, err := s.client.Do(req)
	if err != nil {
		return "", "", fmt.Errorf("whep POST %s: %w", s.redacted, redact.Error(stripURL(err), s.cfg.URL))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxSDPSize+1))
	if err != nil {
		return "", "", fmt.Errorf("whep POST %s: %w", s.redacted, redact.Error(stripURL(err), s.cfg.URL))
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("whep POST %s: status %d: %s", s.redacted, resp.StatusCode, truncate(string(bytes.TrimSpace(body))))
	}
	if loc := resp.Header.Get("Location"); loc != "" {
		if u, err := resp.Request.URL.Parse(loc); err == nil {
			location = u.String()
		}
	}
	return string(body), location, nil
}

// delete ends the remote session (RFC 9725 §4.2); best effort, since the
// server times sessions out anyway.
func (s *WHEPSource) delete(location string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, location, nil)
	if err != nil {
		return
	}
	s.auth(req)
	if resp, err := s.client.Do(req); err == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
	}
}

// auth adds the token to a request for the configured origin only: a
// session URL (Location) on another host does not get it.
func (s *WHEPSource) auth(req *http.Request) {
	if s.token != "" && originOf(req.URL) == s.origin {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
}

// errCrossOriginRedirect refuses a redirect that would carry the token to
// another origin.
var errCrossOriginRedirect = errors.New("redirect to another origin refused (the token is only sent to the configured one)")

// checkRedirect keeps the token with its origin. net/http already drops
// Authorization for another host name, but not for another port or scheme
// of the same name, so the check is by origin: with a token, a cross-origin
// redirect is refused; without one it is followed as usual.
func (s *WHEPSource) checkRedirect(req *http.Request, via []*http.Request) error {
	if originOf(req.URL) != s.origin {
		if s.token != "" {
			return errCrossOriginRedirect
		}
		req.Header.Del("Authorization")
	}
	if s.cfg.HTTPClient.CheckRedirect != nil {
		return s.cfg.HTTPClient.CheckRedirect(req, via)
	}
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	return nil
}

// originOf returns scheme://host:port with the default port filled in, the
// unit a browser scopes credentials to.
func originOf(u *url.URL) string {
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	if port == "" {
		switch scheme {
		case "https":
			port = "443"
		default:
			port = "80"
		}
	}
	return scheme + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// stripURL drops the URL from a *url.Error, which would print the query.
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
