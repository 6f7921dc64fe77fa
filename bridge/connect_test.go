package bridge

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// TestS3SinkConfigNamesMirrorTopics keeps the Kafka Connect config in step
// with the topics the Mirror writes and the format it writes them in.
func TestS3SinkConfigNamesMirrorTopics(t *testing.T) {
	raw, err := os.ReadFile("../k3s/kafka-connect/s3-sink.json")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Name   string            `json:"name"`
		Config map[string]string `json:"config"`
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("s3-sink.json: %v", err)
	}
	if c.Name == "" {
		t.Fatal("connector has no name")
	}
	m, err := NewMirror(Config{JetStream: fakeJS{}, Brokers: []string{"kafka:9092"}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var want []string
	for _, s := range []string{StreamProgress, StreamMetrics, StreamArchive} {
		want = append(want, m.Topic(s))
	}
	got := strings.Split(c.Config["topics"], ",")
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("topics %v, the Mirror writes %v", got, want)
	}
	for k, v := range map[string]string{
		"connector.class":                "io.confluent.connect.s3.S3SinkConnector",
		"store.url":                      "http://minio:9000",
		"value.converter":                "org.apache.kafka.connect.json.JsonConverter",
		"value.converter.schemas.enable": "false",
		"format.class":                   "io.confluent.connect.s3.format.json.JsonFormat",
	} {
		if c.Config[k] != v {
			t.Errorf("%s = %q, want %q", k, c.Config[k], v)
		}
	}
	for _, k := range []string{"s3.bucket.name", "flush.size", "partitioner.class"} {
		if c.Config[k] == "" {
			t.Errorf("%s missing", k)
		}
	}
	for k := range c.Config {
		if strings.Contains(k, "secret") || strings.Contains(k, "password") {
			t.Errorf("%s: credentials belong in the Connect worker's environment", k)
		}
	}
}

// fakeJS stands in where NewMirror only needs a non-nil JetStream; no call
// reaches it.
type fakeJS struct{ jetstream.JetStream }
