package server

import (
	"context"
	"fmt"
	"net"
	"os"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/server/rest"
)

// startWorker starts what an `imageflow worker` runs once its bus is up:
// batch workers on the JOBS work queue, the live pipelines of shared
// cameras (liveshare.go), and HTTP with health, readiness and /metrics
// only. No cameras, no ingest, no camera leases (it never runs placement
// nor writes a heartbeat in the nodes bucket, so no camera is placed on
// it), no REST API, no store of its own (bus.Config.NoStore).
func (s *Server) startWorker(ctx context.Context) error {
	s.cameras = newCameraStore(s.bus.KV(bus.BucketCameras))
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
	s.procMetrics = processors.NewMetrics(s.Registerer)
	// Finished executions are cleaned up by the serving nodes' janitors.
	s.Config.BatchRetention = 0
	if err := s.startBatch(ctx); err != nil {
		return err
	}
	s.live = newLiveShare(s, true)
	if err := s.live.start(); err != nil {
		return fmt.Errorf("live pipeline pool: %w", err)
	}
	if err := s.startWorkerHTTP(); err != nil {
		return err
	}
	s.listen.NATS = s.bus.ClientURL()
	s.listen.PID = os.Getpid()
	if err := s.writeListen(); err != nil {
		return err
	}
	s.Logger.Info("imageflow worker running", "node", s.Config.Node, "http", s.listen.HTTP,
		"batch_workers", s.Config.BatchWorkers, "upstream", s.Config.NATSURL != "", "cluster", s.Config.ClusterName)
	return nil
}

// startWorkerHTTP serves a worker's health, readiness and metrics, behind
// the same guard as a serving node's (health_auth, metrics_auth).
func (s *Server) startWorkerHTTP() error {
	ln, err := net.Listen("tcp", s.Config.HTTPAddr)
	if err != nil {
		return fmt.Errorf("http: %w", err)
	}
	s.httpLn = ln
	s.listen.HTTP = ln.Addr().String()
	notFound := func(c *fiber.Ctx) error {
		return writeError(c, fmt.Errorf("%w: a worker serves only health, ready and metrics", ErrNotFound))
	}
	s.app = s.buildApp([]route{
		{Method: "GET", Path: "/api/v1/health", Handler: s.health, Role: rest.RoleViewer, Open: !s.Config.HealthAuth},
		{Method: "GET", Path: "/api/v1/ready", Handler: s.ready, Role: rest.RoleViewer, Open: !s.Config.HealthAuth},
		{Method: "GET", Path: "/metrics", Handler: s.metricsHandler(), Role: rest.RoleViewer, Open: !s.Config.MetricsAuth},
		{Method: methodAll, Path: "/*", Handler: notFound, Open: true},
	})
	s.goRun("http", func() error { return s.app.Listener(ln) })
	return nil
}
