// Package k3s holds the cluster deployment (kustomize manifests under base/,
// Grafana under grafana/, Kafka Connect under kafka-connect/) and the tests
// that check it against the real binary, configuration loader, server,
// Prometheus and MinIO. It has no code of its own.
package k3s
