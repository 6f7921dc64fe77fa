package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/server/rest"
)

// startWorker starts what an `imageflow worker` runs once its bus is up:
// batch workers on the JOBS work queue, the live pipelines of shared
// cameras (liveshare.go), and HTTP with health, readiness and /metrics
// only. No cameras, no ingest, no camera leases (it never runs placement;
// its heartbeat in the nodes bucket says role "worker", so GET
// /api/v1/nodes lists it and no camera is placed on it), no REST API, no
// store of its own (bus.Config.NoStore).
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
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.workerHeartbeats(s.ctx)
	}()
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

// workerHeartbeats writes the worker's row of GET /api/v1/nodes into the
// nodes bucket every nodeHeartbeat until ctx ends; the row goes stale
// (nodeStaleAfter) when the worker stops or dies.
func (s *Server) workerHeartbeats(ctx context.Context) {
	var nodes jetstream.KeyValue
	var cpu cpuMeter
	t := time.NewTicker(nodeHeartbeat)
	defer t.Stop()
	for {
		now := time.Now()
		b, _ := json.Marshal(heartbeat{nodeInfo: nodeInfo{Node: s.Config.Node, Role: roleWorker, CPU: cpu.sample(now),
			UpdatedAt: now.UTC(), Labels: s.Config.NodeLabels}})
		// A write may wait for the bucket's Raft leader: bounded, so a
		// leader election delays one beat, not the loop.
		wctx, cancel := context.WithTimeout(ctx, nodeHeartbeat*2)
		var err error
		if nodes == nil {
			// Made by the serving nodes; an older one may lack it.
			nodes, err = s.bus.JetStream().KeyValue(wctx, bus.BucketNodes)
		}
		if nodes != nil {
			_, err = nodes.Put(wctx, s.Config.Node, b)
		}
		if err != nil && ctx.Err() == nil {
			s.Logger.Debug("worker heartbeat", "error", err)
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
