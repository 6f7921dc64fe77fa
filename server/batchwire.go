package server

import (
	"context"
	"errors"
	"fmt"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	"github.com/imageflowcanvas/imageflow/server/batch"
	"github.com/imageflowcanvas/imageflow/server/blob"
)

// startBatch opens the blob store (JetStream Object Store, or MinIO/S3 when
// configured) and the batch execution manager.
func (s *Server) startBatch(ctx context.Context) error {
	var store blob.Store = blob.NewJetStream(s.bus.Objects())
	if s.Config.S3Endpoint != "" {
		mc := blob.MinIOConfig{Endpoint: s.Config.S3Endpoint, Bucket: s.Config.S3Bucket, AccessKey: s.Config.S3AccessKey,
			SecretKey: s.Config.S3SecretKey, TLS: s.Config.S3TLS, Region: s.Config.S3Region}
		m, err := blob.NewMinIO(ctx, mc)
		if err != nil {
			return fmt.Errorf("object storage %s: %w", mc, err)
		}
		store = m
		s.Logger.Info("object storage on S3", "store", mc.String())
	}
	s.blobs = store
	m, err := batch.New(batch.Config{
		Bus: s.bus, Blobs: store, Registry: s.Registry,
		Pipelines: func(ctx context.Context, id string) (*busv1.Pipeline, error) {
			p, _, err := s.pipelines.get(ctx, id)
			if errors.Is(err, ErrNotFound) {
				return nil, fmt.Errorf("%w: %q", batch.ErrPipelineNotFound, id)
			}
			return p, err
		},
		RemoteFactory: s.remoteFactory,
		Workers:       s.Config.BatchWorkers,
		MaxFileBytes:  s.Config.UploadMaxFileBytes,
		MaxFiles:      s.Config.UploadMaxFiles,
		RequestBytes:  int(s.Config.UploadMaxBytes),
		Retention:     s.Config.BatchRetention,
		Logger:        s.Logger.With("component", "batch"),
		Registerer:    s.Registerer,
	})
	if err != nil {
		return fmt.Errorf("batch: %w", err)
	}
	if err := m.Start(s.ctx); err != nil {
		return fmt.Errorf("batch: %w", err)
	}
	s.batch = m
	return nil
}

// batchRoutes adapts the batch endpoints to the route table.
func (s *Server) batchRoutes() []route {
	if s.batch == nil {
		return nil
	}
	return s.batch.Routes()
}
