package webrtc

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/imageflowcanvas/imageflow/ingest"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// nullSink takes a WHIP session's access units and drops them.
type nullSink struct{}

func (nullSink) WriteAccessUnit(*busv1.AccessUnit) error { return nil }
func (nullSink) SetState(string, error)                  {}
func (nullSink) SetTrack(busv1.Codec, int, int)          {}

var _ ingest.Sink = nullSink{}

// offerSeeds are real offers: pion's with video, audio and a data channel,
// and the same trimmed to each kind, so the fuzzer mutates something the
// answer path reaches deeply.
func offerSeeds(t testing.TB) []string {
	api := clientAPI(t)
	var out []string
	for _, kinds := range [][]webrtc.RTPCodecType{
		{webrtc.RTPCodecTypeVideo},
		{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio},
	} {
		for _, dir := range []webrtc.RTPTransceiverDirection{webrtc.RTPTransceiverDirectionRecvonly, webrtc.RTPTransceiverDirectionSendonly} {
			pc := offeringPC(t, api, dir, kinds...)
			if _, err := pc.CreateDataChannel(ResultsLabel, nil); err != nil {
				t.Fatal(err)
			}
			out = append(out, localOffer(t, pc))
		}
	}
	return out
}

// FuzzOffer hands arbitrary offers to a WHEP viewer of a live camera and to
// a WHIP publisher: every one is answered or refused with an error, and
// nothing panics (pion parses them in its own goroutines too, where a panic
// would take the server down).
func FuzzOffer(f *testing.F) {
	for _, s := range offerSeeds(f) {
		f.Add(s)
		// Typical breakage: a truncated offer and one with its codecs cut.
		f.Add(s[:len(s)/2])
		f.Add(strings.ReplaceAll(s, "a=rtpmap:", "a=rtpmap:9"))
	}
	f.Add("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n")
	e := newFuzzEnv(f)
	pub, err := NewPublisher(PublisherConfig{API: e.engine.API(), Configuration: e.engine.Configuration()})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(pub.Close)
	f.Fuzz(func(t *testing.T, offer string) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, id, err := e.engine.NewViewer(ctx, "cam1", "127.0.0.1", offer, e.hub, e.rs); err == nil {
			_ = e.engine.CloseSession(id)
		} else if errors.Is(err, ErrClosed) {
			t.Fatal(err)
		}
		if _, id, err := pub.Offer(ctx, "fuzz", "127.0.0.1", offer, nullSink{}, func() {}); err == nil {
			_ = pub.Delete(id)
		}
	})
}

// newFuzzEnv is newEnv with a camera fed for as long as the fuzz target
// runs.
func newFuzzEnv(f *testing.F) *env {
	e := newEnv(f, EngineConfig{NoVideoTimeout: 5 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	e.feed(ctx, "cam1", makeClip(f, 2), &wg)
	f.Cleanup(func() { cancel(); wg.Wait() })
	return e
}
