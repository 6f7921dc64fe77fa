package webrtc

import (
	"context"
	"runtime/debug"
	"sync"
	"time"
)

// burstGCPercent is the garbage collector's target (GOGC) during a burst of
// answers. An answer allocates ~160 kB in pion and the server's live heap
// is a few MB, so at the default 100 fifty viewers joining at once started
// three or four collections during their answers: marking and its assists
// took a third of the server's CPU in those tens of milliseconds, and the
// later answers waited for it. At 400 the burst's garbage fits under the
// goal; the collection comes once the answers are out, and the extra heap
// is the burst's garbage only, until then.
const burstGCPercent = 400

// burstSettle is how long a burst outlives its last answer. Under load the
// HTTP server accepts a burst's connections a few at a time, so the answers
// in progress can drop to none for a moment while more requests wait to be
// read; a burst that ended in every such gap would let the handshakes it
// holds back start between answers.
const burstSettle = 25 * time.Millisecond

// burstGCTail is how long the garbage collector's target stays raised after
// a burst of more than one answer: the burst's viewers connect then, and
// the collection its garbage was spared would otherwise run beside their
// handshakes and first video.
const burstGCTail = 500 * time.Millisecond

// maxHandshakeHold bounds how long a DTLS handshake waits for a burst of
// answers to end: answers first, but a burst that goes on and on must not
// keep the sessions already answered from connecting.
const maxHandshakeHold = 150 * time.Millisecond

// answering tracks the answers (WHEP and WHIP) being made in the process,
// whose garbage collector target is process-wide too.
var answering answerBurst

// answerBurst tracks a burst of answers: from the first answer begun until
// burstSettle after the last one ended. During a burst, and burstGCTail
// after one of more than one answer, the garbage collector's target is
// raised; DTLS handshakes wait for the burst's end (holdHandshake).
type answerBurst struct {
	mu sync.Mutex
	// n is the answers in progress, begun those begun in this burst.
	n, begun int
	// quiet is closed when the burst ends; nil between bursts.
	quiet chan struct{}
	// settle ends the burst burstSettle after its last answer; settleGen
	// tells a stale timer (an answer began since) from the current one.
	settle    *time.Timer
	settleGen uint64
	// restore is the target before the burst; raised says it was changed
	// (it was on and lower than burstGCPercent).
	restore int
	raised  bool
}

// begin counts an answer in; end counts it out and may be called any number
// of times.
func (b *answerBurst) begin() (end func()) {
	b.mu.Lock()
	b.n++
	b.begun++
	b.settleGen++ // a pending settle timer is stale now
	if b.quiet == nil {
		b.quiet = make(chan struct{})
		b.begun = 1
	}
	if !b.raised {
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
	gen := b.settleGen
	if b.settle != nil {
		b.settle.Stop()
	}
	b.settle = time.AfterFunc(burstSettle, func() { b.finish(gen) })
}

// finish ends the burst unless an answer began since the timer was set.
func (b *answerBurst) finish(gen uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if gen != b.settleGen || b.n > 0 || b.quiet == nil {
		return
	}
	if b.begun > 1 {
		time.AfterFunc(burstGCTail, func() { b.lowerGC(gen) })
	} else {
		b.restoreGC()
	}
	close(b.quiet)
	b.quiet = nil
}

// lowerGC restores the garbage collector's target unless an answer began
// since the burst ended.
func (b *answerBurst) lowerGC(gen uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if gen == b.settleGen {
		b.restoreGC()
	}
}

// restoreGC puts back the target from before the burst; b.mu is held.
func (b *answerBurst) restoreGC() {
	if b.raised {
		debug.SetGCPercent(b.restore)
		b.raised = false
	}
}

// waitQuiet returns once no burst is going on, or after max. A lone
// answer's settle time is no burst: a single viewer's handshake, which may
// start within it, does not wait for it.
func (b *answerBurst) waitQuiet(max time.Duration) {
	b.mu.Lock()
	quiet := b.quiet
	lone := b.n == 0 && b.begun <= 1
	b.mu.Unlock()
	if quiet == nil || lone {
		return
	}
	t := time.NewTimer(max)
	defer t.Stop()
	select {
	case <-quiet:
	case <-t.C:
	}
}

// InBurst reports whether a burst of answers, or the garbage collector's
// raised target after one, is going on in this process: a good moment for
// nothing else to force a collection (see memtrim.GiveBackAfterBursts).
func InBurst() bool {
	answering.mu.Lock()
	defer answering.mu.Unlock()
	return answering.quiet != nil || answering.raised
}

// holdHandshake is pion's DTLS connect-context maker for the server's
// sessions: it is called just before a handshake starts, and lets a burst
// of answers go first. A handshake costs the server about as much CPU as an
// answer (ECDHE, a signature, checking the peer's); with fifty viewers
// joining at once on two cores, the first viewers' handshakes, and the
// catch-up video that follows them, ran beside the later answers and made
// those wait. The handshake itself has no deadline, as with pion's default:
// ICE failure or the connect timeout ends a session that stalls.
func holdHandshake() (context.Context, func()) {
	answering.waitQuiet(maxHandshakeHold)
	return context.Background(), func() {}
}
