package server

import (
	"fmt"
	"os"
	"strings"

	"github.com/imageflowcanvas/imageflow/bridge"
	"github.com/imageflowcanvas/imageflow/bus"
)

// startBridge publishes this node's metrics on the bus and, when Kafka
// brokers are configured, mirrors progress, metrics and archive to Kafka.
func (s *Server) startBridge() error {
	s.metricsPub = &bridge.MetricsPublisher{Conn: s.bus.Conn(), Subjects: s.bus.Subjects(), Node: s.Config.Node,
		Gatherer: s.Gatherer, Interval: s.Config.MetricsInterval, Logger: s.Logger.With("component", "metrics-publisher")}
	if err := s.metricsPub.Start(); err != nil {
		return fmt.Errorf("metrics publisher: %w", err)
	}
	if len(s.Config.KafkaBrokers) == 0 {
		return nil
	}
	m, err := bridge.NewMirror(bridge.Config{Bus: s.bus, Brokers: s.Config.KafkaBrokers, TopicPrefix: s.Config.KafkaTopicPrefix,
		Streams: []string{bridge.StreamProgress, bridge.StreamMetrics, bridge.StreamArchive, bridge.StreamEvents},
		Format:  s.Config.KafkaFormat, Logger: s.Logger.With("component", "kafka-bridge"), Registerer: s.Registerer})
	if err != nil {
		return fmt.Errorf("kafka bridge: %w", err)
	}
	// Kafka need not be up: messages wait in JetStream until it is.
	if err := m.Start(s.ctx); err != nil {
		return fmt.Errorf("kafka bridge: %w", err)
	}
	s.mirror = m
	return nil
}

// defaultNode names this node on ifc.metrics.<node>: the host name made a
// valid subject token.
func defaultNode() string {
	h, _ := os.Hostname()
	h = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, h)
	if len(h) > bus.MaxTokenLen {
		h = h[:bus.MaxTokenLen]
	}
	if h == "" {
		h = "imageflow"
	}
	return h
}
