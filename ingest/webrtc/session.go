package webrtc

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/imageflowcanvas/imageflow/ingest"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// DefaultPLIInterval asks a publisher for a keyframe this often, so late
// viewers and decoders start within one interval even when the sender (a
// browser) would otherwise send a keyframe only every few minutes.
const DefaultPLIInterval = 2 * time.Second

// lockedSink serializes the video and audio readers of one session, since a
// Sink is used by one goroutine at a time.
type lockedSink struct {
	mu   sync.Mutex
	sink ingest.Sink
}

func (l *lockedSink) write(au *busv1.AccessUnit) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sink.WriteAccessUnit(au)
}

func (l *lockedSink) setTrack(c busv1.Codec, w, h int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sink.SetTrack(c, w, h)
}

func (l *lockedSink) setState(state string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sink.SetState(state, err)
}

// receiver reads the incoming tracks of one peer connection into a sink. It
// is shared by WHIP sessions and the WHEP pull source.
type receiver struct {
	pc          *webrtc.PeerConnection
	sink        *lockedSink
	log         *slog.Logger
	pliInterval time.Duration

	mu      sync.Mutex
	stopped bool
	wg      sync.WaitGroup
	// lastMedia is the Unix ns of the last video access unit, for the WHEP
	// source's no-media watchdog.
	lastMedia atomic.Int64
	videoAUs  atomic.Uint64
}

// onTrack is the PeerConnection's OnTrack handler.
func (r *receiver) onTrack(track *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if track.Kind() == webrtc.RTPCodecTypeVideo {
			r.readVideo(track)
		} else {
			r.readAudio(track)
		}
	}()
}

// stop waits for the track readers; the caller closes the peer connection
// first, which ends their reads.
func (r *receiver) stop() {
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
	r.wg.Wait()
}

func (r *receiver) readVideo(track *webrtc.TrackRemote) {
	codec := CodecOfMime(track.Codec().MimeType)
	log := r.log.With("codec", track.Codec().MimeType)
	dep, err := NewDepacketizer(codec)
	if err != nil {
		log.Warn("webrtc: video track with an unsupported codec", "err", err)
		r.drain(track)
		return
	}
	ssrc := uint32(track.SSRC())
	pli := func() {
		_ = r.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}})
	}
	pli()
	lastPLI := time.Now()
	clock := ingest.RTPClock{Rate: 90000}
	buf := make([]byte, 1500)
	var pkt rtp.Packet
	trackSet := false
	for {
		n, _, err := track.Read(buf)
		if err != nil {
			return
		}
		if err := pkt.Unmarshal(buf[:n]); err != nil {
			continue
		}
		au, _ := dep.Push(&pkt)
		now := time.Now()
		if dep.NeedKeyframe() && now.Sub(lastPLI) > 300*time.Millisecond || r.pliInterval > 0 && now.Sub(lastPLI) >= r.pliInterval {
			pli()
			lastPLI = now
		}
		if au == nil {
			continue
		}
		if w, h, changed := dep.Size(); changed || !trackSet {
			r.sink.setTrack(codec, w, h)
			trackSet = true
		}
		au.Pts = clock.PTS(au.RtpTimestamp)
		au.IngestUnixNano = now.UnixNano()
		if err := r.sink.write(au); err != nil {
			log.Debug("webrtc: sink write", "err", err)
		}
		r.lastMedia.Store(now.UnixNano())
		r.videoAUs.Add(1)
	}
}

func (r *receiver) readAudio(track *webrtc.TrackRemote) {
	codec := CodecOfMime(track.Codec().MimeType)
	// Opus is stereo at 48 kHz in SDP whatever it carries (RFC 7587 §7);
	// G.711 is mono at 8 kHz (RFC 3551 §4.5.14).
	channels, rate := uint32(2), int64(48000)
	switch codec {
	case busv1.Codec_CODEC_OPUS:
	case busv1.Codec_CODEC_PCMU, busv1.Codec_CODEC_PCMA:
		channels, rate = 1, 8000
	default:
		r.drain(track)
		return
	}
	if c := uint32(track.Codec().Channels); c != 0 {
		channels = c
	}
	clock := ingest.RTPClock{Rate: int64(track.Codec().ClockRate)}
	if clock.Rate == 0 {
		clock.Rate = rate
	}
	buf := make([]byte, 1500)
	var pkt rtp.Packet
	for {
		n, _, err := track.Read(buf)
		if err != nil {
			return
		}
		if err := pkt.Unmarshal(buf[:n]); err != nil || len(pkt.Payload) == 0 {
			continue
		}
		// One Opus packet is one access unit (RFC 7587 §4.2); a G.711
		// packet is a run of samples, published as it came.
		au := &busv1.AccessUnit{
			Codec: codec, RtpTimestamp: pkt.Timestamp, ClockRate: uint32(clock.Rate),
			Channels: channels, Keyframe: true, Data: append([]byte(nil), pkt.Payload...),
			Pts: clock.PTS(pkt.Timestamp), IngestUnixNano: time.Now().UnixNano(),
		}
		_ = r.sink.write(au)
	}
}

// drain reads and discards a track nobody uses, so its buffers do not fill.
func (r *receiver) drain(track *webrtc.TrackRemote) {
	buf := make([]byte, 1500)
	for {
		if _, _, err := track.Read(buf); err != nil {
			return
		}
	}
}

// preferVideoCodecs reorders the video transceivers' codecs so the remote
// sends our preferred codec: H264 first (passes through to every viewer and
// decodes in hardware), then VP8, then VP9.
func preferVideoCodecs(pc *webrtc.PeerConnection) {
	rank := func(mime string) int {
		switch CodecOfMime(mime) {
		case busv1.Codec_CODEC_H264:
			return 0
		case busv1.Codec_CODEC_VP8:
			return 1
		case busv1.Codec_CODEC_VP9:
			return 2
		}
		return 3
	}
	for _, tr := range pc.GetTransceivers() {
		if tr.Kind() != webrtc.RTPCodecTypeVideo {
			continue
		}
		codecs := tr.Receiver().GetParameters().Codecs
		if len(codecs) == 0 {
			continue
		}
		usable := codecs[:0:0]
		for _, c := range codecs {
			if rank(c.MimeType) < 3 {
				usable = append(usable, c)
			}
		}
		sort.SliceStable(usable, func(i, j int) bool { return rank(usable[i].MimeType) < rank(usable[j].MimeType) })
		_ = tr.SetCodecPreferences(usable)
	}
}

// pickVideoCodec is the codec a publisher offering info will be asked for.
func pickVideoCodec(info *OfferInfo) (busv1.Codec, error) {
	for _, c := range []busv1.Codec{busv1.Codec_CODEC_H264, busv1.Codec_CODEC_VP8, busv1.Codec_CODEC_VP9} {
		if info.Has(c) {
			return c, nil
		}
	}
	return 0, ErrCodecNotSupported
}

// answer runs the answerer side of an offer/answer exchange (WHIP and WHEP
// egress alike) and waits for ICE gathering (started with the peer
// connection when it has a candidate pool), so non-trickle clients get every
// candidate in the answer. beforeAnswer runs once the offer is applied, to
// choose codecs; its error is returned. steps, when not nil, times each step.
func answer(ctx context.Context, pc *webrtc.PeerConnection, offer string, steps *answerSteps, beforeAnswer func() error) (string, error) {
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", errors.Join(ErrBadSDP, err)
	}
	steps.mark("set_remote")
	if beforeAnswer != nil {
		if err := beforeAnswer(); err != nil {
			return "", err
		}
	}
	ans, err := pc.CreateAnswer(nil)
	if err != nil {
		return "", errors.Join(ErrCodecNotSupported, err)
	}
	steps.mark("create_answer")
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(ans); err != nil {
		return "", err
	}
	steps.mark("set_local")
	select {
	case <-gathered:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	steps.mark("gather")
	local := pc.LocalDescription().SDP
	steps.mark("local_sdp")
	return local, nil
}

// remoteUfrag is the ICE username fragment of the remote description.
func remoteUfrag(pc *webrtc.PeerConnection) string {
	rd := pc.RemoteDescription()
	if rd == nil {
		return ""
	}
	// Parsed here rather than with rd.Unmarshal, which caches the result in
	// the description pion shares with its own goroutines (a data race).
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(rd.SDP); err == nil {
		if u, ok := sd.Attribute("ice-ufrag"); ok {
			return u
		}
		for _, md := range sd.MediaDescriptions {
			if u, ok := md.Attribute("ice-ufrag"); ok {
				return u
			}
		}
	}
	return ""
}

// addCandidates applies a trickle-ICE fragment to a peer connection.
func addCandidates(pc *webrtc.PeerConnection, frag string) error {
	cands, err := ParseSDPFragment(frag, remoteUfrag(pc))
	if err != nil {
		return err
	}
	for _, c := range cands {
		if err := pc.AddICECandidate(c); err != nil {
			return errors.Join(ErrBadSDP, err)
		}
	}
	return nil
}
