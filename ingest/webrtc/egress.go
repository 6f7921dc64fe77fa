package webrtc

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/bus/hub"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// VideoSource gives a viewer a camera's access units (bus/hub.Hub): from
// its latest keyframe for viewers, from the next one for a transcode.
type VideoSource interface {
	Subscribe(cam, kind string, depth int) (*hub.Reader, error)
	SubscribeLatest(cam, kind string, depth int) (*hub.Reader, error)
}

// ResultSource calls fn with each pipeline result of a camera until
// unsubscribe is called; fn must not block.
type ResultSource interface {
	SubscribeResults(cam string, fn func(*busv1.Result)) (unsubscribe func(), err error)
}

// BusResults is the ResultSource of the bus: a camera's pipeline results as
// they are published on <prefix>.results.<cam>.
type BusResults struct {
	Conn     *nats.Conn
	Subjects bus.Subjects
}

// SubscribeResults implements ResultSource.
func (b BusResults) SubscribeResults(cam string, fn func(*busv1.Result)) (func(), error) {
	sub, err := b.Conn.Subscribe(b.Subjects.Results(cam), func(m *nats.Msg) {
		r := &busv1.Result{}
		if proto.Unmarshal(m.Data, r) == nil {
			fn(r)
		}
	})
	if err != nil {
		return nil, err
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

// ResultsLabel is the data channel a viewer opens to receive results.
const ResultsLabel = "results"

// rtpMTU leaves room for SRTP, RTP header extensions and tunnels.
const rtpMTU = 1200

// Drops counts what one camera's viewers lost by being slow.
type Drops struct {
	// Video access units dropped by the hub for WHEP readers.
	Video uint64
	// Results not sent because a data channel's buffer was full.
	Results uint64
}

type viewer struct {
	id, cam string
	pc      *webrtc.PeerConnection
	track   *viewerTrack
	reader  *hub.Reader
	first   *busv1.AccessUnit
	codec   busv1.Codec
	// audio is the camera's sound for this viewer, nil without.
	audio *viewerAudio
	// leaveTranscode, when the camera is transcoded for this viewer,
	// gives back its share of the transcode.
	leaveTranscode func()

	results      ResultSource
	unsubMu      sync.Mutex
	unsub        func()
	resultsDrops atomic.Uint64
	resultsSent  atomic.Uint64

	connected chan struct{}
	connOnce  sync.Once
	// connecting gives back the session's pending slot (idempotent).
	connecting func()
	done       chan struct{}
	once       sync.Once
	rtpSent    atomic.Uint64
}

// NewViewer answers a WHEP offer (RFC 9725) for camera cam: the camera's
// video passes through with its own RTP timestamps, and a "results" data
// channel in the offer carries src's results as JSON. The codec comes from
// the camera's latest keyframe, which src keeps, so the answer does not wait
// for media; only a camera that has sent no keyframe yet is waited for, up
// to NoVideoTimeout. The keyframe also says whether the camera has audio;
// only when it cannot tell (a session in its first second) does an offer
// with audio wait, up to AudioProbe, for the camera's first audio frame.
// client identifies the peer (its IP address) for EngineConfig.Pending.
// Errors: ErrBadSDP, ErrCodecNotSupported (the offer lacks the camera's
// codec), ErrNoVideo, ErrPendingLimit, ErrClientPendingLimit, ErrClosed, or
// ctx's error.
func (e *Engine) NewViewer(ctx context.Context, cam, client, offerSDP string, src VideoSource, results ResultSource) (answerSDP, sessionID string, err error) {
	steps := newAnswerSteps(e.log)
	info, err := InspectOffer(offerSDP)
	if err != nil {
		return "", "", err
	}
	steps.mark("inspect")
	if !info.HasVideo {
		return "", "", fmt.Errorf("%w: the offer has no video section", ErrCodecNotSupported)
	}
	if e.viewers.isClosed() {
		return "", "", ErrClosed
	}
	connecting, err := e.cfg.Pending.acquire(client)
	if err != nil {
		return "", "", err
	}
	reader, err := src.SubscribeLatest(cam, "whep", e.cfg.ReaderDepth)
	if err != nil {
		connecting()
		return "", "", fmt.Errorf("%w: %v", ErrNoVideo, err)
	}
	subscribed := time.Now()
	audioReader := subscribeAudio(src, cam, info)
	steps.mark("subscribe")
	var audio *viewerAudio
	ok := false
	defer func() {
		if !ok {
			reader.Close()
			if audio != nil {
				audio.release()
			} else if audioReader != nil {
				audioReader.Close()
			}
			connecting()
		}
	}()
	var first *busv1.AccessUnit
	wait := time.NewTimer(e.cfg.NoVideoTimeout)
	defer wait.Stop()
	select {
	case au, open := <-reader.C():
		if !open {
			return "", "", ErrClosed
		}
		first = au
	case <-wait.C:
		return "", "", ErrNoVideo
	case <-ctx.Done():
		return "", "", ctx.Err()
	}
	if audioReader != nil && first.AudioKnown && first.AudioCodec == busv1.Codec_CODEC_UNSPECIFIED {
		// The ingest says the camera sends no audio: answer now rather than
		// wait for audio that will not come.
		audioReader.Close()
		audioReader = nil
	}
	steps.mark("first_au")
	var leaveTranscode func()
	// H.265 passes through to a browser that offers it; otherwise it, and
	// MJPEG, is transcoded.
	if transcodable(first.Codec) && !(first.Codec == busv1.Codec_CODEC_H265 && info.Has(first.Codec)) {
		r, leave, f, err := e.transcodedReader(ctx, cam, src, info, first.Codec)
		if err != nil {
			return "", "", err
		}
		reader.Close()
		reader, first, leaveTranscode = r, f, leave
		defer func() {
			if !ok {
				leave()
			}
		}()
	}
	mime := MimeType(first.Codec)
	if first.Codec != busv1.Codec_CODEC_H264 && first.Codec != busv1.Codec_CODEC_VP8 && first.Codec != busv1.Codec_CODEC_VP9 && first.Codec != busv1.Codec_CODEC_H265 {
		return "", "", fmt.Errorf("%w: camera codec %s cannot be passed through", ErrCodecNotSupported, first.Codec)
	}
	if !info.Has(first.Codec) {
		return "", "", fmt.Errorf("%w: the camera sends %s, the offer lacks it", ErrCodecNotSupported, mime)
	}

	audio = e.probeAudio(ctx, audioReader, src, info, subscribed, cam)
	audioReader = nil
	steps.mark("audio")
	// From here on the answer is pion's work and nothing waits for media.
	defer answering.begin()()

	v := &viewer{
		id: NewSessionID(), cam: cam, reader: reader, first: first, codec: first.Codec, audio: audio, leaveTranscode: leaveTranscode,
		results: results, connected: make(chan struct{}), done: make(chan struct{}), connecting: connecting,
	}
	pcConf := e.Configuration()
	pcConf.Certificates = e.certs.get()
	// Gather from the start, beside applying the offer and making the
	// answer, rather than after them: waiting for the gathering's hops
	// between pion's goroutines was most of the engine's part of an answer
	// when many viewers joined at once.
	pcConf.ICECandidatePoolSize = 1
	pc, err := e.viewerAPIs[first.Codec].NewPeerConnection(pcConf)
	if err != nil {
		return "", "", fmt.Errorf("webrtc: new peer connection: %w", err)
	}
	v.pc = pc
	steps.mark("peer_connection")
	track, err := newViewerTrack(webrtc.RTPCodecCapability{MimeType: mime, ClockRate: 90000, SDPFmtpLine: fmtpFor(first)}, "video", "imageflow-"+cam)
	if err != nil {
		_ = pc.Close()
		return "", "", err
	}
	v.track = track
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		switch st {
		case webrtc.PeerConnectionStateConnected:
			v.connOnce.Do(func() { close(v.connected) })
			v.connecting()
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			e.endViewerAsync(v, st.String())
		}
	})
	// The page opens the results channel unordered and without
	// retransmissions (webapp CameraLive.tsx): a lost result is not resent
	// and holds none of the newer ones behind it. An ordered, reliable
	// channel from another client works too, with head-of-line blocking.
	pc.OnDataChannel(func(dc *webrtc.DataChannel) {
		if dc.Label() != ResultsLabel || results == nil {
			return
		}
		dc.OnOpen(func() {
			retransmits := -1 // unlimited
			if m := dc.MaxRetransmits(); m != nil {
				retransmits = int(*m)
			}
			e.log.Debug("whep viewer: results channel open", "camera", cam, "session", v.id, "ordered", dc.Ordered(), "max_retransmits", retransmits)
			e.startResults(v, dc)
		})
	})

	// The track is added before the offer is applied so pion attaches it to
	// the offer's recvonly video section (JSEP §5.10).
	sender, err := pc.AddTrack(track)
	if err != nil {
		_ = pc.Close()
		return "", "", err
	}
	if audio != nil {
		if err := audio.addTrack(pc); err != nil {
			_ = pc.Close()
			return "", "", err
		}
	}
	steps.mark("tracks")
	// Narrow the codecs to the camera's so the answer names exactly what
	// will be sent.
	ans, err := answer(ctx, pc, info.videoOnlyCodec(first.Codec, h264Profile(first), offerSDP), steps, func() error {
		for _, tr := range pc.GetTransceivers() {
			if tr.Sender() == sender {
				if tr.Mid() == "" {
					return fmt.Errorf("%w: no video section can receive", ErrCodecNotSupported)
				}
				narrowCodecs(tr, mime)
			}
		}
		if audio != nil && !audio.bound(pc) {
			audio.release()
			audio, v.audio = nil, nil
		}
		return nil
	})
	if err != nil {
		_ = pc.Close()
		return "", "", err
	}

	goroutines := 2
	if audio != nil {
		goroutines += 2
	}
	if !e.viewers.add(v.id, v, goroutines, func() {
		if e.drops[cam] == nil {
			e.drops[cam] = &Drops{}
		}
	}) {
		_ = pc.Close()
		return "", "", ErrClosed
	}
	ok = true
	go func() {
		defer e.viewers.done()
		e.readRTCP(sender)
	}()
	go func() {
		defer e.viewers.done()
		e.send(v)
	}()
	audioCodec := ""
	if audio != nil {
		audioCodec = MimeType(audio.codec)
		if audio.transcoded {
			audioCodec += " (transcoded)"
		}
		go func() {
			defer e.viewers.done()
			e.readRTCP(audio.sender)
		}()
		go func() {
			defer e.viewers.done()
			e.sendAudio(v)
		}()
	}
	steps.mark("start")
	steps.log(e.log, "whep answer steps", "camera", cam, "session", v.id)
	e.log.Info("whep viewer started", "camera", cam, "session", v.id, "codec", mime, "audio", audioCodec)
	return ans, v.id, nil
}

// narrowCodecs keeps only mime's codecs on a transceiver (H264 with
// packetization-mode=1 only).
func narrowCodecs(tr *webrtc.RTPTransceiver, mime string) {
	var keep []webrtc.RTPCodecParameters
	for _, c := range tr.Sender().GetParameters().Codecs {
		if CodecOfMime(c.MimeType) == CodecOfMime(mime) {
			keep = append(keep, c)
		}
	}
	if len(keep) > 0 {
		_ = tr.SetCodecPreferences(keep)
	}
}

// fmtpFor is the fmtp line matching the camera's stream (H264: its SPS's
// profile-level-id), so pion binds the offer's closest H264 payload type.
func fmtpFor(au *busv1.AccessUnit) string {
	if au.Codec == busv1.Codec_CODEC_H265 {
		return h265Fmtp(au)
	}
	if au.Codec != busv1.Codec_CODEC_H264 {
		return ""
	}
	for _, n := range au.Nalus {
		if len(n) >= 4 && n[0]&0x1f == 7 {
			return fmt.Sprintf("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=%02x%02x%02x", n[1], n[2], n[3])
		}
	}
	return "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
}

// h264Profile is the profile_idc and constraint flags of an H264 access
// unit's SPS, nil without one.
func h264Profile(au *busv1.AccessUnit) []byte {
	if au.Codec != busv1.Codec_CODEC_H264 {
		return nil
	}
	for _, n := range au.Nalus {
		if len(n) >= 4 && n[0]&0x1f == 7 {
			return n[1:3]
		}
	}
	return nil
}

// h265Fmtp is the fmtp line of an H.265 camera: its SPS's profile (Main,
// Main 10) and tier, so pion binds the offer's matching payload type.
func h265Fmtp(au *busv1.AccessUnit) string {
	profile, tier := 1, 0
	for _, n := range au.Nalus {
		// NAL header (2 bytes), then VPS id, sub-layers and nesting (1
		// byte), then profile space (2 bits), tier (1), profile (5).
		if len(n) >= 4 && (n[0]>>1)&0x3f == 33 {
			if p := int(n[3] & 0x1f); p == 1 || p == 2 {
				profile = p
			}
			tier = int(n[3]>>5) & 1
			break
		}
	}
	return fmt.Sprintf("level-id=93;profile-id=%d;tier-flag=%d;tx-mode=SRST", profile, tier)
}

// readRTCP drains the sender's RTCP so the interceptors (NACK responder,
// reports) run. A viewer's PLI cannot reach the camera; the hub starts every
// reader on a keyframe and cameras send them regularly.
func (e *Engine) readRTCP(s *webrtc.RTPSender) {
	buf := make([]byte, 1500)
	for {
		if _, _, err := s.Read(buf); err != nil {
			return
		}
	}
}

// maxCatchUp bounds the access units a viewer keeps while it connects.
const maxCatchUp = 600

// catchUpSpeed is how much faster than real time a new viewer gets the kept
// GOP. All at once, a second of 4 Mbit/s video reached the viewer's socket
// in one burst: with many viewers joining together their receive buffers
// overflowed, and the retransmissions they asked for took a third of the
// server's CPU while later viewers waited for their answers (50 pion
// viewers joining at once: answer p99 307–842 ms, paced 108–452 ms in
// alternating runs). The keyframe still goes at once; a 1 s GOP is
// through in 250 ms.
const catchUpSpeed = 4

// maxCatchUpStep bounds one wait, should the GOP's timestamps jump.
const maxCatchUpStep = 100 * time.Millisecond

// catchUpWait is how long to wait, elapsed into the catch-up, before
// sending au of the GOP that starts at key.
func catchUpWait(key, au *busv1.AccessUnit, elapsed time.Duration) time.Duration {
	clock := au.ClockRate
	if clock == 0 {
		clock = 90000
	}
	due := time.Duration(au.RtpTimestamp-key.RtpTimestamp) * time.Second / time.Duration(clock) / catchUpSpeed
	return min(due-elapsed, maxCatchUpStep)
}

// send writes the camera's access units to the viewer's track until the
// session ends. Packets written before DTLS completes are lost, so while the
// viewer connects it keeps the GOP from the newest keyframe and sends it
// once connected, paced at catchUpSpeed: the browser decodes at once, and
// its decoder gets every reference picture.
func (e *Engine) send(v *viewer) {
	defer e.endViewer(v, "sender stopped")
	t := time.NewTimer(e.cfg.ConnectTimeout)
	defer t.Stop()
	gop := make([]*busv1.AccessUnit, 0, 64)
	if v.first != nil {
		gop = append(gop, v.first)
	}
	for waiting := true; waiting; {
		select {
		case <-v.connected:
			waiting = false
		case <-v.done:
			return
		case <-t.C:
			e.log.Info("whep viewer never connected", "camera", v.cam, "session", v.id)
			return
		case au, ok := <-v.reader.C():
			if !ok {
				return
			}
			switch {
			case au.Keyframe:
				clear(gop)
				gop = append(gop[:0], au)
			case len(gop) > 0 && len(gop) < maxCatchUp:
				gop = append(gop, au)
			default:
				// No keyframe kept, or a GOP too long to replay: start at
				// the next keyframe.
				clear(gop)
				gop = gop[:0]
			}
		}
	}
	shared, release := e.packets.acquire(packetStream{cam: v.cam, codec: v.codec, transcoded: v.leaveTranscode != nil})
	defer release()
	p := packetizer{codec: v.codec, track: v.track, shared: shared}
	t.Stop()
	caughtUp := time.Now()
	for i, au := range gop {
		if i > 0 {
			if d := catchUpWait(gop[0], au, time.Since(caughtUp)); d > 0 {
				t.Reset(d)
				select {
				case <-v.done:
					return
				case <-t.C:
				}
			}
		}
		if err := p.write(au); err != nil {
			return
		}
		v.rtpSent.Add(1)
	}
	waitKey := len(gop) == 0
	if !waitKey {
		v.audio.start()
	}
	clear(gop)
	gop = nil
	for {
		select {
		case <-v.done:
			return
		case au, ok := <-v.reader.C():
			if !ok {
				return
			}
			if waitKey {
				if !au.Keyframe {
					continue
				}
				waitKey = false
				v.audio.start()
			}
			// A write error is a closing transport; v.done follows.
			if p.write(au) == nil {
				v.rtpSent.Add(1)
			}
		}
	}
}

// packetizer turns access units into RTP packets (RFC 6184 / RFC 7741) with
// the camera's RTP timestamps, so a browser's requestVideoFrameCallback
// rtpTimestamp equals AccessUnit.rtp_timestamp and overlays match frames.
// H.264 and H.265 payloads come from the stream's sharedPackets.
type packetizer struct {
	codec  busv1.Codec
	track  *viewerTrack
	shared *sharedPackets
	vp8    codecs.VP8Payloader
	vp9    codecs.VP9Payloader
	seq    uint16
}

func (p *packetizer) write(au *busv1.AccessUnit) error {
	var payloads [][]byte
	switch p.codec {
	case busv1.Codec_CODEC_H264, busv1.Codec_CODEC_H265:
		payloads = p.shared.payloads(au)
	case busv1.Codec_CODEC_VP8:
		payloads = p.vp8.Payload(rtpMTU, au.Data)
	case busv1.Codec_CODEC_VP9:
		payloads = p.vp9.Payload(rtpMTU, au.Data)
	}
	for i, payload := range payloads {
		// A header of its own each time: the NACK responder keeps the
		// header it is given for retransmission.
		h := &rtp.Header{
			Version:        2,
			Marker:         i == len(payloads)-1,
			SequenceNumber: p.seq,
			Timestamp:      au.RtpTimestamp,
		}
		p.seq++
		if err := p.track.write(h, payload); err != nil {
			return err
		}
	}
	return nil
}

// resultJSON is one message of the results channel (webapp/src/overlay.ts).
type resultJSON struct {
	RTPTimestamp uint32          `json:"rtp_timestamp"`
	PTS          int64           `json:"pts"`
	Width        uint32          `json:"width"`
	Height       uint32          `json:"height"`
	Pipeline     string          `json:"pipeline,omitempty"`
	Detections   []detectionJSON `json:"detections"`
}

type detectionJSON struct {
	X       float32 `json:"x"`
	Y       float32 `json:"y"`
	W       float32 `json:"w"`
	H       float32 `json:"h"`
	Label   string  `json:"label"`
	Score   float32 `json:"score"`
	TrackID int64   `json:"track_id"`
}

// MarshalResult encodes a result as the results channel sends it.
func MarshalResult(r *busv1.Result) ([]byte, error) {
	m := resultJSON{RTPTimestamp: r.RtpTimestamp, PTS: r.Pts, Width: r.Width, Height: r.Height, Pipeline: r.Pipeline,
		Detections: make([]detectionJSON, len(r.Detections))}
	for i, d := range r.Detections {
		m.Detections[i] = detectionJSON{X: d.X, Y: d.Y, W: d.W, H: d.H, Label: d.Label, Score: d.Score, TrackID: d.TrackId}
	}
	return json.Marshal(&m)
}

func (e *Engine) startResults(v *viewer, dc *webrtc.DataChannel) {
	v.unsubMu.Lock()
	defer v.unsubMu.Unlock()
	select {
	case <-v.done:
		return
	default:
	}
	if v.unsub != nil {
		return
	}
	limit := e.cfg.ResultsBufferLimit
	unsub, err := v.results.SubscribeResults(v.cam, func(r *busv1.Result) {
		if dc.ReadyState() != webrtc.DataChannelStateOpen {
			return
		}
		if dc.BufferedAmount() > limit {
			// A viewer on a slow link loses overlays, never video.
			v.resultsDrops.Add(1)
			return
		}
		b, err := MarshalResult(r)
		if err != nil {
			return
		}
		// Sent the moment the pipeline published it, one message per result
		// (no batching). Text messages: JSON.parse in the page takes them.
		if dc.SendText(string(b)) == nil {
			v.resultsSent.Add(1)
		}
	})
	if err != nil {
		e.log.Warn("whep viewer: results unavailable", "camera", v.cam, "err", err)
		return
	}
	v.unsub = unsub
}

// PatchViewer applies a trickle-ICE SDP fragment (RFC 9725 §4.3.1) to a
// session. Errors: ErrSessionNotFound, ErrBadSDP, ErrNotSupported (ICE
// restart).
func (e *Engine) PatchViewer(id, sdpFragment string) error {
	v := e.get(id)
	if v == nil {
		return ErrSessionNotFound
	}
	return addCandidates(v.pc, sdpFragment)
}

// CloseSession ends a viewer session (WHEP DELETE); ErrSessionNotFound for
// an unknown id.
func (e *Engine) CloseSession(id string) error {
	v := e.get(id)
	if v == nil {
		return ErrSessionNotFound
	}
	e.endViewer(v, "deleted")
	return nil
}

// SessionCamera is the camera of a session, "" when unknown.
func (e *Engine) SessionCamera(id string) string {
	if v := e.get(id); v != nil {
		return v.cam
	}
	return ""
}

// Sessions is the number of live viewer sessions.
func (e *Engine) Sessions() int { return e.viewers.len() }

// Pending is the number of sessions, viewers and publishers, answered but
// not yet connected (EngineConfig.Pending).
func (e *Engine) Pending() int { return e.cfg.Pending.Pending() }

// Drops returns, per camera, what its viewers lost by being slow (ended
// sessions included), for metrics.
func (e *Engine) Drops() map[string]Drops {
	var out map[string]Drops
	// Under the registry's lock, so an ending session is counted once.
	e.viewers.locked(func(live map[string]*viewer) {
		out = make(map[string]Drops, len(e.drops))
		for cam, d := range e.drops {
			out[cam] = *d
		}
		for _, v := range live {
			d := out[v.cam]
			d.Video += v.reader.Dropped()
			d.Results += v.resultsDrops.Load()
			out[v.cam] = d
		}
	})
	return out
}

func (e *Engine) get(id string) *viewer {
	v, _ := e.viewers.get(id)
	return v
}

// endViewerAsync ends a session from a pion callback.
func (e *Engine) endViewerAsync(v *viewer, why string) {
	e.viewers.async(v.id, func() { e.endViewer(v, why) })
}

func (e *Engine) endViewer(v *viewer, why string) {
	v.once.Do(func() {
		e.viewers.remove(v.id, func() {
			d := e.drops[v.cam]
			d.Video += v.reader.Dropped()
			d.Results += v.resultsDrops.Load()
		})
		close(v.done)
		v.connecting()
		v.unsubMu.Lock()
		if v.unsub != nil {
			v.unsub()
		}
		v.unsubMu.Unlock()
		v.reader.Close()
		if v.leaveTranscode != nil {
			v.leaveTranscode()
		}
		var audioSent uint64
		if v.audio != nil {
			v.audio.release()
			audioSent = v.audio.sent.Load()
		}
		_ = v.pc.Close()
		e.log.Info("whep viewer ended", "camera", v.cam, "session", v.id, "reason", why,
			"access_units", v.rtpSent.Load(), "audio_frames", audioSent, "results", v.resultsSent.Load())
	})
}
