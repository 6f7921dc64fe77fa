package webrtc

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/pion/webrtc/v4"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/internal/testkit"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// keyframeClock records when a camera's keyframes reach the bus and their
// RTP timestamps.
type keyframeClock struct {
	mu    sync.Mutex
	times []time.Time
	ts    []uint32
}

func watchKeyframes(t *testing.T, e *env, cam string) *keyframeClock {
	t.Helper()
	k := &keyframeClock{}
	sub, err := e.bus.Conn().Subscribe(e.bus.Subjects().Video(cam), func(m *nats.Msg) {
		au := &busv1.AccessUnit{}
		if proto.Unmarshal(m.Data, au) == nil && au.Keyframe {
			k.mu.Lock()
			k.times = append(k.times, time.Now())
			k.ts = append(k.ts, au.RtpTimestamp)
			k.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return k
}

func (k *keyframeClock) count() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.times)
}

// after is the first keyframe that reached the bus after t, if any.
func (k *keyframeClock) after(t time.Time) (time.Time, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, at := range k.times {
		if at.After(t) {
			return at, true
		}
	}
	return time.Time{}, false
}

func (k *keyframeClock) isKeyframe(ts uint32) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Contains(k.ts, ts)
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(p * float64(len(s)-1))
	return s[i]
}

// Fifty pion viewers join a camera with an 8 s GOP at once, a moment after
// a keyframe. Each WHEP answer comes back without waiting for media — all
// of them before the camera's next keyframe, which the old engine waited
// for — and each viewer's video starts on the kept keyframe. Prints the
// answer times and the time from answer to first video packet.
func TestWHEPJoinDoesNotWaitForKeyframe(t *testing.T) {
	const viewers = 50
	// Long enough for an engine that waits for the next keyframe to answer.
	e := newEnv(t, EngineConfig{NoVideoTimeout: 15 * time.Second})
	clip := testkit.H264ClipGOP(t, 8, 240)
	keys := watchKeyframes(t, e, "cam1")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	e.feed(ctx, "cam1", clip, &wg)
	t.Cleanup(func() { cancel(); wg.Wait() })

	api := clientAPI(t)
	type peer struct {
		pc      *webrtc.PeerConnection
		offer   string
		first   atomic.Uint32
		gotAt   atomic.Int64
		markers atomic.Uint64
	}
	peers := make([]*peer, viewers)
	for i := range peers {
		pc, err := api.NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = pc.Close() })
		if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
		p := &peer{pc: pc}
		pc.OnTrack(func(track *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
			for {
				pkt, _, err := track.ReadRTP()
				if err != nil {
					return
				}
				if p.gotAt.Load() == 0 {
					p.first.Store(pkt.Timestamp)
					p.gotAt.Store(time.Now().UnixNano())
				}
				if pkt.Marker {
					p.markers.Add(1)
				}
			}
		})
		p.offer = localOffer(t, pc)
		peers[i] = p
	}

	// Join a little after a keyframe, so the next one is seconds away.
	waitFor(t, 20*time.Second, "the camera's first keyframe", func() bool { return keys.count() >= 1 })
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	answered := make([]time.Time, viewers)
	errs := make(chan string, viewers)
	var posts sync.WaitGroup
	for i, p := range peers {
		posts.Add(1)
		go func() {
			defer posts.Done()
			resp, err := http.Post(e.srv.URL+"/whep/cam1", "application/sdp", strings.NewReader(p.offer))
			if err != nil {
				errs <- err.Error()
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			answered[i] = time.Now()
			if resp.StatusCode != http.StatusCreated {
				errs <- string(body)
				return
			}
			if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
				errs <- err.Error()
			}
		}()
	}
	posts.Wait()
	close(errs)
	for msg := range errs {
		t.Fatalf("viewer: %s", msg)
	}
	last := slices.MaxFunc(answered, func(a, b time.Time) int { return a.Compare(b) })
	if next, ok := keys.after(start); ok && next.Before(last) {
		t.Fatalf("answers waited for media: the last came %v after the join, after the next keyframe (%v after the join)",
			last.Sub(start), next.Sub(start))
	}

	waitFor(t, 60*time.Second, "every viewer to receive 30 access units", func() bool {
		for _, p := range peers {
			if p.markers.Load() < 30 {
				return false
			}
		}
		return true
	})
	answers := make([]time.Duration, viewers)
	firsts := make([]time.Duration, viewers)
	for i, p := range peers {
		answers[i] = answered[i].Sub(start)
		firsts[i] = time.Unix(0, p.gotAt.Load()).Sub(answered[i])
		if !keys.isKeyframe(p.first.Load()) {
			t.Fatalf("viewer %d started on rtp timestamp %d, not a keyframe", i, p.first.Load())
		}
	}
	t.Logf("%d viewers joining at once: answer p50 %v p99 %v; answer to first video packet p50 %v p99 %v",
		viewers, percentile(answers, 0.5).Round(time.Millisecond), percentile(answers, 0.99).Round(time.Millisecond),
		percentile(firsts, 0.5).Round(time.Millisecond), percentile(firsts, 0.99).Round(time.Millisecond))
}
