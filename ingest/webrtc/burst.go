package webrtc

import (
	"context"
	"runtime/debug"
	"sync"
	"time"
)

// burstGCPercent is the garbage collector's target (GOGC) while answers are
// being made. An answer allocates ~160 kB in pion and the server's live
// heap is a few MB, so at the default 100 fifty viewers joining at once
// started three or four collections during their answers: marking and its
// assists took a third of the server's CPU in those tens of milliseconds,
// and the later answers waited for it. At 400 the burst's garbage fits
// under the goal; the collection comes once the answers are out, and the
// extra heap is the burst's garbage only, until then.
const burstGCPercent = 400

// answering counts the answers (WHEP and WHIP) being made in the process,
// whose garbage collector target is process-wide too.
var answering answerBurst

// answerBurst raises the garbage collector's target while at least one
// answer is being made and restores it after the last.
type answerBurst struct {
	mu sync.Mutex
	n  int
	// restore is the target before the first answer of the burst; raised
	// says it was changed (it was lower than burstGCPercent and on).
	restore int
	raised  bool
	// quiet is closed when the burst's last answer is out.
	quiet chan struct{}
}

// begin counts an answer in; end counts it out and may be called any number
// of times.
func (b *answerBurst) begin() (end func()) {
	b.mu.Lock()
	b.n++
	if b.n == 1 {
		b.quiet = make(chan struct{})
		prev := debug.SetGCPercent(burstGCPercent)
		if prev < 0 || prev >= burstGCPercent {
			// GC off, or already at least as lax: leave it.
			debug.SetGCPercent(prev)
		} else {
			b.restore, b.raised = prev, true
		}
	}
	b.mu.Unlock()
	var once sync.Once
	return func() { once.Do(b.end) }
}

func (b *answerBurst) end() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.n--; b.n > 0 {
		return
	}
	close(b.quiet)
	if b.raised {
		debug.SetGCPercent(b.restore)
		b.raised = false
	}
}

// waitQuiet returns once no answer is being made, or after max.
func (b *answerBurst) waitQuiet(max time.Duration) {
	b.mu.Lock()
	if b.n == 0 {
		b.mu.Unlock()
		return
	}
	quiet := b.quiet
	b.mu.Unlock()
	t := time.NewTimer(max)
	defer t.Stop()
	select {
	case <-quiet:
	case <-t.C:
	}
}

// maxHandshakeHold bounds how long a DTLS handshake waits for a burst's
// answers: answers first, but a burst that never ends must not keep the
// sessions answered from connecting.
const maxHandshakeHold = 150 * time.Millisecond

// holdHandshake is pion's DTLS connect-context maker for the server's
// sessions: it is called just before the handshake starts, and lets the
// answers being made go first. A handshake costs the server about as much
// CPU as an answer (ECDHE, a signature, checking the peer's); with fifty
// viewers joining at once on two cores, the first viewers' handshakes, and
// the catch-up video that follows them, ran beside the later answers and
// made those wait. The handshake itself has no deadline, as with pion's
// default: ICE failure or the connect timeout ends a session that stalls.
func holdHandshake() (context.Context, func()) {
	answering.waitQuiet(maxHandshakeHold)
	return context.Background(), nil
}

// active is the number of answers being made.
func (b *answerBurst) active() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}
