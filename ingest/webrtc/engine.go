package webrtc

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/nack"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/logging"
	"github.com/pion/transport/v5/stdnet"
	"github.com/pion/webrtc/v4"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// ICEServer is a STUN or TURN server handed to every peer connection.
type ICEServer struct {
	URLs []string `yaml:"urls" json:"urls"`
	// Username and Credential are for TURN; never logged.
	Username   string `yaml:"username" json:"username,omitempty"`
	Credential string `yaml:"credential" json:"-"`
}

// EngineConfig configures the shared WebRTC setup.
type EngineConfig struct {
	// UDPAddr is the one UDP address all peers share (ICE UDP mux), e.g.
	// ":8189"; port 0 picks one (tests). An unspecified host listens on every
	// interface; a specific host announces only that address.
	UDPAddr string
	// TCPAddr, when set, opens passive ICE-TCP on that address for networks
	// that block UDP.
	TCPAddr string
	// ICEServers are given to every peer connection.
	ICEServers []ICEServer
	// HostAddresses replace the host candidates' addresses (NAT 1:1: the
	// public address of a server behind a static NAT, or a LAN name's IP).
	HostAddresses []string
	// RemoteIPFilter, when set, ignores remote candidates (including
	// peer-reflexive ones) whose address it rejects, e.g. to admit only a LAN.
	RemoteIPFilter func(net.IP) bool
	// NoVideoTimeout is how long NewViewer waits for the camera's first
	// access unit; 0 means 5 s.
	NoVideoTimeout time.Duration
	// AudioProbe is how long, from a viewer's subscription, an answer to an
	// offer with audio waits for the camera's first audio frame when the
	// camera's keyframe cannot tell whether it has audio (its session is in
	// its first second); default 300 ms.
	AudioProbe time.Duration
	// ConnectTimeout ends a viewer that has not connected (ICE and DTLS)
	// this long after its answer; 0 means DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// Pending caps viewers waiting to connect (shared with the Publisher);
	// nil allows any number.
	Pending *PendingLimits
	// ResultsBufferLimit drops results while the data channel holds more
	// than this many unsent bytes; 0 means 256 KiB.
	ResultsBufferLimit uint64
	// ReaderDepth is each viewer's access-unit queue; 0 means 64.
	ReaderDepth int
	// TranscodeWidth is the picture width of the H.264 transcode browsers
	// get of H.265 and MJPEG cameras (never wider than the camera); 0 means
	// DefaultTranscodeWidth.
	TranscodeWidth int
	// TranscodeBitrate is that transcode's bitrate in bit/s; 0 means
	// DefaultTranscodeBitrate.
	TranscodeBitrate int
	Logger           *slog.Logger
}

// Engine owns the sockets and the pion APIs shared by WHEP viewers, WHIP
// publishers and WHEP pull sources, and the viewer sessions.
type Engine struct {
	cfg       EngineConfig
	api       *webrtc.API
	clientAPI *webrtc.API
	// viewerAPIs are the APIs of viewers, one per video codec a camera
	// passes through with only that codec's video (H.265 too, which only
	// viewers are offered: nothing on the ingest side depacketizes it):
	// pion compares every codec of an offer with every registered one, and
	// copies the registered ones for each peer connection.
	viewerAPIs map[busv1.Codec]*webrtc.API
	udpMux     ice.UDPMux
	udpAddr    net.Addr
	tcpMux     ice.TCPMux
	tcpLn      net.Listener
	log        *slog.Logger

	viewers registry[*viewer]
	// drops is guarded by the viewers' lock.
	drops map[string]*Drops
	// opus transcodes cameras' AAC/G.711 for viewers that need Opus.
	opus *opusFeeds
	// video transcodes H.265/MJPEG cameras to H.264 for browsers.
	video *videoFeeds
	// certs is the DTLS certificate viewers share.
	certs certCache
	// packets cuts each H.264/H.265 access unit once for all viewers.
	packets packetCaches
}

// NewEngine opens the UDP (and TCP) ports and builds the API.
func NewEngine(cfg EngineConfig) (*Engine, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.AudioProbe <= 0 {
		cfg.AudioProbe = 300 * time.Millisecond
	}
	if cfg.NoVideoTimeout <= 0 {
		cfg.NoVideoTimeout = 5 * time.Second
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.ResultsBufferLimit == 0 {
		cfg.ResultsBufferLimit = 256 << 10
	}
	if cfg.ReaderDepth <= 0 {
		cfg.ReaderDepth = 64
	}
	if cfg.TranscodeWidth <= 0 {
		cfg.TranscodeWidth = DefaultTranscodeWidth
	}
	if cfg.TranscodeBitrate <= 0 {
		cfg.TranscodeBitrate = DefaultTranscodeBitrate
	}
	if cfg.UDPAddr == "" {
		return nil, fmt.Errorf("webrtc: UDPAddr is required")
	}
	for i, s := range cfg.ICEServers {
		if len(s.URLs) == 0 {
			return nil, fmt.Errorf("webrtc: ICEServers[%d]: no URLs", i)
		}
	}
	e := &Engine{cfg: cfg, log: cfg.Logger, drops: make(map[string]*Drops)}
	e.opus = &opusFeeds{log: e.log.Info, feeds: make(map[string]*opusFeed)}
	e.video = &videoFeeds{log: e.log.Info, width: cfg.TranscodeWidth, bitrate: cfg.TranscodeBitrate, feeds: make(map[string]*videoFeed)}

	defaultLoggers := logging.NewDefaultLoggerFactory()
	defaultLoggers.DefaultLogLevel = logging.LogLevelError
	lf := &scopeLoggers{factory: defaultLoggers}
	se := webrtc.SettingEngine{LoggerFactory: lf}

	host, portStr, err := net.SplitHostPort(cfg.UDPAddr)
	if err != nil {
		return nil, fmt.Errorf("webrtc: UDPAddr %q: %w", cfg.UDPAddr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("webrtc: UDPAddr %q: bad port", cfg.UDPAddr)
	}
	var fixedIP net.IP
	if host != "" {
		if fixedIP = net.ParseIP(host); fixedIP == nil {
			return nil, fmt.Errorf("webrtc: UDPAddr %q: host must be an IP address", cfg.UDPAddr)
		}
		if fixedIP.IsUnspecified() {
			fixedIP = nil
		}
	}
	if fixedIP != nil {
		// Announce only the configured address, also for ICE-TCP and for
		// the client sessions' ports.
		se.SetIPFilter(func(ip net.IP) bool { return ip.Equal(fixedIP) })
		if fixedIP.IsLoopback() {
			se.SetIncludeLoopbackCandidate(true)
		}
	}
	if cfg.RemoteIPFilter != nil {
		se.SetRemoteIPFilter(cfg.RemoteIPFilter)
	}
	// A server answers browsers' mDNS candidates by their prflx source, and
	// must not multicast on the LAN.
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	// Notice a vanished peer in seconds rather than the default 30 s.
	se.SetICETimeouts(5*time.Second, 10*time.Second, 2*time.Second)

	// Sessions we start (WHEP pull) gather on ports of their own, as
	// browsers do: two peers that each put every session on one port would
	// share one 5-tuple for all their sessions, and each side's mux routes
	// a remote address to one session only, so pulling two streams from
	// one server (mediamtx, or another imageflow) mixed their packets.
	client := se
	client.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6})

	if fixedIP == nil {
		mux, err := ice.NewMultiUDPMuxFromPort(port, ice.UDPMuxFromPortWithLoopback())
		if err != nil {
			return nil, fmt.Errorf("webrtc: UDP port %d: %w", port, err)
		}
		e.udpMux = mux
		if addrs := mux.GetListenAddresses(); len(addrs) > 0 {
			e.udpAddr = addrs[0]
		}
	} else {
		conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: fixedIP, Port: port})
		if err != nil {
			return nil, fmt.Errorf("webrtc: UDP %s: %w", cfg.UDPAddr, err)
		}
		e.udpMux = webrtc.NewICEUDPMux(lf.NewLogger("ice"), conn)
		e.udpAddr = conn.LocalAddr()
	}
	se.SetICEUDPMux(e.udpMux)
	se.SetDTLSConnectContextMaker(holdHandshake)
	// Sessions on the shared port take their host candidates from the mux,
	// whose addresses are fixed when it opens: one interface list read here
	// spares every answer reading the host's interfaces again over netlink.
	shared, err := stdnet.NewNet()
	if err != nil {
		e.closeSockets()
		return nil, fmt.Errorf("webrtc: network interfaces: %w", err)
	}
	se.SetNet(shared)
	networks := []webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6}
	if cfg.TCPAddr != "" {
		ln, err := net.Listen("tcp", cfg.TCPAddr)
		if err != nil {
			_ = e.udpMux.Close()
			return nil, fmt.Errorf("webrtc: TCP %s: %w", cfg.TCPAddr, err)
		}
		e.tcpLn = ln
		e.tcpMux = webrtc.NewICETCPMux(lf.NewLogger("ice-tcp"), ln, 8)
		se.SetICETCPMux(e.tcpMux)
		networks = append(networks, webrtc.NetworkTypeTCP4, webrtc.NetworkTypeTCP6)
	}
	se.SetNetworkTypes(networks)
	if len(cfg.HostAddresses) > 0 {
		se.SetNAT1To1IPs(cfg.HostAddresses, webrtc.ICECandidateTypeHost)
	}

	me := &webrtc.MediaEngine{}
	if err := registerCodecs(me); err != nil {
		e.closeSockets()
		return nil, err
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, ir); err != nil {
		e.closeSockets()
		return nil, err
	}
	e.api = webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se))
	e.viewerAPIs = make(map[busv1.Codec]*webrtc.API)
	for _, codec := range []busv1.Codec{busv1.Codec_CODEC_H264, busv1.Codec_CODEC_VP8, busv1.Codec_CODEC_VP9, busv1.Codec_CODEC_H265} {
		me := &webrtc.MediaEngine{}
		var err error
		if codec == busv1.Codec_CODEC_H265 {
			err = registerH265(me)
		} else {
			err = registerVideoCodecs(me, codec)
		}
		if err == nil {
			err = registerAudioCodecs(me)
		}
		var ir *interceptor.Registry
		if err == nil {
			ir, err = viewerInterceptors(me, lf)
		}
		if err != nil {
			e.closeSockets()
			return nil, err
		}
		e.viewerAPIs[codec] = webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se))
	}
	e.clientAPI = webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(client))
	e.log.Info("webrtc ready", "udp", e.udpAddr, "tcp", e.TCPAddr(), "ice_servers", len(cfg.ICEServers))
	return e, nil
}

// viewerInterceptors are what a WHEP viewer's send-only session needs: the
// NACK responder (retransmit what the viewer lost) and RTCP sender reports
// (lip sync, RTT). Pion's defaults also add a stats recorder and a
// transport-wide congestion control sequence number on every packet sent; a
// passthrough has no encoder whose bitrate those could steer and nothing
// reads the stats, so they were per-packet work for each viewer for nothing.
// NACK generation and receiver reports are for streams received, which a
// viewer does not send, and each made loggers for every peer connection.
func viewerInterceptors(me *webrtc.MediaEngine, lf logging.LoggerFactory) (*interceptor.Registry, error) {
	// The packets sent are never written after (sharedPackets, and a new
	// header per packet in packetizer.write through viewerTrack), so the
	// responder keeps them as they are: a copy of each was a 1.5 kB buffer
	// per packet and viewer, 1024 of them kept per viewer
	// (TestWHEPNackRetransmitsTheSamePacket).
	responder, err := nack.NewResponderInterceptor(nack.WithResponderLoggerFactory(lf), nack.DisableCopy())
	if err != nil {
		return nil, err
	}
	reports, err := report.NewSenderInterceptor(report.WithSenderLoggerFactory(lf))
	if err != nil {
		return nil, err
	}
	me.RegisterFeedback(webrtc.RTCPFeedback{Type: "nack"}, webrtc.RTPCodecTypeVideo)
	me.RegisterFeedback(webrtc.RTCPFeedback{Type: "nack", Parameter: "pli"}, webrtc.RTPCodecTypeVideo)
	ir := &interceptor.Registry{}
	ir.Add(responder)
	ir.Add(reports)
	return ir, nil
}

// scopeLoggers makes one pion logger per scope ("ice", "dtls"...) and
// hands it to every peer connection: pion's default factory builds a new
// one, with a log.Logger per level, for each scope of each connection.
type scopeLoggers struct {
	factory logging.LoggerFactory
	byScope sync.Map // scope → logging.LeveledLogger
}

// NewLogger implements logging.LoggerFactory.
func (s *scopeLoggers) NewLogger(scope string) logging.LeveledLogger {
	if l, ok := s.byScope.Load(scope); ok {
		return l.(logging.LeveledLogger)
	}
	l, _ := s.byScope.LoadOrStore(scope, s.factory.NewLogger(scope))
	return l.(logging.LeveledLogger)
}

// registerH265 adds H.265 (Main and Main 10) for viewers whose browser
// decodes it, so an H.265 camera passes through to them untranscoded.
func registerH265(me *webrtc.MediaEngine) error {
	fb := []webrtc.RTCPFeedback{{Type: "goog-remb"}, {Type: "ccm", Parameter: "fir"}, {Type: "nack"}, {Type: "nack", Parameter: "pli"}}
	for _, c := range []struct {
		profile string
		pt      webrtc.PayloadType
	}{{"1", 116}, {"2", 118}} {
		p := webrtc.RTPCodecParameters{
			RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH265, ClockRate: 90000,
				SDPFmtpLine: "level-id=93;profile-id=" + c.profile + ";tier-flag=0;tx-mode=SRST", RTCPFeedback: fb},
			PayloadType: c.pt,
		}
		if err := me.RegisterCodec(p, webrtc.RTPCodecTypeVideo); err != nil {
			return fmt.Errorf("webrtc: register H265: %w", err)
		}
	}
	return nil
}

// registerCodecs registers the video codecs browsers and cameras use, H264
// first (several profiles, all packetization-mode=1), then VP8, VP9, AV1;
// and Opus, PCMU and PCMA audio. G.711 is there for the other side's sake: a
// WHEP server that only has G.711 (a camera) or sends it as a placeholder
// when its stream has no audio (mediamtx) refuses an offer whose audio
// section lacks it, since its audio sender would have no codec.
func registerCodecs(me *webrtc.MediaEngine) error {
	if err := registerVideoCodecs(me, busv1.Codec_CODEC_UNSPECIFIED); err != nil {
		return err
	}
	return registerAudioCodecs(me)
}

// registerVideoCodecs registers registerCodecs' video codecs, only those of
// codec unless it is CODEC_UNSPECIFIED.
func registerVideoCodecs(me *webrtc.MediaEngine, codec busv1.Codec) error {
	fb := []webrtc.RTCPFeedback{{Type: "goog-remb"}, {Type: "ccm", Parameter: "fir"}, {Type: "nack"}, {Type: "nack", Parameter: "pli"}}
	video := []struct {
		mime string
		fmtp string
		pt   webrtc.PayloadType
	}{
		{webrtc.MimeTypeH264, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f", 102},
		{webrtc.MimeTypeH264, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f", 104},
		{webrtc.MimeTypeH264, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f", 106},
		{webrtc.MimeTypeH264, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640032", 108},
		{webrtc.MimeTypeH264, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=f4001f", 110},
		{webrtc.MimeTypeVP8, "", 96},
		{webrtc.MimeTypeVP9, "profile-id=0", 98},
		{webrtc.MimeTypeAV1, "", 45},
	}
	for _, v := range video {
		if codec != busv1.Codec_CODEC_UNSPECIFIED && CodecOfMime(v.mime) != codec {
			continue
		}
		c := webrtc.RTPCodecParameters{
			RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: v.mime, ClockRate: 90000, SDPFmtpLine: v.fmtp, RTCPFeedback: fb},
			PayloadType:        v.pt,
		}
		if err := me.RegisterCodec(c, webrtc.RTPCodecTypeVideo); err != nil {
			return fmt.Errorf("webrtc: register %s: %w", v.mime, err)
		}
	}
	return nil
}

// registerAudioCodecs registers registerCodecs' audio codecs.
func registerAudioCodecs(me *webrtc.MediaEngine) error {
	audio := []webrtc.RTPCodecParameters{
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}, PayloadType: 111},
		// RFC 3551 §6: static payload types 0 and 8, 8 kHz mono.
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMU, ClockRate: 8000}, PayloadType: 0},
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMA, ClockRate: 8000}, PayloadType: 8},
	}
	for _, a := range audio {
		if err := me.RegisterCodec(a, webrtc.RTPCodecTypeAudio); err != nil {
			return fmt.Errorf("webrtc: register %s: %w", a.MimeType, err)
		}
	}
	return nil
}

// API is the pion API of sessions peers start (WHEP viewers, WHIP
// publishers), all on the one UDP port; hand it to the Publisher.
func (e *Engine) API() *webrtc.API { return e.api }

// ClientAPI is the pion API of sessions the server starts (WHEP pull
// sources): the same codecs, interceptors and address filters, but each
// session on a port of its own.
func (e *Engine) ClientAPI() *webrtc.API { return e.clientAPI }

// Configuration is the peer-connection configuration (ICE servers) every
// session uses; hand it to the Publisher and WHEP sources too.
func (e *Engine) Configuration() webrtc.Configuration {
	var c webrtc.Configuration
	for _, s := range e.cfg.ICEServers {
		is := webrtc.ICEServer{URLs: append([]string(nil), s.URLs...), Username: s.Username}
		if s.Credential != "" {
			is.Credential = s.Credential
			is.CredentialType = webrtc.ICECredentialTypePassword
		}
		c.ICEServers = append(c.ICEServers, is)
	}
	return c
}

// UDPAddr is the address of the shared UDP port (useful with port 0).
func (e *Engine) UDPAddr() net.Addr { return e.udpAddr }

// TCPAddr is the ICE-TCP listener's address, nil when off.
func (e *Engine) TCPAddr() net.Addr {
	if e.tcpLn == nil {
		return nil
	}
	return e.tcpLn.Addr()
}

// Close ends every viewer session and closes the ports; a second call does
// nothing. Close publishers and pull sources using API() first.
func (e *Engine) Close() {
	all, first := e.viewers.close()
	if !first {
		return
	}
	for _, v := range all {
		e.endViewer(v, "server closing")
	}
	e.viewers.wait()
	e.opus.wg.Wait()
	e.video.wg.Wait()
	e.closeSockets()
}

func (e *Engine) closeSockets() {
	if e.tcpMux != nil {
		_ = e.tcpMux.Close()
	}
	if e.tcpLn != nil {
		_ = e.tcpLn.Close()
	}
	if e.udpMux != nil {
		_ = e.udpMux.Close()
	}
}
