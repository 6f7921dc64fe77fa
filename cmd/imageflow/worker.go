package main

import (
	"context"

	"github.com/imageflowcanvas/imageflow/server"
)

func init() { commands["worker"] = worker }

// worker runs `imageflow worker`: a processor-only node (batch work and
// shared live pipelines) that joins a cluster by its routes without a
// JetStream store, or uses one node's NATS client port (nats_url).
func worker(ctx context.Context, args []string) error {
	cfg, err := loadConfig("worker", args)
	if err != nil {
		return err
	}
	logger := newLogger(cfg.LogLevel)
	srv := &server.Server{Config: cfg, Logger: logger, Worker: true}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	go trimAfterStartup(ctx, logger)
	err = srv.Wait(ctx)
	logger.Info("shutting down")
	if cerr := srv.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}
