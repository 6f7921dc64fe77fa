package rtsp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/auth"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/headers"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
	"github.com/pion/rtp"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/bus/hub"
	"github.com/imageflowcanvas/imageflow/ingest"
)

// SourcePublish is the CameraInfo.Source of a camera that is pushed to the
// server (ANNOUNCE/RECORD) rather than pulled.
const SourcePublish = "publish"

// CameraInfo is what the server needs to know about a camera.
type CameraInfo struct {
	// Source is the camera's source URL, or SourcePublish.
	Source string
	// Enabled is false for a camera switched off; publishing to it is refused.
	Enabled bool
}

// Cameras looks cameras up; any error answers 404 (return ErrCameraNotFound
// for an unknown id).
type Cameras interface {
	LookupCamera(id string) (CameraInfo, error)
}

// Hub is the part of bus/hub the server reads cameras from. A feed starts
// from the camera's kept keyframe, so DESCRIBE does not wait for the next.
type Hub interface {
	SubscribeLatest(cam, kind string, depth int) (*hub.Reader, error)
	SubscribeAudio(cam, kind string, depth int) (*hub.Reader, error)
}

// Authenticator decides whether user/pass may publish (publish=true) or read
// camera id. The server asks RTSP clients for Basic credentials, since the
// decision needs the clear password.
type Authenticator func(id, user, pass string, publish bool) bool

// Publishers hands out the sink of a camera being published and a release
// func to call when the publisher leaves; it returns an error when another
// publisher holds the camera.
type Publishers func(id string) (ingest.Sink, func(), error)

// Server is the RTSP server: publishers push cameras in, readers play any
// camera out of the hub. Exported fields are configuration; set them before
// Start.
type Server struct {
	// Address is the RTSP TCP address (":8554" when empty); port 0 picks a
	// free port, Addr tells which.
	Address string
	// UDPAddress enables the UDP transport when set (":8000"): RTP on that
	// even port, RTCP on the next one. Port 0 picks a free pair. Empty
	// serves TCP only.
	UDPAddress string
	// Cameras looks cameras up (required).
	Cameras Cameras
	// Hub feeds readers (required).
	Hub Hub
	// Publishers gives publishers their sink; nil refuses every publisher.
	Publishers Publishers
	// Authenticator checks credentials; nil lets everyone in.
	Authenticator Authenticator
	// Logger receives the server's log lines; slog.Default() when nil.
	Logger *slog.Logger
	// DescribeTimeout bounds the wait for a camera's first keyframe before
	// DESCRIBE answers 503; 5 s when zero.
	DescribeTimeout time.Duration
	// ReadTimeout closes a connection that does not complete a request
	// within it (idle, or sending half a request) while no media flows on
	// it, and a publisher that stops sending for that long; 10 s when
	// zero.
	ReadTimeout time.Duration
	// OnLatency, when set, is called for every access unit written to
	// readers with the time since it was complete on the bus (for metrics).
	OnLatency func(camera string, d time.Duration)

	log        *slog.Logger
	lost       rateLog
	decodeErrs rateLog
	writeErrs  rateLog
	srv        *gortsplib.Server
	tcpAddr    net.Addr
	udpAddr    net.Addr
	ctx        context.Context
	cancel     context.CancelFunc
	wg         sync.WaitGroup

	mu      sync.Mutex
	egress  map[string]*egress
	started bool
	closed  bool
	done    chan struct{}
	err     error
}

// writeTimeout bounds a write to a client (gortsplib's default).
const writeTimeout = 10 * time.Second

// serverHandler carries the gortsplib callbacks, so they stay out of
// Server's exported API.
type serverHandler struct{ *Server }

// sessionData is what the server keeps on a gortsplib session.
type sessionData struct {
	pub *publisher
	eg  *egress
	// conn is the connection that started media, whose request deadline
	// is off until the session closes.
	conn atomic.Pointer[batchConn]
	// setups are a reader's SETUP responses: gortsplib fills in their
	// Transport headers (interleaved channels, SSRC), which PLAY reads to
	// write the video itself (directVideo). Touched only by the session's
	// own requests, which gortsplib handles one at a time.
	setups []*base.Response
}

// streaming lifts the request deadline of the connection that plays or
// records the session.
func (sd *sessionData) streaming(c *gortsplib.ServerConn) {
	if b, ok := c.NetConn().(*batchConn); ok {
		sd.conn.Store(b)
		b.setStreaming(true)
	}
}

// publisher is one camera being pushed into the server.
type publisher struct {
	cam     string
	sink    ingest.Sink
	release func()
	video   *videoTrack
	vmedia  *description.Media
	vforma  format.Format
	audio   *audioTrack
	amedia  *description.Media
	aforma  format.Format
}

// Start opens the listeners and serves until Close.
func (s *Server) Start() error {
	if s.Cameras == nil || s.Hub == nil {
		return fmt.Errorf("%w: Cameras and Hub are required", ErrBadConfig)
	}
	if s.Address == "" {
		s.Address = ":8554"
	}
	if s.DescribeTimeout <= 0 {
		s.DescribeTimeout = 5 * time.Second
	}
	if s.ReadTimeout <= 0 {
		s.ReadTimeout = 10 * time.Second
	}
	s.log = s.Logger
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("component", "rtsp-server")
	s.lost = rateLog{log: s.log, msg: "rtp packets lost"}
	s.decodeErrs = rateLog{log: s.log, msg: "rtp decode errors"}
	s.writeErrs = rateLog{log: s.log, msg: "rtsp reader write errors (queue full)"}
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return fmt.Errorf("%w: already started", ErrBadConfig)
	}
	s.started = true
	s.egress = make(map[string]*egress)
	s.done = make(chan struct{})
	s.mu.Unlock()

	// Listening ourselves lets port 0 work and tells us the real address.
	ln, err := net.Listen("tcp", s.Address)
	if err != nil {
		return fmt.Errorf("rtsp listen %s: %w", s.Address, err)
	}
	s.tcpAddr = ln.Addr()
	srv := &gortsplib.Server{
		Handler:     serverHandler{s},
		RTSPAddress: ln.Addr().String(),
		// Readers' packets leave in batches, not one syscall each.
		Listen: func(string, string) (net.Listener, error) {
			return batchListener{Listener: ln, requestTimeout: s.ReadTimeout, writeTimeout: writeTimeout}, nil
		},
		ReadTimeout:  s.ReadTimeout,
		WriteTimeout: writeTimeout,
		// A 4K keyframe is several hundred packets; the default 256 would
		// drop part of it for every reader.
		WriteQueueSize: 2048,
	}
	if s.Authenticator != nil {
		srv.AuthMethods = []auth.VerifyMethod{auth.VerifyMethodBasic}
	}
	if s.UDPAddress != "" {
		rtpConn, rtcpConn, err := listenUDPPair(udpOnRTSPHost(s.UDPAddress, s.Address))
		if err != nil {
			ln.Close()
			return err
		}
		s.udpAddr = rtpConn.LocalAddr()
		srv.UDPRTPAddress = rtpConn.LocalAddr().String()
		srv.UDPRTCPAddress = rtcpConn.LocalAddr().String()
		srv.ListenPacket = func(_, addr string) (net.PacketConn, error) {
			switch addr {
			case srv.UDPRTPAddress:
				return rtpConn, nil
			case srv.UDPRTCPAddress:
				return rtcpConn, nil
			}
			return nil, fmt.Errorf("unexpected UDP listen %s", addr)
		}
	}
	// Handlers may run as soon as Start returns (even before): everything
	// they read is set first.
	s.srv = srv
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if err := srv.Start(); err != nil {
		s.cancel()
		ln.Close()
		return fmt.Errorf("rtsp server: %w", err)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		err := srv.Wait()
		s.mu.Lock()
		if !s.closed {
			s.err = err
		}
		s.mu.Unlock()
		close(s.done)
	}()
	s.log.Info("rtsp server listening", "addr", s.Addr(), "udp", s.UDPAddr())
	return nil
}

// udpOnRTSPHost gives a UDP address without a host the host of the RTSP
// address, so an RTSP server kept on loopback does not open its media ports
// on every interface.
func udpOnRTSPHost(udp, rtsp string) string {
	uh, up, err := net.SplitHostPort(udp)
	if err != nil || uh != "" {
		return udp
	}
	rh, _, err := net.SplitHostPort(rtsp)
	if err != nil || rh == "" {
		return udp
	}
	return net.JoinHostPort(rh, up)
}

// listenUDPPair opens the RTP port (even) and the RTCP port (RTP+1) that
// gortsplib requires; port 0 tries random pairs.
func listenUDPPair(addr string) (net.PacketConn, net.PacketConn, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: UDPAddress %q: %v", ErrBadConfig, addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65534 || port%2 != 0 {
		return nil, nil, fmt.Errorf("%w: UDPAddress %q: port must be even", ErrBadConfig, addr)
	}
	for range 50 {
		p := port
		var rtpConn net.PacketConn
		if p == 0 {
			c, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
			if err != nil {
				return nil, nil, err
			}
			p = c.LocalAddr().(*net.UDPAddr).Port
			if p%2 != 0 || p >= 65535 {
				c.Close()
				continue
			}
			rtpConn = c
		} else {
			c, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(p)))
			if err != nil {
				return nil, nil, fmt.Errorf("rtsp udp listen: %w", err)
			}
			rtpConn = c
		}
		rtcpConn, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(p+1)))
		if err != nil {
			rtpConn.Close()
			if port == 0 {
				continue
			}
			return nil, nil, fmt.Errorf("rtsp udp listen: %w", err)
		}
		return rtpConn, rtcpConn, nil
	}
	return nil, nil, fmt.Errorf("rtsp udp listen %s: no free port pair", addr)
}

// Addr is the host:port the server listens on (after Start).
func (s *Server) Addr() string {
	if s.tcpAddr == nil {
		return ""
	}
	return s.tcpAddr.String()
}

// UDPAddr is the RTP UDP host:port, "" when UDP is off.
func (s *Server) UDPAddr() string {
	if s.udpAddr == nil {
		return ""
	}
	return s.udpAddr.String()
}

// Wait blocks until the server stops and returns why (nil after Close).
func (s *Server) Wait() error {
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close stops the server, its sessions and every reader feed; a second call
// does nothing.
func (s *Server) Close() {
	s.mu.Lock()
	if !s.started || s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	eg := make([]*egress, 0, len(s.egress))
	for _, e := range s.egress {
		eg = append(eg, e)
	}
	s.mu.Unlock()
	s.cancel()
	for _, e := range eg {
		e.stop()
	}
	s.srv.Close()
	s.wg.Wait()
}

// OnPacketsLost implements gortsplib.ServerHandlerOnPacketsLost.
func (s serverHandler) OnPacketsLost(ctx *gortsplib.ServerHandlerOnPacketsLostCtx) {
	s.lost.add(ctx.Lost, "path", ctx.Session.SetuppedPath())
}

// OnDecodeError implements gortsplib.ServerHandlerOnDecodeError.
func (s serverHandler) OnDecodeError(ctx *gortsplib.ServerHandlerOnDecodeErrorCtx) {
	s.decodeErrs.add(1, "path", ctx.Session.SetuppedPath(), "err", ctx.Error)
}

// OnStreamWriteError implements gortsplib.ServerHandlerOnStreamWriteError.
func (s serverHandler) OnStreamWriteError(ctx *gortsplib.ServerHandlerOnStreamWriteErrorCtx) {
	s.writeErrs.add(1, "path", ctx.Session.SetuppedPath(), "err", ctx.Error)
}

// authorize checks the Basic credentials of req against the Authenticator.
func (s *Server) authorize(req *base.Request, cam string, publish bool) bool {
	if s.Authenticator == nil {
		return true
	}
	var a headers.Authorization
	if err := a.Unmarshal(req.Header["Authorization"]); err != nil || a.Method != headers.AuthMethodBasic {
		return false
	}
	return s.Authenticator(cam, a.Username, a.BasicPass, publish)
}

func unauthorized() (*base.Response, error) {
	// gortsplib adds WWW-Authenticate when no credentials were sent, and
	// closes the connection after wrong ones.
	return &base.Response{StatusCode: base.StatusUnauthorized}, liberrors.ErrServerAuth{}
}

// lookup answers 404 for a bad or unknown camera id.
func (s *Server) lookup(path string) (string, CameraInfo, bool) {
	cam := cameraFromPath(path)
	if bus.ValidateToken(cam) != nil {
		return cam, CameraInfo{}, false
	}
	info, err := s.Cameras.LookupCamera(cam)
	if err != nil {
		if !errors.Is(err, ErrCameraNotFound) {
			s.log.Warn("rtsp camera lookup", "camera", cam, "err", err)
		}
		return cam, CameraInfo{}, false
	}
	return cam, info, true
}

// OnAnnounce implements gortsplib.ServerHandlerOnAnnounce: a publisher
// offers a camera.
func (s serverHandler) OnAnnounce(ctx *gortsplib.ServerHandlerOnAnnounceCtx) (*base.Response, error) {
	cam := cameraFromPath(ctx.Path)
	if !s.authorize(ctx.Request, cam, true) {
		return unauthorized()
	}
	cam, info, ok := s.lookup(ctx.Path)
	if !ok {
		return &base.Response{StatusCode: base.StatusNotFound}, nil
	}
	if info.Source != SourcePublish {
		return s.refuse(base.StatusBadRequest, cam, "camera is not a publish camera")
	}
	if !info.Enabled {
		return s.refuse(base.StatusForbidden, cam, "camera is disabled")
	}
	if s.Publishers == nil {
		return s.refuse(base.StatusBadRequest, cam, "publishing is disabled")
	}
	vmedia, vforma := findVideo(ctx.Description)
	if vmedia == nil {
		return s.refuse(base.StatusBadRequest, cam, ErrNoVideo.Error())
	}
	sink, release, err := s.Publishers(cam)
	if err != nil {
		// mediamtx answers 400 too: the running stream stays untouched.
		return s.refuse(base.StatusBadRequest, cam, "someone is already publishing: "+err.Error())
	}
	vt, err := newVideoTrack(vforma, sink, s.log.With("camera", cam))
	if err != nil {
		release()
		return s.refuse(base.StatusBadRequest, cam, err.Error())
	}
	p := &publisher{cam: cam, sink: sink, release: release, video: vt, vmedia: vmedia, vforma: vforma}
	for _, m := range ctx.Description.Medias {
		if m == vmedia || m.Type != description.MediaTypeAudio || p.audio != nil {
			continue
		}
		for _, f := range m.Formats {
			if at := newAudioTrack(f, sink); at != nil {
				p.audio, p.amedia, p.aforma = at, m, f
				break
			}
		}
	}
	sink.SetState(ingest.StateConnecting, nil)
	ctx.Session.SetUserData(&sessionData{pub: p})
	s.log.Info("rtsp publisher announced", "camera", cam, "codec", vforma.Codec(), "remote", ctx.Conn.NetConn().RemoteAddr().String())
	return &base.Response{StatusCode: base.StatusOK}, nil
}

func (s *Server) refuse(code base.StatusCode, cam, why string) (*base.Response, error) {
	s.log.Info("rtsp request refused", "camera", cam, "status", int(code), "why", why)
	return &base.Response{StatusCode: code}, fmt.Errorf("%s", why)
}

// OnRecord implements gortsplib.ServerHandlerOnRecord.
func (s serverHandler) OnRecord(ctx *gortsplib.ServerHandlerOnRecordCtx) (*base.Response, error) {
	sd, _ := ctx.Session.UserData().(*sessionData)
	if sd == nil || sd.pub == nil {
		return &base.Response{StatusCode: base.StatusBadRequest}, errors.New("RECORD without ANNOUNCE")
	}
	p := sd.pub
	ctx.Session.OnPacketRTP(p.vmedia, p.vforma, p.video.writePacket)
	if p.audio != nil {
		ctx.Session.OnPacketRTP(p.amedia, p.aforma, func(pkt *rtp.Packet) { p.audio.writePacket(pkt) })
	}
	sd.streaming(ctx.Conn)
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// OnDescribe implements gortsplib.ServerHandlerOnDescribe: a reader asks
// for a camera; the answer waits for the camera's first keyframe.
func (s serverHandler) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	res, e, err := s.readerEgress(ctx.Request, ctx.Path)
	if e == nil {
		return res, nil, err
	}
	return res, e.stream, nil
}

// OnSetup implements gortsplib.ServerHandlerOnSetup.
func (s serverHandler) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if ctx.Session.State() == gortsplib.ServerSessionStatePreRecord {
		return &base.Response{StatusCode: base.StatusOK}, nil, nil
	}
	if sd, _ := ctx.Session.UserData().(*sessionData); sd != nil && sd.eg != nil {
		res := &base.Response{StatusCode: base.StatusOK}
		sd.setups = append(sd.setups, res)
		return res, sd.eg.stream, nil
	}
	res, e, err := s.readerEgress(ctx.Request, ctx.Path)
	if e == nil {
		return res, nil, err
	}
	if !s.attach(e, ctx.Session) {
		return &base.Response{StatusCode: base.StatusServiceUnavailable}, nil, errors.New("camera feed closed")
	}
	if sd, _ := ctx.Session.UserData().(*sessionData); sd != nil {
		sd.setups = append(sd.setups, res)
	}
	return res, e.stream, nil
}

// OnPlay implements gortsplib.ServerHandlerOnPlay.
func (s serverHandler) OnPlay(ctx *gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	if sd, _ := ctx.Session.UserData().(*sessionData); sd != nil && sd.eg != nil {
		route := directVideo(sd.eg, ctx.Session, ctx.Conn, sd.setups)
		if route.conn != nil {
			// Media waits for this request's response.
			route.conn.armMedia()
		}
		s.play(sd.eg, ctx.Session, route)
		sd.streaming(ctx.Conn)
	}
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// OnSessionClose implements gortsplib.ServerHandlerOnSessionClose: releases
// a publisher's camera or a reader's share of a feed.
func (s serverHandler) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	sd, _ := ctx.Session.UserData().(*sessionData)
	if sd == nil {
		return
	}
	if p := sd.pub; p != nil {
		p.sink.SetState(ingest.StateOffline, nil)
		p.release()
		s.log.Info("rtsp publisher left", "camera", p.cam, "err", ctx.Error)
	}
	if e := sd.eg; e != nil {
		s.detach(e, ctx.Session)
	}
	if c := sd.conn.Load(); c != nil {
		c.stopMedia()
		c.setStreaming(false)
	}
}

// readerEgress authorizes a reader and returns the camera's running feed,
// starting it if needed.
func (s *Server) readerEgress(req *base.Request, path string) (*base.Response, *egress, error) {
	cam := cameraFromPath(path)
	if !s.authorize(req, cam, false) {
		res, err := unauthorized()
		return res, nil, err
	}
	cam, _, ok := s.lookup(path)
	if !ok {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	// A feed that dies between the lookup and our wait is retried once.
	for range 2 {
		e, err := s.getEgress(cam)
		if err != nil {
			return &base.Response{StatusCode: base.StatusServiceUnavailable}, nil, err
		}
		t := time.NewTimer(s.DescribeTimeout + time.Second)
		select {
		case <-e.ready:
			t.Stop()
		case <-t.C:
			return &base.Response{StatusCode: base.StatusServiceUnavailable}, nil, errors.New("camera feed not ready")
		case <-s.ctx.Done():
			t.Stop()
			return &base.Response{StatusCode: base.StatusServiceUnavailable}, nil, errors.New("server closing")
		}
		if e.stream != nil {
			return &base.Response{StatusCode: base.StatusOK}, e, nil
		}
		if e.err != nil && !errors.Is(e.err, errFeedEnded) {
			s.log.Info("rtsp reader refused", "camera", cam, "why", e.err)
			return &base.Response{StatusCode: base.StatusServiceUnavailable}, nil, e.err
		}
	}
	return &base.Response{StatusCode: base.StatusServiceUnavailable}, nil, errors.New("camera feed not ready")
}
