package rtsp

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// batchMaxPending bounds what a connection buffers ahead of the socket: a
// 4K keyframe fits; a reader that stops reading blocks its gortsplib write
// queue, which then drops and counts as before.
const batchMaxPending = 4 << 20

// batchReadSize is the most one read(2) takes from a connection.
const batchReadSize = 64 << 10

// Reasons writeMedia refuses an access unit; the reader resumes at a
// keyframe.
var (
	// errMediaHeld: the session is not playing yet (its PLAY response has
	// not been queued) or has ended.
	errMediaHeld = errors.New("rtsp: media not flowing on this connection")
	// errBatchFull: the reader is batchMaxPending behind.
	errBatchFull = errors.New("rtsp: reader write buffer full")
)

// States of the media written by the egress straight onto a connection
// (writeMedia).
const (
	// mediaOff refuses media: no session plays on the connection.
	mediaOff = iota
	// mediaArmed refuses media until gortsplib's next write, the PLAY
	// response, which turns it on: media never precedes that response.
	mediaArmed
	// mediaOn takes media.
	mediaOn
)

// batchListener hands out batchConns.
type batchListener struct {
	net.Listener
	// requestTimeout: see batchConn.requestTimeout.
	requestTimeout time.Duration
	// writeTimeout: see batchConn.writeTimeout.
	writeTimeout time.Duration
}

func (l batchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	b := newBatchConn(c)
	b.requestTimeout = l.requestTimeout
	b.writeTimeout = l.writeTimeout
	return b, nil
}

// batchConn coalesces writes. gortsplib writes every interleaved RTP packet
// (~1.4 kB) with its own write(2): for a relay that is one syscall per
// packet per reader, most of the server's CPU. Write here only appends to a
// buffer; a flusher goroutine writes whatever accumulated while its
// previous write ran, so a burst (every packet of an access unit, queued
// back to back) leaves in a few syscalls and a lone packet still leaves at
// once. Write deadlines pass through to the socket the flusher writes on;
// a write error is returned by the next Write.
//
// The egress also writes a playing reader's video here itself (writeMedia:
// a whole access unit of interleaved frames in one call) instead of through
// gortsplib's per-packet queue.
type batchConn struct {
	net.Conn

	// Reads: gortsplib reads through a 4 kB bufio.Reader, one syscall per
	// 4 kB of a publisher's stream; rbuf takes what the socket has, up to
	// 64 kB, in one. Read is only ever called by gortsplib's one reader
	// goroutine per connection.
	rbuf       []byte
	rpos, rend int

	// requestTimeout bounds the wait for a whole request while the
	// connection carries no media (gortsplib lifts its read deadline
	// between requests, so a silent or trickling client would hold the
	// connection forever): the next request must be complete within it
	// after the previous response, or after connecting. 0 disables it.
	requestTimeout time.Duration
	// streaming is set while a session plays or records on the
	// connection: a reader sends nothing for long stretches, and
	// gortsplib times out publishers itself.
	streaming atomic.Bool
	// requestDeadline (unix ns, 0 when unset) is when the pending request
	// must be complete; a response clears it.
	requestDeadline atomic.Int64
	// writeTimeout, when set, bounds each socket write of the flusher
	// (media written by writeMedia comes with no deadline of gortsplib's).
	writeTimeout time.Duration

	mu      sync.Mutex
	cond    sync.Cond // pending grew (flusher) or shrank (writers), or closed
	pending []byte
	err     error
	closed  bool
	// media is mediaOff, mediaArmed or mediaOn (writeMedia).
	media int

	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

func newBatchConn(c net.Conn) *batchConn {
	b := &batchConn{Conn: c, done: make(chan struct{})}
	b.cond.L = &b.mu
	go b.flush()
	return b
}

// Read serves p from the read buffer, refilling it with one read(2).
func (b *batchConn) Read(p []byte) (int, error) {
	if b.rpos == b.rend {
		if len(p) >= batchReadSize {
			b.armRequestDeadline()
			return b.Conn.Read(p)
		}
		if b.rbuf == nil {
			b.rbuf = make([]byte, batchReadSize)
		}
		b.armRequestDeadline()
		n, err := b.Conn.Read(b.rbuf)
		b.rpos, b.rend = 0, n
		if n == 0 {
			return 0, err
		}
	}
	n := copy(p, b.rbuf[b.rpos:b.rend])
	b.rpos += n
	return n, nil
}

// armRequestDeadline sets the socket's read deadline to the pending
// request's deadline, starting one if none runs, unless media flows.
func (b *batchConn) armRequestDeadline() {
	if b.requestTimeout <= 0 || b.streaming.Load() {
		return
	}
	dl := b.requestDeadline.Load()
	if dl == 0 {
		dl = time.Now().Add(b.requestTimeout).UnixNano()
		b.requestDeadline.Store(dl)
	}
	_ = b.Conn.SetReadDeadline(time.Unix(0, dl))
}

// setStreaming switches the request deadline off while a session plays or
// records, and back on after.
func (b *batchConn) setStreaming(on bool) {
	b.requestDeadline.Store(0)
	b.streaming.Store(on)
}

// Write queues p; it blocks only while batchMaxPending bytes wait. A write
// is a response (or media): the next request gets a fresh deadline.
func (b *batchConn) Write(p []byte) (int, error) {
	if b.requestTimeout > 0 {
		b.requestDeadline.Store(0)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.err == nil && !b.closed && len(b.pending) > 0 && len(b.pending)+len(p) > batchMaxPending {
		b.cond.Wait()
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.closed {
		return 0, net.ErrClosed
	}
	b.pending = append(b.pending, p...)
	if b.media == mediaArmed {
		// gortsplib writes nothing between OnPlay and the PLAY response.
		b.media = mediaOn
	}
	b.cond.Broadcast()
	return len(p), nil
}

// armMedia lets writeMedia through once gortsplib's next write (the PLAY
// response being prepared) is queued.
func (b *batchConn) armMedia() {
	b.mu.Lock()
	b.media = mediaArmed
	b.mu.Unlock()
}

// stopMedia refuses writeMedia from now on (the session ended).
func (b *batchConn) stopMedia() {
	b.mu.Lock()
	b.media = mediaOff
	b.mu.Unlock()
}

// writeMedia queues p, whole interleaved frames, without ever blocking:
// one camera's pump writes to all its readers, so a slow one must not hold
// up the others. It fails with errMediaHeld before the PLAY response or
// after the session, errBatchFull when the reader is batchMaxPending
// behind, or the connection's write error.
func (b *batchConn) writeMedia(p []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.err != nil:
		return b.err
	case b.closed:
		return net.ErrClosed
	case b.media != mediaOn:
		return errMediaHeld
	case len(b.pending) > 0 && len(b.pending)+len(p) > batchMaxPending:
		return errBatchFull
	}
	b.pending = append(b.pending, p...)
	b.cond.Broadcast()
	return nil
}

func (b *batchConn) flush() {
	defer close(b.done)
	var out []byte
	b.mu.Lock()
	for {
		for len(b.pending) == 0 && !b.closed && b.err == nil {
			b.cond.Wait()
		}
		if len(b.pending) == 0 || b.err != nil {
			b.mu.Unlock()
			return
		}
		// Swap buffers: writers fill the other one during the syscall.
		out, b.pending = b.pending, out[:0]
		if b.writeTimeout > 0 && !b.closed {
			// Under mu: Close's shorter deadline, set under mu too, is
			// never overwritten.
			_ = b.Conn.SetWriteDeadline(time.Now().Add(b.writeTimeout))
		}
		b.mu.Unlock()
		_, err := b.Conn.Write(out)
		if cap(out) > 1<<20 {
			// Keep only keyframe-sized buffers across a rare huge burst.
			out = nil
		}
		b.mu.Lock()
		if err != nil {
			b.err = err
		}
		b.cond.Broadcast()
	}
}

// Close sends what is queued (for at most a second) and closes the socket;
// a second call returns the first one's result.
func (b *batchConn) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.closed = true
		b.cond.Broadcast()
		_ = b.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		b.mu.Unlock()
		<-b.done
		b.closeErr = b.Conn.Close()
	})
	return b.closeErr
}
