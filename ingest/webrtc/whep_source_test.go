package webrtc

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
)

// whepServer is a WHEP server made with pion that plays the clip to every
// session; down makes it refuse and drop sessions, like a restart.
type whepServer struct {
	t     *testing.T
	api   *webrtc.API
	clip  [][][]byte
	token string

	mu       sync.Mutex
	sessions map[string]*webrtc.PeerConnection
	down     bool
	posts    atomic.Int32
	deletes  atomic.Int32
	auth     atomic.Value
	wg       sync.WaitGroup
	stop     chan struct{}
}

func (s *whepServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.auth.Store(r.Header.Get("Authorization"))
	if r.Header.Get("Authorization") != "Bearer "+s.token {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	switch r.Method {
	case http.MethodPost:
		s.posts.Add(1)
		s.mu.Lock()
		down := s.down
		s.mu.Unlock()
		if down {
			http.Error(w, "restarting", http.StatusServiceUnavailable)
			return
		}
		offer, _ := io.ReadAll(r.Body)
		pc, err := s.api.NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		track, _ := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000, SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"}, "video", "srv")
		if _, err := pc.AddTrack(track); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: string(offer)}); err != nil {
			_ = pc.Close()
			http.Error(w, err.Error(), 400)
			return
		}
		ans, _ := pc.CreateAnswer(nil)
		g := webrtc.GatheringCompletePromise(pc)
		_ = pc.SetLocalDescription(ans)
		<-g
		id := NewSessionID()
		s.mu.Lock()
		s.sessions[id] = pc
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			tick := time.NewTicker(time.Second / 30)
			defer tick.Stop()
			for i := 0; ; i++ {
				if track.WriteSample(media.Sample{Data: annexB(s.clip[i%len(s.clip)]), Duration: time.Second / 30}) != nil {
					return
				}
				select {
				case <-s.stop:
					return
				case <-tick.C:
				}
				if pc.ConnectionState() == webrtc.PeerConnectionStateClosed {
					return
				}
			}
		}()
		w.Header().Set("Location", "session/"+id)
		w.Header().Set("Content-Type", "application/sdp")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, pc.LocalDescription().SDP)
	case http.MethodDelete:
		s.deletes.Add(1)
		id := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
		s.mu.Lock()
		pc := s.sessions[id]
		delete(s.sessions, id)
		s.mu.Unlock()
		if pc == nil {
			http.Error(w, "no session", http.StatusNotFound)
			return
		}
		_ = pc.Close()
	}
}

// setDown drops every session and refuses new ones (true), or serves again.
func (s *whepServer) setDown(down bool) {
	s.mu.Lock()
	s.down = down
	var pcs []*webrtc.PeerConnection
	if down {
		for id, pc := range s.sessions {
			pcs = append(pcs, pc)
			delete(s.sessions, id)
		}
	}
	s.mu.Unlock()
	for _, pc := range pcs {
		_ = pc.Close()
	}
}

// A WHEP server is ingested as a camera; when it goes away and comes back
// the source reconnects by itself, and stopping it DELETEs the session.
func TestWHEPSourceReconnects(t *testing.T) {
	w := newBusWatch(t, "pulled")
	srvAPI := testAPI(t)
	ws := &whepServer{t: t, api: srvAPI, clip: makeClip(t, 2), token: "s3cret", sessions: map[string]*webrtc.PeerConnection{}, stop: make(chan struct{})}
	hs := httptest.NewServer(ws)
	defer func() {
		hs.Close()
		ws.setDown(true)
		close(ws.stop)
		ws.wg.Wait()
	}()

	src, err := NewWHEPSource(WHEPSourceConfig{
		URL: strings.Replace(hs.URL, "http://", "whep://", 1) + "/whep/cam?token=s3cret", Camera: "pulled",
		Sink: w.sink, API: testAPI(t), PLIInterval: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	}()

	waitFor(t, 15*time.Second, "30 AUs from the WHEP server", func() bool { return len(w.snapshot()) >= 30 && keyframesWithSPS(w.snapshot()) >= 1 })
	if got := ws.auth.Load(); got != "Bearer s3cret" {
		t.Fatalf("Authorization %q", got)
	}
	if st := w.sink.Status(); st.Codec != "h264" || st.Width != 320 || st.State != "online" {
		t.Fatalf("status %+v", st)
	}

	// Restart: the server drops the session and refuses for a moment.
	ws.setDown(true)
	before := len(w.snapshot())
	waitFor(t, 15*time.Second, "the source to notice and retry", func() bool { return ws.posts.Load() >= 3 })
	ws.setDown(false)
	start := time.Now()
	waitFor(t, 15*time.Second, "media after the restart", func() bool { return len(w.snapshot()) >= before+30 })
	t.Logf("reconnected and got 30 AUs %v after the server came back (%d POSTs)", time.Since(start).Round(time.Millisecond), ws.posts.Load())

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	done <- nil
	waitFor(t, 5*time.Second, "the DELETE on stop", func() bool {
		ws.mu.Lock()
		defer ws.mu.Unlock()
		return len(ws.sessions) == 0
	})
	if w.sink.Status().State != "offline" {
		t.Fatalf("state after stop %s", w.sink.Status().State)
	}
}

func TestWHEPSourceBadConfig(t *testing.T) {
	w := newBusWatch(t, "c")
	api := testAPI(t)
	for _, u := range []string{"http://h/x", "whep://", "rtsp://h/x", "whep://%zz/x?token=topsecret"} {
		_, err := NewWHEPSource(WHEPSourceConfig{URL: u, Sink: w.sink, API: api})
		if !errors.Is(err, ErrBadURL) {
			t.Errorf("%q: %v", u, err)
		}
		if err != nil && strings.Contains(err.Error(), "topsecret") {
			t.Errorf("error leaks the token: %v", err)
		}
	}
	// Wrong token: the server answers 401 and the error names the status,
	// not the token.
	ws := &whepServer{t: t, api: api, token: "right", sessions: map[string]*webrtc.PeerConnection{}, stop: make(chan struct{})}
	hs := httptest.NewServer(ws)
	defer hs.Close()
	src, err := NewWHEPSource(WHEPSourceConfig{URL: "whep://user:wrongtoken@" + strings.TrimPrefix(hs.URL, "http://") + "/x", Sink: w.sink, API: api})
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.session(context.Background())
	if err == nil || !strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), "wrongtoken") {
		t.Fatalf("err = %v", err)
	}
	if got := ws.auth.Load(); got != "Bearer wrongtoken" {
		t.Fatalf("Authorization %q", got)
	}
}

// authRecorder is another origin: it records the Authorization of every
// request it gets.
type authRecorder struct {
	mu    sync.Mutex
	calls []string // "METHOD Authorization"
}

func (a *authRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.calls = append(a.calls, r.Method+" "+r.Header.Get("Authorization"))
	a.mu.Unlock()
	http.Error(w, "gone", http.StatusNotFound)
}

func (a *authRecorder) snapshot() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.calls...)
}

// The token goes only to the configured origin: a redirect to another port
// of the same host (which net/http treats as the same host) is refused, so
// the other origin never sees the token.
func TestWHEPSourceTokenNotRedirectedCrossOrigin(t *testing.T) {
	w := newBusWatch(t, "c")
	api := testAPI(t)
	other := &authRecorder{}
	ho := httptest.NewServer(other)
	defer ho.Close()
	redirector := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		http.Redirect(rw, r, ho.URL+"/whep/cam", http.StatusTemporaryRedirect)
	}))
	defer redirector.Close()
	src, err := NewWHEPSource(WHEPSourceConfig{URL: "whep://" + strings.TrimPrefix(redirector.URL, "http://") + "/whep/cam?token=s3cret-tok", Sink: w.sink, API: api})
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.session(context.Background())
	if err == nil || strings.Contains(err.Error(), "s3cret-tok") {
		t.Fatalf("err = %v", err)
	}
	for _, c := range other.snapshot() {
		if strings.Contains(c, "s3cret-tok") {
			t.Fatalf("the other origin got the token: %q", c)
		}
	}
	t.Logf("refused: %v", err)
}

// The session URL (Location) the server answers with may name another
// origin: the DELETE goes there without the token.
func TestWHEPSourceTokenNotSentToCrossOriginLocation(t *testing.T) {
	w := newBusWatch(t, "c")
	srvAPI := testAPI(t)
	ws := &whepServer{t: t, api: srvAPI, clip: makeClip(t, 2), token: "s3cret-tok", sessions: map[string]*webrtc.PeerConnection{}, stop: make(chan struct{})}
	other := &authRecorder{}
	ho := httptest.NewServer(other)
	defer ho.Close()
	// The real WHEP server, with its Location rewritten to the other origin.
	hs := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		ws.ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			rw.Header()[k] = v
		}
		if loc := rec.Header().Get("Location"); loc != "" {
			rw.Header().Set("Location", ho.URL+"/"+loc)
		}
		rw.WriteHeader(rec.Code)
		_, _ = rw.Write(rec.Body.Bytes())
	}))
	defer func() {
		hs.Close()
		ws.setDown(true)
		close(ws.stop)
		ws.wg.Wait()
	}()
	src, err := NewWHEPSource(WHEPSourceConfig{URL: "whep://" + strings.TrimPrefix(hs.URL, "http://") + "/whep/cam?token=s3cret-tok", Sink: w.sink, API: testAPI(t), PLIInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, _ = src.session(ctx)
	if got := ws.auth.Load(); got != "Bearer s3cret-tok" {
		t.Fatalf("the configured origin got Authorization %q", got)
	}
	calls := other.snapshot()
	if len(calls) != 1 || !strings.HasPrefix(calls[0], "DELETE") {
		t.Fatalf("the other origin got %q, want one DELETE", calls)
	}
	if strings.Contains(calls[0], "s3cret-tok") {
		t.Fatalf("the other origin got the token: %q", calls[0])
	}
}
