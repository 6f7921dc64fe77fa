package server

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// TestKafkaBridge runs the server with Kafka brokers (franz-go's in-process
// kfake cluster: no Apache Kafka here) and reads what it mirrored with the
// real kcat client: archived frames of a camera with the archive flag,
// this node's metrics, and the demo camera's person events.
func TestKafkaBridge(t *testing.T) {
	if _, err := exec.LookPath("kcat"); err != nil {
		t.Skip("kcat not installed (scripts/setup-test.sh installs it)")
	}
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(0))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	broker := kc.ListenAddrs()[0]

	cfg := testConfig(t.TempDir())
	cfg.Demo = true
	cfg.KafkaBrokers = []string{broker}
	cfg.MetricsInterval = time.Second
	cfg.ArchiveInterval = 500 * time.Millisecond
	cfg.Node = "edge-1"
	ts := startServer(t, cfg)
	cam := waitCameraOnline(t, ts, DemoCamera)
	st, body, _ := ts.do("PUT", "/api/v1/cameras/demo", "", map[string]any{"source": cam.Source, "pipeline": cam.Pipeline, "archive": true})
	if st != 200 {
		t.Fatalf("archive flag: %d %s", st, body)
	}

	read := func(topic string) []map[string]any {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		out, _ := exec.CommandContext(ctx, "kcat", "-b", broker, "-C", "-t", topic, "-o", "beginning", "-e", "-J", "-q").Output()
		var msgs []map[string]any
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil {
				msgs = append(msgs, m)
			}
		}
		return msgs
	}
	wait := func(topic, key, contains string) map[string]any {
		deadline := time.Now().Add(40 * time.Second)
		for time.Now().Before(deadline) {
			for _, m := range read(topic) {
				if p, _ := m["payload"].(string); m["key"] == key && strings.Contains(p, contains) {
					return m
				}
			}
			time.Sleep(500 * time.Millisecond)
		}
		t.Fatalf("no message with key %q containing %q in %s", key, contains, topic)
		return nil
	}
	archived := wait("imageflow.archive", "demo", "image/jpeg")
	var frame struct {
		Camera      string `json:"camera"`
		ContentType string `json:"content_type"`
		Data        string `json:"data"`
	}
	if err := json.Unmarshal([]byte(archived["payload"].(string)), &frame); err != nil || frame.Camera != "demo" || frame.ContentType != "image/jpeg" || len(frame.Data) < 1000 {
		t.Fatalf("archived frame: %v %.200v", err, archived["payload"])
	}
	wait("imageflow.metrics", "edge-1", `imageflow_camera_frames_total{camera=\"demo\"}`)
	// The demo's person events, as the JSON the API shows.
	ev := wait("imageflow.events", "demo", `"label":"person"`)
	var event struct {
		ID, Camera, State string
		TrackID           int64 `json:"track_id"`
	}
	if err := json.Unmarshal([]byte(ev["payload"].(string)), &event); err != nil || event.ID == "" || event.Camera != "demo" || event.TrackID <= 0 {
		t.Fatalf("event record: %v %.300v", err, ev["payload"])
	}
}
