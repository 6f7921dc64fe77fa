package webrtc

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

// BenchmarkWHEPAnswer is the engine's work for one WHEP answer (offer in,
// answer out, session closed after the timer stops) to a pion client
// offering video only with pion's default codecs, as the join benchmark's
// viewers do: with many viewers joining at once on two cores, each answer's
// CPU is what the later answers wait for.
func BenchmarkWHEPAnswer(b *testing.B) {
	e := newEnv(b, EngineConfig{Logger: slog.New(slog.DiscardHandler)})
	startFeed(b, e, "cam1")
	pc, err := clientAPI(b).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = pc.Close() })
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		b.Fatal(err)
	}
	offer := localOffer(b, pc)
	ctx := context.Background()
	waitFor(b, 20*time.Second, "the camera's first keyframe", func() bool {
		_, id, err := e.engine.NewViewer(ctx, "cam1", "client", offer, e.hub, e.rs)
		if err == nil {
			_ = e.engine.CloseSession(id)
		}
		return err == nil
	})
	b.ReportAllocs()
	for b.Loop() {
		_, id, err := e.engine.NewViewer(ctx, "cam1", "client", offer, e.hub, e.rs)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		_ = e.engine.CloseSession(id)
		b.StartTimer()
	}
}
