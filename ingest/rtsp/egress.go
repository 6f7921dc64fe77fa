package rtsp

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
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

	// Set before ready is closed, read-only after.
	ready  chan struct{}
	stream *gortsplib.ServerStream
	media  *description.Media
	forma  format.Format
	codec  busv1.Codec
	err    error
	enc    nalEncoder
	sps    []byte

	stopCh   chan struct{}
	stopOnce sync.Once

	// Guarded by s.mu.
	sessions  map[*gortsplib.ServerSession]*egressReader
	idleSince time.Time
	dead      bool

	// Pump-only scratch, reused for every access unit.
	targets []*egressReader
}

// egressReader is one reader session of a feed.
type egressReader struct {
	ss *gortsplib.ServerSession
	// playing is set by PLAY (guarded by s.mu); packets written before
	// would be dropped by gortsplib anyway.
	playing bool
	// waitKey holds the session until the next keyframe (pump only).
	waitKey bool
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
	r, err := s.Hub.Subscribe(cam, "rtsp", egressDepth)
	if err != nil {
		return nil, fmt.Errorf("hub subscribe: %w", err)
	}
	e := &egress{
		s:         s,
		cam:       cam,
		reader:    r,
		ready:     make(chan struct{}),
		stopCh:    make(chan struct{}),
		sessions:  make(map[*gortsplib.ServerSession]*egressReader),
		idleSince: time.Now(),
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

// play lets the feed write to ss.
func (s *Server) play(e *egress, ss *gortsplib.ServerSession) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := e.sessions[ss]; r != nil {
		r.playing = true
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
// are the only source of the SDP's sprop parameters.
func (e *egress) waitKeyframe() bool {
	t := time.NewTimer(e.s.DescribeTimeout)
	defer t.Stop()
	for {
		select {
		case au, ok := <-e.reader.C():
			if !ok {
				return false
			}
			if !au.Keyframe {
				continue
			}
			if err := e.open(au); err != nil {
				e.s.log.Debug("rtsp feed not usable yet", "camera", e.cam, "err", err)
				continue
			}
			close(e.ready)
			return true
		case <-t.C:
			e.err = errNoKey
			return false
		case <-e.stopCh:
			return false
		}
	}
}

// paramsOf picks the parameter sets out of a keyframe.
func paramsOf(au *busv1.AccessUnit) (vps, sps, pps []byte) {
	return h26x.ParamSets(videoCodec(au.Codec), au.Nalus)
}

func (e *egress) open(au *busv1.AccessUnit) error {
	vps, sps, pps := paramsOf(au)
	if sps == nil || pps == nil {
		return errors.New("keyframe without SPS/PPS")
	}
	switch au.Codec {
	case busv1.Codec_CODEC_H264:
		f := &format.H264{PayloadTyp: payloadType, SPS: sps, PPS: pps, PacketizationMode: 1}
		enc, err := f.CreateEncoder()
		if err != nil {
			return err
		}
		e.forma, e.enc = f, enc
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
	st := &gortsplib.ServerStream{Server: e.s.srv, Desc: &description.Session{Medias: []*description.Media{e.media}}}
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
		if r.playing {
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
	for _, r := range e.targets {
		if r.waitKey {
			if !au.Keyframe {
				continue
			}
			r.waitKey = false
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
