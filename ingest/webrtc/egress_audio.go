package webrtc

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/imageflowcanvas/imageflow/bus/hub"
	"github.com/imageflowcanvas/imageflow/media"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// AudioSource gives a viewer a camera's audio frames (bus/hub.Hub). A
// VideoSource that also implements it gives viewers sound.
type AudioSource interface {
	SubscribeAudio(cam, kind string, depth int) (*hub.Reader, error)
}

// audioDepth is a viewer's hub queue of audio frames (a few seconds).
const audioDepth = 128

// viewerAudio is the camera's audio sent to one viewer, passed through
// with the camera's RTP timestamps so the browser syncs it to the video
// (both clocks start from the source's).
type viewerAudio struct {
	// frames are the camera's frames (passed through) or the shared Opus
	// transcode's; release stops them.
	frames  <-chan *busv1.AccessUnit
	release func()
	// codec is what the viewer receives.
	codec  busv1.Codec
	track  *webrtc.TrackLocalStaticRTP
	sender *webrtc.RTPSender
	sent   atomic.Uint64
	// transcoded is true when the camera's audio reaches this viewer
	// through the shared Opus transcode.
	transcoded bool
	// videoStarted is closed when the viewer's first video access unit
	// went out; audio follows from then on.
	videoStarted chan struct{}
	startOnce    sync.Once
}

// start lets audio flow (called once the video started).
func (a *viewerAudio) start() {
	if a != nil {
		a.startOnce.Do(func() { close(a.videoStarted) })
	}
}

// passThroughAudio tells whether a browser plays a bus audio codec as is.
func passThroughAudio(c busv1.Codec) bool {
	switch c {
	case busv1.Codec_CODEC_OPUS, busv1.Codec_CODEC_PCMU, busv1.Codec_CODEC_PCMA:
		return true
	}
	return false
}

// subscribeAudio starts reading cam's audio for a viewer whose offer can
// receive audio; nil when it cannot or the source has no audio.
func subscribeAudio(src VideoSource, cam string, info *OfferInfo) *hub.Reader {
	as, ok := src.(AudioSource)
	if !ok || !info.HasAudio {
		return nil
	}
	r, err := as.SubscribeAudio(cam, "whep-audio", audioDepth)
	if err != nil {
		return nil
	}
	return r
}

// probeAudio waits (until since+EngineConfig.AudioProbe) for the camera's first audio
// frame and returns the viewer's audio track for it, or nil, closing r,
// when the camera sends none or nothing the viewer can play. Opus and
// G.711 pass through; anything else (AAC) joins the camera's shared Opus
// transcode when the offer takes Opus.
func (e *Engine) probeAudio(ctx context.Context, r *hub.Reader, src VideoSource, info *OfferInfo, since time.Time, cam string) *viewerAudio {
	if r == nil {
		return nil
	}
	var first *busv1.AccessUnit
	select {
	case au, ok := <-r.C():
		if ok {
			first = au
		}
	default:
		wait := time.NewTimer(max(time.Until(since.Add(e.cfg.AudioProbe)), 0))
		defer wait.Stop()
		select {
		case au, ok := <-r.C():
			if ok {
				first = au
			}
		case <-wait.C:
		case <-ctx.Done():
		}
	}
	if first == nil {
		r.Close()
		return nil
	}
	a := &viewerAudio{frames: r.C(), release: r.Close, codec: first.Codec, videoStarted: make(chan struct{})}
	if !passThroughAudio(first.Codec) {
		r.Close()
		if !info.OpusAudio || audioCodecOf(first.Codec) == media.AudioUnknown {
			return nil
		}
		frames, leave, err := e.opus.join(cam, src.(AudioSource))
		if err != nil {
			return nil
		}
		a.frames, a.release, a.codec = frames, leave, busv1.Codec_CODEC_OPUS
		a.transcoded = true
	}
	capab := webrtc.RTPCodecCapability{MimeType: MimeType(a.codec), ClockRate: 8000, Channels: 1}
	if a.codec == busv1.Codec_CODEC_OPUS {
		// RFC 7587: Opus is always opus/48000/2 in SDP.
		capab = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}
	}
	track, err := webrtc.NewTrackLocalStaticRTP(capab, "audio", "imageflow-"+cam)
	if err != nil {
		a.release()
		return nil
	}
	a.track = track
	return a
}

// addTrack adds the audio track to pc before the offer is applied, so
// pion binds it to the offer's recvonly audio section.
func (a *viewerAudio) addTrack(pc *webrtc.PeerConnection) error {
	s, err := pc.AddTrack(a.track)
	if err != nil {
		return fmt.Errorf("webrtc: add audio track: %w", err)
	}
	a.sender = s
	return nil
}

// bound narrows the audio transceiver to the camera's codec; false when the
// offer had no section for it (the viewer then gets video only).
func (a *viewerAudio) bound(pc *webrtc.PeerConnection) bool {
	for _, tr := range pc.GetTransceivers() {
		if tr.Sender() == a.sender {
			if tr.Mid() == "" {
				return false
			}
			narrowCodecs(tr, MimeType(a.codec))
			return true
		}
	}
	return false
}

// sendAudio forwards the camera's audio frames to the viewer once the
// connection is up and its video has started, until the session ends.
func (e *Engine) sendAudio(v *viewer) {
	a := v.audio
	select {
	case <-a.videoStarted:
	case <-v.done:
		return
	}
	// What queued while connecting is stale: start with live sound.
	for drained := false; !drained; {
		select {
		case <-a.frames:
		default:
			drained = true
		}
	}
	var pkt rtp.Packet
	var seq uint16
	for {
		select {
		case <-v.done:
			return
		case au, ok := <-a.frames:
			if !ok {
				return
			}
			if au.Codec != a.codec || len(au.Data) == 0 {
				continue
			}
			pkt.Header = rtp.Header{Version: 2, Marker: true, SequenceNumber: seq, Timestamp: au.RtpTimestamp}
			pkt.Payload = au.Data
			seq++
			// A write error is a closing transport; v.done follows.
			if a.track.WriteRTP(&pkt) == nil {
				a.sent.Add(1)
			}
		}
	}
}
