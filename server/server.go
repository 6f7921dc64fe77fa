// Package server is the composition root of `imageflow serve`: it reads the
// configuration, starts the bus and every component, serves the REST API,
// WHIP/WHEP, metrics and the web UI, and shuts it all down.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/imageflowcanvas/imageflow/bridge"
	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/bus/hub"
	"github.com/imageflowcanvas/imageflow/events"
	"github.com/imageflowcanvas/imageflow/ingest/rtsp"
	iwebrtc "github.com/imageflowcanvas/imageflow/ingest/webrtc"
	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/processors/builtin"
	"github.com/imageflowcanvas/imageflow/processors/remote"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	pb "github.com/imageflowcanvas/imageflow/proto/processorv1"
	"github.com/imageflowcanvas/imageflow/record"
	"github.com/imageflowcanvas/imageflow/server/batch"
	"github.com/imageflowcanvas/imageflow/server/blob"
)

// Server is one running `imageflow serve`. Exported fields are configuration.
type Server struct {
	Config Config
	Logger *slog.Logger
	// Registry lists the processors pipelines may use; Start fills it with the
	// built-ins when nil.
	Registry *processors.Registry
	// Registerer receives the metrics; Start makes a registry when nil.
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	// Worker makes this an `imageflow worker`: a processor-only node with
	// no store, cameras or API (worker.go).
	Worker bool

	bus     *bus.Bus
	hub     *hub.Hub
	cameras *kvStore[*busv1.Camera]
	// camIndex knows the cameras without a bucket read (WHEP joins).
	camIndex  cameraIndex
	pipelines *kvStore[*busv1.Pipeline]
	// remotes are the registered remote processors' Info, by address.
	remotes   *kvStore[*pb.InfoResponse]
	metrics   *metrics
	super     *supervisor
	placement *placement // nil unless clustered
	live      *liveShare // nil unless live_pipelines: shared, or a worker

	rtsp        *rtsp.Server
	batch       *batch.Manager
	mirror      *bridge.Mirror
	metricsPub  *bridge.MetricsPublisher
	blobs       blob.Store
	recorder    *record.Manager
	events      *events.Store
	eventsWS    fiber.Handler
	procMetrics *processors.Metrics
	decoders    *decoderCounters
	webrtc      *iwebrtc.Engine
	whip        *iwebrtc.Publisher
	sources     *sourcePolicy

	keys      keyring
	jwt       *jwksVerifier
	limits    *limiters
	authFails *limiters

	app     *fiber.App
	httpLn  net.Listener
	grpcSrv *grpc.Server
	grpcLn  net.Listener

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errc   chan error

	closeOnce sync.Once
	listen    Listen
}

// Listen lists the addresses actually bound, written to <data>/listen.json
// so scripts and tests can find ports picked at random.
type Listen struct {
	HTTP      string `json:"http"`
	HTTPS     string `json:"https,omitempty"`
	RTSP      string `json:"rtsp,omitempty"`
	RTSPUDP   string `json:"rtsp_udp,omitempty"`
	GRPC      string `json:"grpc,omitempty"`
	WebRTCUDP string `json:"webrtc_udp,omitempty"`
	WebRTCTCP string `json:"webrtc_tcp,omitempty"`
	NATS      string `json:"nats,omitempty"`
	MQTT      string `json:"mqtt,omitempty"`
	PID       int    `json:"pid"`
}

// Start validates the configuration and starts every component. On error
// whatever started is stopped again.
func (s *Server) Start(ctx context.Context) (err error) {
	if err := s.Config.Validate(); err != nil {
		return err
	}
	if s.Logger == nil {
		s.Logger = slog.Default()
	}
	if s.Registerer == nil {
		reg := prometheus.NewRegistry()
		s.Registerer, s.Gatherer = reg, reg
	}
	if s.Registry == nil {
		s.Registry = processors.NewRegistry()
		registerBuiltins(s.Registry, s.Config.ModelsPath())
	}
	if err := builtin.SetOpenCVThreads(s.Config.OpenCVThreads); err != nil {
		// Only a second server in one process (tests) with another count
		// gets here; the first count stays in force.
		s.Logger.Warn("opencv_threads not applied", "error", err)
	}
	s.keys = newKeyring(&s.Config)
	s.jwt = newJWKSVerifier(&s.Config)
	s.limits = newLimiters(s.Config.RateLimit, s.Config.RateBurst)
	s.authFails = newLimiters(float64(s.Config.AuthFailuresPerMinute)/60, s.Config.AuthFailuresPerMinute)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.errc = make(chan error, 4)
	defer func() {
		if err != nil {
			s.Close()
		}
	}()

	if err := os.MkdirAll(s.Config.DataDir, 0o750); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	s.bus = &bus.Bus{Config: bus.Config{
		DataDir:         s.Config.DataDir,
		Prefix:          s.Config.Prefix,
		ClientAddr:      s.Config.NATSAddr,
		ClientUser:      s.Config.NATSUser,
		ClientPassword:  s.Config.NATSPassword,
		VideoWindow:     s.Config.VideoWindow,
		EventsRetention: s.Config.EventsRetention,
		MQTTAddr:        s.Config.MQTTAddr,
		MQTTAuth:        s.mqttAuth,
		Logger:          s.Logger.With("component", "bus"),
		Cluster: bus.ClusterConfig{Name: s.Config.ClusterName, Node: s.Config.Node, Listen: s.Config.ClusterListen,
			Routes: s.Config.ClusterRoutes, User: s.Config.ClusterUser, Password: s.Config.ClusterPassword,
			Replicas: s.Config.Replicas,
			TLS:      bus.TLSFiles{Cert: s.Config.ClusterTLSCert, Key: s.Config.ClusterTLSKey, CA: s.Config.ClusterTLSCA}},
		Leaf: bus.LeafConfig{Listen: s.Config.LeafnodeListen, Remotes: s.Config.LeafnodeRemotes,
			User: s.Config.LeafnodeUser, Password: s.Config.LeafnodePassword, Sources: s.Config.LeafSources,
			TLS: bus.TLSFiles{Cert: s.Config.LeafnodeTLSCert, Key: s.Config.LeafnodeTLSKey, CA: s.Config.LeafnodeTLSCA}},
	}}
	if s.Worker {
		s.bus.NoStore = true
		s.bus.Upstream, s.bus.UpstreamUser, s.bus.UpstreamPassword = s.Config.NATSURL, s.Config.NATSUser, s.Config.NATSPassword
		if s.Config.NATSURL != "" {
			// The worker uses that node's client port; it opens none.
			s.bus.ClientAddr = ""
		}
	}
	if err := s.bus.Start(ctx); err != nil {
		return err
	}
	if s.Worker {
		return s.startWorker(ctx)
	}
	s.hub = hub.New(s.bus.Conn(), s.bus.Subjects())
	s.cameras = newCameraStore(s.bus.KV(bus.BucketCameras))
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.camIndex.run(s.ctx, s.cameras.kv)
	}()
	s.pipelines = newPipelineStore(s.bus.KV(bus.BucketPipelines))
	s.remotes = newRemoteStore(s.bus.KV(bus.BucketProcessors))
	if err := s.initSourcePolicy(); err != nil {
		return err
	}
	if err := s.loadRemotes(ctx); err != nil {
		return fmt.Errorf("remote processors: %w", err)
	}

	s.metrics = newMetrics(s.Registerer, s.bus)
	s.Registerer.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.hub.OnDrop = func(cam, kind string) { s.metrics.liveDrops.WithLabelValues(cam, kind).Inc() }

	if err := s.startWebRTC(); err != nil {
		return err
	}
	if s.webrtc != nil {
		s.Registerer.MustRegister(transcodeCollector{s.webrtc})
	}
	s.procMetrics = processors.NewMetrics(s.Registerer)
	s.decoders = newDecoderCounters()
	s.super = newSupervisor(s)
	s.Registerer.MustRegister(s.super, s.decoders)
	if err := s.startRTSP(); err != nil {
		return fmt.Errorf("rtsp: %w", err)
	}
	if err := s.startBatch(ctx); err != nil {
		return err
	}
	if err := s.startBridge(); err != nil {
		return err
	}
	if err := s.startRecorder(ctx); err != nil {
		return err
	}
	if err := s.startEvents(ctx); err != nil {
		return err
	}

	if s.Config.Demo {
		if err := s.ensureDemo(ctx); err != nil {
			s.Logger.Warn("demo camera not created", "error", err)
		}
	}
	if s.Config.LivePipelines == LivePipelinesShared {
		s.live = newLiveShare(s, false)
		if err := s.live.start(); err != nil {
			return fmt.Errorf("live pipeline pool: %w", err)
		}
	}
	if s.Config.ClusterName != "" {
		// In a cluster a camera runs where its lease is held.
		s.placement = newPlacement(s)
		s.placement.start()
	} else if err := s.super.startAll(ctx); err != nil {
		return err
	}

	if err := s.startGRPC(); err != nil {
		return err
	}
	if err := s.startHTTP(); err != nil {
		return err
	}
	s.listen.NATS = s.bus.ClientURL()
	s.listen.MQTT = s.bus.MQTTListenAddr()
	s.listen.PID = os.Getpid()
	if err := s.writeListen(); err != nil {
		return err
	}
	s.Logger.Info("imageflow serving", "http", s.listen.HTTP, "rtsp", s.listen.RTSP, "grpc", s.listen.GRPC,
		"webrtc_udp", s.listen.WebRTCUDP, "nats", s.listen.NATS, "data", s.Config.DataDir)
	return nil
}

func (s *Server) startHTTP() error {
	ln, err := net.Listen("tcp", s.Config.HTTPAddr)
	if err != nil {
		return fmt.Errorf("http: %w", err)
	}
	s.httpLn = ln
	s.listen.HTTP = ln.Addr().String()
	s.app = s.newApp()
	s.goRun("http", func() error { return s.app.Listener(ln) })
	return s.startHTTPS()
}

func (s *Server) startGRPC() error {
	if s.Config.GRPCAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", s.Config.GRPCAddr)
	if err != nil {
		return fmt.Errorf("grpc: %w", err)
	}
	s.grpcLn = ln
	s.listen.GRPC = ln.Addr().String()
	opts := []grpc.ServerOption{grpc.UnaryInterceptor(s.grpcUnaryAuth), grpc.StreamInterceptor(s.grpcStreamAuth),
		// Raw frames (a 4K BGR picture is 25 MB) exceed gRPC's 4 MB default.
		grpc.MaxRecvMsgSize(remote.MaxMessageSize), grpc.MaxSendMsgSize(remote.MaxMessageSize)}
	if s.Config.GRPCTLS {
		// The HTTPS certificate: tokens in gRPC metadata are as safe as in
		// HTTPS headers.
		cfg, err := s.tlsConfig()
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("grpc: %w", err)
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg)))
	}
	s.grpcSrv = grpc.NewServer(opts...)
	s.registerGRPC(s.grpcSrv)
	s.goRun("grpc", func() error { return s.grpcSrv.Serve(ln) })
	return nil
}

// goRun runs a component's serve loop; an error ends Wait.
func (s *Server) goRun(name string, fn func() error) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := fn(); err != nil && s.ctx.Err() == nil {
			select {
			case s.errc <- fmt.Errorf("%s: %w", name, err):
			default:
			}
		}
	}()
}

func (s *Server) writeListen() error {
	b, _ := json.MarshalIndent(s.listen, "", "  ")
	path := filepath.Join(s.Config.DataDir, "listen.json")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Addrs returns the addresses actually bound.
func (s *Server) Addrs() Listen { return s.listen }

// Wait blocks until ctx ends or a component fails.
func (s *Server) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-s.errc:
		return err
	case <-s.ctx.Done():
		return nil
	}
}

// Close stops every component within the shutdown timeout and waits for
// their goroutines; a second call does nothing.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		if s.cancel == nil {
			return
		}
		s.cancel()
		deadline := time.Now().Add(s.Config.ShutdownTimeout)
		if s.app != nil {
			if e := s.app.ShutdownWithTimeout(time.Until(deadline)); e != nil {
				err = errors.Join(err, e)
			}
		}
		if s.grpcSrv != nil {
			stopped := make(chan struct{})
			go func() { s.grpcSrv.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(time.Until(deadline)):
				s.grpcSrv.Stop()
				<-stopped
			}
		}
		if s.rtsp != nil {
			s.rtsp.Close()
		}
		if s.whip != nil {
			s.whip.Close()
		}
		if s.webrtc != nil {
			s.webrtc.Close()
		}
		if s.batch != nil {
			s.batch.Close()
		}
		if s.placement != nil {
			s.placement.stop()
		}
		if s.super != nil {
			s.super.stopAll()
		}
		if s.live != nil {
			s.live.stop()
		}
		if s.recorder != nil {
			s.recorder.Close()
		}
		if s.mirror != nil {
			s.mirror.Close()
		}
		if s.events != nil {
			s.events.Close()
		}
		if s.metricsPub != nil {
			s.metricsPub.Close()
		}
		if s.hub != nil {
			s.hub.Close()
		}
		s.wg.Wait()
		if s.bus != nil {
			s.bus.Close()
		}
		if s.Config.DataDir != "" {
			_ = os.Remove(filepath.Join(s.Config.DataDir, "listen.json"))
		}
	})
	return err
}
