package webrtc

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"
)

// certificateLifetime is how long one DTLS certificate serves new viewers.
// pion's own certificates are valid for a month; a new one well before then
// keeps every session's certificate in date.
const certificateLifetime = 24 * time.Hour

// certCache hands every viewer the same DTLS certificate, made once a day:
// a new ECDSA key and self-signed certificate per peer connection was 40% of
// the CPU of a WHEP answer. Peers check the certificate's fingerprint from
// the SDP, not who else uses it.
type certCache struct {
	mu    sync.Mutex
	cert  []webrtc.Certificate
	since time.Time
}

// get returns the current certificate, or nil when one cannot be made (pion
// then makes its own per connection).
func (c *certCache) get() []webrtc.Certificate {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cert != nil && time.Since(c.since) < certificateLifetime {
		return c.cert
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil
	}
	cert, err := webrtc.GenerateCertificate(key)
	if err != nil {
		return nil
	}
	c.cert, c.since = []webrtc.Certificate{*cert}, time.Now()
	return c.cert
}
