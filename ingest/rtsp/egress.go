package rtsp

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/headers"
	"github.com/pion/rtp"

	"github.com/imageflowcanvas/imageflow/bus/hub"
	"github.com/imageflowcanvas/imageflow/media/h26x"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// Timing of a camera feed to RTSP readers.
const (
	// egressLinger keeps a feed without sessions alive for the gap between
	// DESCRIBE and SETUP and for quick reconnects.
	egressLinger = 2 * time.Second
	// egressSilence ends a feed whose camera sent nothing for this long, so
	// readers reconnect (and get a fresh SDP) instead of hanging.
	egressSilence = 10 * time.Second
	// egressDepth is the hub queue of a feed, in access units.
	egressDepth = 64
	// egressAudioDepth is the hub queue of a feed's audio, in frames.
	egressAudioDepth = 128
	// audioProbe is how long after a feed starts its first keyframe waits
	// for the camera's audio to show, so the SDP names the audio track.
	// Audio frames come every 20-60 ms; a camera without audio delays its
	// first reader's DESCRIBE by at most this.
	audioProbe  = 600 * time.Millisecond
	payloadType = 96
)

var (
	errFeedEnded = errors.New("camera feed ended")
	errNoKey     = errors.New("no H264/H265 keyframe from the camera in time")
)

type nalEncoder interface {
	Encode(au [][]byte) ([]*rtp.Packet, error)
}

// egress is one camera served to RTSP readers: one hub reader and one RTP
// packetizer per camera, shared by every reader session. The ServerStream
// only describes the camera (SDP, SETUP); packets go to each session itself
// so every reader starts on a keyframe instead of mid-GOP.
type egress struct {
	s      *Server
	cam    string
	reader *hub.Reader
	// audioReader is the camera's audio; nil after the feed found none.
	audioReader *hub.Reader
	started     time.Time

	// Set before ready is closed, read-only after.
	ready  chan struct{}
	stream *gortsplib.ServerStream
	media  *description.Media
	forma  format.Format
	codec  busv1.Codec
	err    error
	enc    nalEncoder
	sps    []byte
	// audio is the camera's audio track, nil when it has none.
	audio *egressAudio

	stopCh   chan struct{}
	stopOnce sync.Once

	// Guarded by s.mu.
	sessions  map[*gortsplib.ServerSession]*egressReader
	idleSince time.Time
	dead      bool

	// Pump-only scratch, reused for every access unit.
	targets []*egressReader
	// frames is the access unit as interleaved frames for framesRoute's
	// channel and SSRC (framesOK: built for the current access unit).
	frames      []byte
	framesRoute directRoute
	framesOK    bool
}

// egressReader is one reader session of a feed.
type egressReader struct {
	ss *gortsplib.ServerSession
	// playing is set by PLAY (guarded by s.mu); packets written before
	// would be dropped by gortsplib anyway.
	playing bool
	// waitKey holds the session until the next keyframe (pump only).
	waitKey bool
	// video and audio tell which of the feed's tracks the reader set up
	// (set by PLAY).
	video, audio bool
	// direct, when set (by PLAY), is how the pump writes the reader's
	// video: onto its connection itself rather than through gortsplib.
	direct directRoute
	// closing is set once the pump closed the session after a write
	// error (pump only).
	closing bool
}

// directRoute is a TCP reader's connection with the interleaved channel
// and SSRC of its video: the pump writes a whole access unit of
// interleaved frames there in one call. gortsplib's WritePacketRTP costs,
// per packet and reader, a new 1.5 kB buffer, a closure, a queue hop to the
// session's writer goroutine, a write deadline and a copy: a third of the
// relay's garbage and most of its scheduling.
type directRoute struct {
	conn    *batchConn
	channel byte
	ssrc    uint32
}

// directVideo is the route of a session's video, or the zero route (write
// through gortsplib) for UDP, SRTP, a connection not ours, or a video
// track whose channel and SSRC the SETUP responses do not tell.
func directVideo(e *egress, ss *gortsplib.ServerSession, c *gortsplib.ServerConn, setups []*base.Response) directRoute {
	if t := ss.SetuppedTransport(); t == nil || *t != gortsplib.TransportTCP || ss.SetuppedSecure() {
		return directRoute{}
	}
	conn, ok := c.NetConn().(*batchConn)
	if !ok {
		return directRoute{}
	}
	m, ok := ss.Stats().Medias[e.media]
	if !ok || len(m.Formats) != 1 {
		return directRoute{}
	}
	var ssrc uint32
	for _, f := range m.Formats {
		ssrc = f.LocalSSRC
	}
	// Every play session of a stream sends with the stream's SSRC, one per
	// track: the SETUP response naming it is the video's.
	found := 0
	route := directRoute{conn: conn, ssrc: ssrc}
	for _, res := range setups {
		var th headers.Transport
		if res.StatusCode != base.StatusOK || th.Unmarshal(res.Header["Transport"]) != nil ||
			th.SSRC == nil || *th.SSRC != ssrc || th.InterleavedIDs == nil {
			continue
		}
		if ch := th.InterleavedIDs[0]; ch >= 0 && ch <= 255 {
			route.channel = byte(ch)
			found++
		}
	}
	if found != 1 {
		return directRoute{}
	}
	return route
}

// getEgress returns the live feed of cam or starts one.
func (s *Server) getEgress(cam string) (*egress, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("server closing")
	}
	if e := s.egress[cam]; e != nil && !e.dead {
		if len(e.sessions) == 0 {
			e.idleSince = time.Now()
		}
		return e, nil
	}
	r, err := s.Hub.SubscribeLatest(cam, "rtsp", egressDepth)
	if err != nil {
		return nil, fmt.Errorf("hub subscribe: %w", err)
	}
	ar, err := s.Hub.SubscribeAudio(cam, "rtsp", egressAudioDepth)
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("hub subscribe audio: %w", err)
	}
	e := &egress{
		s:           s,
		cam:         cam,
		reader:      r,
		audioReader: ar,
		started:     time.Now(),
		ready:       make(chan struct{}),
		stopCh:      make(chan struct{}),
		sessions:    make(map[*gortsplib.ServerSession]*egressReader),
		idleSince:   time.Now(),
	}
	s.egress[cam] = e
	s.wg.Add(1)
	go e.run()
	return e, nil
}

// attach counts a reader session on e; false when e already ended.
func (s *Server) attach(e *egress, ss *gortsplib.ServerSession) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.dead {
		return false
	}
	e.sessions[ss] = &egressReader{ss: ss, waitKey: true}
	ss.SetUserData(&sessionData{eg: e})
	return true
}

// play lets the feed write to ss, its video through route when set.
func (s *Server) play(e *egress, ss *gortsplib.ServerSession, route directRoute) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := e.sessions[ss]; r != nil {
		r.playing = true
		r.direct = route
		for _, m := range ss.SetuppedMedias() {
			switch {
			case m == e.media:
				r.video = true
			case e.audio != nil && m == e.audio.media:
				r.audio = true
			}
		}
	}
}

func (s *Server) detach(e *egress, ss *gortsplib.ServerSession) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(e.sessions, ss)
	if len(e.sessions) == 0 {
		e.idleSince = time.Now()
	}
}

func (e *egress) stop() { e.stopOnce.Do(func() { close(e.stopCh) }) }

func (e *egress) run() {
	defer e.s.wg.Done()
	defer e.cleanup()
	if !e.waitKeyframe() {
		return
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastAU := time.Now()
	for {
		select {
		case au, ok := <-e.reader.C():
			if !ok {
				return
			}
			if au.Codec != e.codec {
				e.s.log.Info("rtsp feed codec changed, closing readers", "camera", e.cam)
				return
			}
			lastAU = time.Now()
			e.write(au)
		case au, ok := <-e.audioC():
			if !ok {
				e.audioReader = nil
				continue
			}
			e.writeAudio(au)
		case now := <-tick.C:
			e.s.mu.Lock()
			idle := len(e.sessions) == 0 && now.Sub(e.idleSince) > egressLinger
			e.s.mu.Unlock()
			if idle || now.Sub(lastAU) > egressSilence {
				return
			}
		case <-e.stopCh:
			return
		}
	}
}

func (e *egress) cleanup() {
	e.s.mu.Lock()
	e.dead = true
	if e.s.egress[e.cam] == e {
		delete(e.s.egress, e.cam)
	}
	e.s.mu.Unlock()
	e.reader.Close()
	e.closeAudio()
	select {
	case <-e.ready:
	default:
		if e.err == nil {
			e.err = errFeedEnded
		}
		close(e.ready)
	}
	if e.stream != nil {
		e.stream.Close()
	}
}

// waitKeyframe builds the stream from the first keyframe: its parameter sets
// are the only source of the SDP's sprop parameters. The camera's audio
// track, when it shows within audioProbe, joins the SDP.
func (e *egress) waitKeyframe() bool {
	t := time.NewTimer(e.s.DescribeTimeout)
	defer t.Stop()
	var key, firstAudio *busv1.AccessUnit
	var probe <-chan time.Time
	for {
		select {
		case au, ok := <-e.reader.C():
			if !ok {
				return false
			}
			if !au.Keyframe || key != nil {
				continue
			}
			key = au
			if firstAudio == nil {
				if wait := audioProbe - time.Since(e.started); wait > 0 {
					pt := time.NewTimer(wait)
					defer pt.Stop()
					probe = pt.C
					continue
				}
			}
		case au, ok := <-e.audioC():
			if !ok {
				e.audioReader = nil
				continue
			}
			if firstAudio == nil {
				firstAudio = au
			}
			if key == nil {
				continue
			}
		case <-probe:
		case <-t.C:
			e.err = errNoKey
			return false
		case <-e.stopCh:
			return false
		}
		if key == nil {
			continue
		}
		if err := e.open(key, firstAudio); err != nil {
			e.s.log.Debug("rtsp feed not usable yet", "camera", e.cam, "err", err)
			key, probe = nil, nil
			continue
		}
		if e.audio == nil {
			// Nothing to relay: stop paying for the camera's audio.
			e.closeAudio()
		}
		close(e.ready)
		return true
	}
}

// audioC is the feed's audio channel, nil (never ready) without audio.
func (e *egress) audioC() <-chan *busv1.AccessUnit {
	if e.audioReader == nil {
		return nil
	}
	return e.audioReader.C()
}

func (e *egress) closeAudio() {
	if e.audioReader != nil {
		e.audioReader.Close()
		e.audioReader = nil
	}
}

// paramsOf picks the parameter sets out of a keyframe.
func paramsOf(au *busv1.AccessUnit) (vps, sps, pps []byte) {
	return h26x.ParamSets(videoCodec(au.Codec), au.Nalus)
}

func (e *egress) open(au, firstAudio *busv1.AccessUnit) error {
	vps, sps, pps := paramsOf(au)
	if sps == nil || pps == nil {
		return errors.New("keyframe without SPS/PPS")
	}
	switch au.Codec {
	case busv1.Codec_CODEC_H264:
		f := &format.H264{PayloadTyp: payloadType, SPS: sps, PPS: pps, PacketizationMode: 1}
		e.forma, e.enc = f, newH264Packetizer(payloadType)
	case busv1.Codec_CODEC_H265:
		if vps == nil {
			return errors.New("keyframe without VPS")
		}
		f := &format.H265{PayloadTyp: payloadType, VPS: vps, SPS: sps, PPS: pps}
		enc, err := f.CreateEncoder()
		if err != nil {
			return err
		}
		e.forma, e.enc = f, enc
	default:
		return fmt.Errorf("codec %v cannot be served over RTSP", au.Codec)
	}
	e.codec, e.sps = au.Codec, sps
	e.media = &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{e.forma}}
	medias := []*description.Media{e.media}
	if firstAudio != nil {
		a, err := newEgressAudio(firstAudio)
		if err != nil {
			e.s.log.Info("rtsp feed without audio", "camera", e.cam, "err", err)
		} else {
			e.audio = a
			medias = append(medias, a.media)
		}
	}
	st := &gortsplib.ServerStream{Server: e.s.srv, Desc: &description.Session{Medias: medias}}
	if err := st.Initialize(); err != nil {
		return err
	}
	e.stream = st
	return nil
}

// write repacketizes one access unit once and sends it to every playing
// reader, keeping the source's RTP timestamp so overlays keyed on it match.
func (e *egress) write(au *busv1.AccessUnit) {
	if au.Keyframe {
		e.refreshParams(au)
	}
	e.s.mu.Lock()
	e.targets = e.targets[:0]
	for _, r := range e.sessions {
		if r.playing && r.video {
			e.targets = append(e.targets, r)
		}
	}
	e.s.mu.Unlock()
	if len(e.targets) == 0 {
		return
	}
	pkts, err := e.enc.Encode(au.Nalus)
	if err != nil {
		return
	}
	for _, p := range pkts {
		p.Timestamp = au.RtpTimestamp
	}
	sent := false
	e.framesOK = false
	for _, r := range e.targets {
		if r.waitKey {
			if !au.Keyframe {
				continue
			}
			r.waitKey = false
		}
		if r.direct.conn != nil {
			if e.writeDirect(r, pkts) {
				sent = true
			}
			continue
		}
		for _, p := range pkts {
			// Queued per session (WriteQueueSize); a full queue drops there,
			// never blocking the other readers. The reader then resumes at
			// the next keyframe rather than decode a broken picture chain.
			if err := r.ss.WritePacketRTP(e.media, p); err != nil {
				e.s.writeErrs.add(1, "camera", e.cam, "err", err)
				r.waitKey = true
				break
			}
		}
		sent = true
	}
	if sent && e.s.OnLatency != nil && au.CompleteUnixNano != 0 {
		e.s.OnLatency(e.cam, time.Since(time.Unix(0, au.CompleteUnixNano)))
	}
}

// writeDirect queues the access unit's packets on a reader's connection
// in one call; false when the reader did not get it (it then resumes at
// the next keyframe).
func (e *egress) writeDirect(r *egressReader, pkts []*rtp.Packet) bool {
	if r.closing {
		return false
	}
	route := r.direct
	route.conn = nil
	if !e.framesOK || e.framesRoute != route {
		e.frames = appendInterleaved(e.frames[:0], pkts, route.channel, route.ssrc)
		e.framesRoute, e.framesOK = route, true
	}
	err := r.direct.conn.writeMedia(e.frames)
	switch {
	case err == nil:
		return true
	case errors.Is(err, errMediaHeld):
		// Not playing yet (the PLAY response is on its way) or ended.
	case errors.Is(err, errBatchFull):
		e.s.writeErrs.add(1, "camera", e.cam, "err", err)
	default:
		// The connection failed (a reader stuck past the write timeout):
		// gortsplib may never notice on a connection it does not write to.
		e.s.writeErrs.add(1, "camera", e.cam, "err", err)
		r.closing = true
		r.ss.Close()
	}
	r.waitKey = true
	return false
}

// appendInterleaved appends packets as RTSP interleaved frames (RFC 2326
// §10.12: '$', channel, 16-bit length, the RTP packet) sent with ssrc.
func appendInterleaved(dst []byte, pkts []*rtp.Packet, channel byte, ssrc uint32) []byte {
	n := len(dst)
	for _, p := range pkts {
		n += 4 + p.MarshalSize()
	}
	dst = slices.Grow(dst, n-len(dst))
	for _, p := range pkts {
		p.SSRC = ssrc
		size := p.MarshalSize()
		if size > 0xffff {
			continue // cannot be framed; the packetizers never make one
		}
		at := len(dst)
		dst = append(dst, '$', channel, byte(size>>8), byte(size))
		dst = dst[:at+4+size]
		if _, err := p.MarshalTo(dst[at+4:]); err != nil {
			// Never with a buffer of MarshalSize; drop the frame whole.
			dst = dst[:at]
		}
	}
	return dst
}

// writeAudio sends one audio frame to every playing reader of the audio
// track whose video has started (a reader that set up audio only starts at
// once), so sound and pictures begin together.
func (e *egress) writeAudio(au *busv1.AccessUnit) {
	if e.audio == nil {
		return
	}
	e.s.mu.Lock()
	e.targets = e.targets[:0]
	for _, r := range e.sessions {
		if r.playing && r.audio && (!r.video || !r.waitKey) {
			e.targets = append(e.targets, r)
		}
	}
	e.s.mu.Unlock()
	if len(e.targets) == 0 {
		return
	}
	pkts := e.audio.packets(au)
	for _, r := range e.targets {
		for _, p := range pkts {
			// A full queue loses this frame only; audio has no chain to break.
			if err := r.ss.WritePacketRTP(e.audio.media, p); err != nil {
				e.s.writeErrs.add(1, "camera", e.cam, "err", err)
				break
			}
		}
	}
}

// refreshParams updates the SDP for later readers when the camera's
// parameter sets change (a restarted publisher with another resolution).
func (e *egress) refreshParams(au *busv1.AccessUnit) {
	vps, sps, pps := paramsOf(au)
	if sps == nil || pps == nil || bytes.Equal(sps, e.sps) {
		return
	}
	e.sps = append([]byte(nil), sps...)
	switch f := e.forma.(type) {
	case *format.H264:
		f.SafeSetParams(e.sps, append([]byte(nil), pps...))
	case *format.H265:
		if vps != nil {
			f.SafeSetParams(append([]byte(nil), vps...), e.sps, append([]byte(nil), pps...))
		}
	}
}
