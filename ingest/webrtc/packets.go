package webrtc

import (
	"sync"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// sharedPacketsSize is how many of a camera's latest access units keep
// their RTP payloads for the viewers still to send them: two seconds at 30
// fps, enough for the kept GOP that joining viewers catch up on.
const sharedPacketsSize = 64

// sharedPackets cuts each access unit of one H.264 or H.265 stream into RTP
// payloads once for all the viewers sending it, rather than once per
// viewer: the hub hands every viewer the same access unit, and fifty
// viewers joining at once each cut the same kept GOP, allocating and
// copying it fifty times over while the next viewers waited for their
// answers. The payloads are shared and never written after they are made;
// each viewer sends them under its own RTP headers, and the NACK responder
// keeps them for retransmission without copying them (DisableCopy in
// viewerInterceptors). VP8 and VP9 payloaders number pictures across
// frames, so those streams keep a payloader per viewer.
type sharedPackets struct {
	mu     sync.Mutex
	codec  busv1.Codec
	h264   codecs.H264Payloader
	h265   codecs.H265Payloader
	recent [sharedPacketsSize]packetizedAU
	next   int
	// users is guarded by packetCaches.mu.
	users int
}

type packetizedAU struct {
	au       *busv1.AccessUnit
	payloads [][]byte
}

// payloads are au's RTP payloads; the caller must not modify them.
func (s *sharedPackets) payloads(au *busv1.AccessUnit) [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.recent {
		if s.recent[i].au == au {
			return s.recent[i].payloads
		}
	}
	var out [][]byte
	for _, n := range au.Nalus {
		if len(n) == 0 {
			continue
		}
		if s.codec == busv1.Codec_CODEC_H265 {
			out = append(out, s.h265.Payload(rtpMTU, n)...)
		} else {
			out = append(out, s.h264.Payload(rtpMTU, n)...)
		}
	}
	s.recent[s.next] = packetizedAU{au: au, payloads: out}
	s.next = (s.next + 1) % len(s.recent)
	return out
}

// packetCaches holds the sharedPackets of the streams viewers are sent,
// each while it has a viewer.
type packetCaches struct {
	mu     sync.Mutex
	byName map[packetStream]*sharedPackets
}

// packetStream names one stream viewers are sent: a camera's own, or its
// transcode.
type packetStream struct {
	cam        string
	codec      busv1.Codec
	transcoded bool
}

// acquire returns the stream's sharedPackets, nil for a codec whose
// payloads are cut per viewer; release gives it back.
func (c *packetCaches) acquire(name packetStream) (s *sharedPackets, release func()) {
	if name.codec != busv1.Codec_CODEC_H264 && name.codec != busv1.Codec_CODEC_H265 {
		return nil, func() {}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byName == nil {
		c.byName = make(map[packetStream]*sharedPackets)
	}
	s = c.byName[name]
	if s == nil {
		s = &sharedPackets{codec: name.codec}
		c.byName[name] = s
	}
	s.users++
	return s, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if s.users--; s.users == 0 {
			delete(c.byName, name)
		}
	}
}

// viewerTrack is a viewer's video track: pion's TrackLocalStaticRTP for
// binding to the offer's codec, written through its binding directly so
// that each packet keeps the header it was sent with. TrackLocalStaticRTP
// copies a packet into a pooled one and clears it after the write, and the
// NACK responder, which keeps packets without copying them, would have
// resent cleared headers.
type viewerTrack struct {
	*webrtc.TrackLocalStaticRTP

	mu   sync.RWMutex
	out  webrtc.TrackLocalWriter
	ssrc uint32
	pt   uint8
}

func newViewerTrack(c webrtc.RTPCodecCapability, id, streamID string) (*viewerTrack, error) {
	t, err := webrtc.NewTrackLocalStaticRTP(c, id, streamID)
	if err != nil {
		return nil, err
	}
	return &viewerTrack{TrackLocalStaticRTP: t}, nil
}

// Bind implements webrtc.TrackLocal.
func (t *viewerTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	codec, err := t.TrackLocalStaticRTP.Bind(ctx)
	if err != nil {
		return codec, err
	}
	t.mu.Lock()
	t.out, t.ssrc, t.pt = ctx.WriteStream(), uint32(ctx.SSRC()), uint8(codec.PayloadType)
	t.mu.Unlock()
	return codec, nil
}

// Unbind implements webrtc.TrackLocal.
func (t *viewerTrack) Unbind(ctx webrtc.TrackLocalContext) error {
	t.mu.Lock()
	t.out = nil
	t.mu.Unlock()
	return t.TrackLocalStaticRTP.Unbind(ctx)
}

// write sends payload under h, which must not be used after: the NACK
// responder keeps it. Before the track is bound, or after, the packet goes
// nowhere, as with TrackLocalStaticRTP.
func (t *viewerTrack) write(h *rtp.Header, payload []byte) error {
	t.mu.RLock()
	out, ssrc, pt := t.out, t.ssrc, t.pt
	t.mu.RUnlock()
	if out == nil {
		return nil
	}
	h.SSRC, h.PayloadType = ssrc, pt
	_, err := out.WriteRTP(h, payload)
	return err
}
