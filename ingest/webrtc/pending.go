package webrtc

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// Defaults of PendingLimits and of the connect timeouts.
const (
	DefaultMaxPending          = 100
	DefaultMaxPendingPerClient = 10
	// DefaultConnectTimeout is long enough for ICE through a TURN relay
	// and DTLS on a slow link, short enough that an abandoned offer does
	// not hold a WHIP camera's publisher place for long.
	DefaultConnectTimeout = 10 * time.Second
)

var (
	// ErrPendingLimit is returned when the server holds as many unconnected
	// sessions as it allows in total (503: try again shortly).
	ErrPendingLimit = errors.New("too many WebRTC sessions waiting to connect")
	// ErrClientPendingLimit is returned when one client holds as many
	// unconnected sessions as it may (429).
	ErrClientPendingLimit = errors.New("too many WebRTC sessions of this client waiting to connect")
)

// PendingLimits caps the sessions that were answered but have not connected
// yet, in total and per client, across WHIP and WHEP. Such a session costs a
// peer connection and its goroutines while it waits for ICE and DTLS, so a
// client that posts offers and never connects could otherwise pile them up
// until their connect timeout.
type PendingLimits struct {
	max, perClient int

	mu       sync.Mutex
	total    int
	byClient map[string]int
}

// NewPendingLimits allows max unconnected sessions in total and perClient
// per client; 0 means DefaultMaxPending and DefaultMaxPendingPerClient.
func NewPendingLimits(max, perClient int) *PendingLimits {
	if max <= 0 {
		max = DefaultMaxPending
	}
	if perClient <= 0 {
		perClient = DefaultMaxPendingPerClient
	}
	return &PendingLimits{max: max, perClient: perClient, byClient: make(map[string]int)}
}

// acquire takes a slot for client; done gives it back and may be called any
// number of times. A nil PendingLimits allows everything.
func (l *PendingLimits) acquire(client string) (done func(), err error) {
	if l == nil {
		return func() {}, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byClient[client] >= l.perClient {
		return nil, fmt.Errorf("%w (%d)", ErrClientPendingLimit, l.perClient)
	}
	if l.total >= l.max {
		return nil, fmt.Errorf("%w (%d)", ErrPendingLimit, l.max)
	}
	l.total++
	l.byClient[client]++
	var once sync.Once
	return func() { once.Do(func() { l.release(client) }) }, nil
}

func (l *PendingLimits) release(client string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.byClient[client]--; l.byClient[client] <= 0 {
		delete(l.byClient, client)
	}
}

// Pending is the number of sessions waiting to connect.
func (l *PendingLimits) Pending() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}
