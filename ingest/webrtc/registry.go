package webrtc

import "sync"

// registry holds the live sessions of one kind (WHEP viewers, WHIP
// publishers) by id: it refuses new ones once closed and counts the
// goroutines that must end before the owner's Close returns.
type registry[S any] struct {
	mu     sync.Mutex
	byID   map[string]S
	closed bool
	wg     sync.WaitGroup
}

// add registers s and counts goroutines more for wait (each must call
// done); also runs under the registry's lock. false after close.
func (r *registry[S]) add(id string, s S, goroutines int, also func()) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	if r.byID == nil {
		r.byID = make(map[string]S)
	}
	r.byID[id] = s
	if also != nil {
		also()
	}
	r.wg.Add(goroutines)
	return true
}

// done ends one goroutine counted by add or async.
func (r *registry[S]) done() { r.wg.Done() }

func (r *registry[S]) get(id string) (S, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.byID[id]
	return s, ok
}

// remove forgets a session; also runs under the registry's lock.
func (r *registry[S]) remove(id string, also func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.byID, id)
	if also != nil {
		also()
	}
}

// locked runs fn with the sessions under the registry's lock.
func (r *registry[S]) locked(fn func(map[string]S)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fn(r.byID)
}

func (r *registry[S]) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byID)
}

func (r *registry[S]) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// async runs fn in a goroutine wait waits for, if session id is still
// registered: pion callbacks end sessions this way, since they must not
// wait for their own peer connection to close.
func (r *registry[S]) async(id string, fn func()) {
	r.mu.Lock()
	if _, ok := r.byID[id]; !ok {
		r.mu.Unlock()
		return
	}
	r.wg.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.wg.Done()
		fn()
	}()
}

// close refuses new sessions and returns the live ones for the owner to
// end; first is false when it was closed already.
func (r *registry[S]) close() (all []S, first bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, false
	}
	r.closed = true
	for _, s := range r.byID {
		all = append(all, s)
	}
	return all, true
}

// wait waits for the goroutines counted by add and async.
func (r *registry[S]) wait() { r.wg.Wait() }
