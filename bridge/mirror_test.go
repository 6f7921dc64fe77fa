package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/bus"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

func publish(t *testing.T, b *bus.Bus, subject string, m proto.Message) {
	t.Helper()
	if err := bus.Publish(b.Conn(), subject, m); err != nil {
		t.Fatal(err)
	}
}

func progress(exec string, i int) *busv1.Progress {
	return &busv1.Progress{Execution: exec, State: "running", Index: uint32(i), Done: uint32(i), Total: 1000,
		Percent: float64(i) / 10, UnixNano: int64(1_700_000_000_000_000_000 + i)}
}

func TestMirrorCopiesStreamsAsJSON(t *testing.T) {
	b := startBus(t)
	k := startKafka(t)
	reg := prometheus.NewRegistry()
	m := newTestMirror(t, b, k, func(c *Config) { c.Registerer = reg })
	s := b.Subjects()

	var sent []*busv1.Progress
	for i := range 30 {
		p := progress([]string{"exec-a", "exec-b", "exec-c"}[i%3], i)
		sent = append(sent, p)
		publish(t, b, s.Progress(p.Execution), p)
	}
	nm := &busv1.NodeMetrics{Node: "node-1", UnixNano: 42, Values: map[string]float64{`imageflow_x_total{camera="a"}`: 3.5}}
	publish(t, b, s.Metrics("node-1"), nm)
	jpeg := bytes.Repeat([]byte{0xff, 0xd8, 0x00, 0x01}, 100)
	af := &busv1.ArchiveFrame{Camera: "cam-1", Pts: 7, UnixNano: 8, ContentType: "image/jpeg", Data: jpeg,
		Result: &busv1.Result{Camera: "cam-1", Detections: []*busv1.Detection{{X: 1, Y: 2, W: 3, H: 4, Label: "person", Score: 0.9}}}}
	publish(t, b, s.Archive("cam-1"), af)

	waitFor(t, 10*time.Second, "mirrored", func() bool {
		return m.Stats(StreamProgress).Mirrored == 30 && m.Stats(StreamMetrics).Mirrored == 1 && m.Stats(StreamArchive).Mirrored == 1
	})

	recs := readTopic(t, k.addr(), "imageflow.progress")
	if len(recs) != 30 {
		t.Fatalf("progress topic has %d records, want 30", len(recs))
	}
	partOf := map[string]int{}
	lastIdx := map[string]int{}
	got := 0
	for _, r := range recs {
		var p busv1.Progress
		if err := protojson.Unmarshal(r.Value, &p); err != nil {
			t.Fatalf("record %q is not Progress JSON: %v", r.Value, err)
		}
		if string(r.Key) != p.Execution {
			t.Fatalf("key %q for execution %q", r.Key, p.Execution)
		}
		// Proto field names, like the REST API.
		if !bytes.Contains(r.Value, []byte(`"file_state"`)) {
			t.Fatalf("want proto names and unpopulated fields: %s", r.Value)
		}
		if !proto.Equal(&p, sent[p.Index]) {
			t.Fatalf("record %d differs: %v vs %v", p.Index, &p, sent[p.Index])
		}
		// Ordering per key: one partition, increasing.
		if pp, ok := partOf[p.Execution]; ok && pp != r.Partition {
			t.Fatalf("execution %s on partitions %d and %d", p.Execution, pp, r.Partition)
		}
		partOf[p.Execution] = r.Partition
		if li, ok := lastIdx[p.Execution]; ok && int(p.Index) <= li {
			t.Fatalf("execution %s out of order: %d after %d", p.Execution, p.Index, li)
		}
		lastIdx[p.Execution] = int(p.Index)
		if h := header(r, "content-type"); h != "application/json" {
			t.Fatalf("content-type %q", h)
		}
		if h := header(r, "ifc-type"); h != "ifc.bus.v1.Progress" {
			t.Fatalf("ifc-type %q", h)
		}
		got++
	}

	recs = readTopic(t, k.addr(), "imageflow.metrics")
	if len(recs) != 1 || string(recs[0].Key) != "node-1" {
		t.Fatalf("metrics topic: %d records, key %q", len(recs), recs[0].Key)
	}
	var gotNM busv1.NodeMetrics
	if err := protojson.Unmarshal(recs[0].Value, &gotNM); err != nil || !proto.Equal(&gotNM, nm) {
		t.Fatalf("metrics record %s: %v", recs[0].Value, err)
	}

	recs = readTopic(t, k.addr(), "imageflow.archive")
	if len(recs) != 1 || string(recs[0].Key) != "cam-1" {
		t.Fatalf("archive topic: %d records", len(recs))
	}
	var gotAF busv1.ArchiveFrame
	if err := protojson.Unmarshal(recs[0].Value, &gotAF); err != nil || !proto.Equal(&gotAF, af) {
		t.Fatalf("archive record %s: %v", recs[0].Value, err)
	}

	// Everything is acknowledged: nothing waits in JetStream.
	waitFor(t, 5*time.Second, "consumer drained", func() bool {
		return pendingOf(t, b, "PROGRESS", m.Durable(StreamProgress)) == 0
	})
	want := `
# HELP imageflow_bridge_mirrored_total Messages Kafka confirmed, by stream.
# TYPE imageflow_bridge_mirrored_total counter
imageflow_bridge_mirrored_total{stream="archive",topic="imageflow.archive"} 1
imageflow_bridge_mirrored_total{stream="metrics",topic="imageflow.metrics"} 1
imageflow_bridge_mirrored_total{stream="progress",topic="imageflow.progress"} 30
# HELP imageflow_bridge_dropped_total Messages that can never be written to Kafka (undecodable, too large), by stream.
# TYPE imageflow_bridge_dropped_total counter
imageflow_bridge_dropped_total{stream="archive"} 0
imageflow_bridge_dropped_total{stream="metrics"} 0
imageflow_bridge_dropped_total{stream="progress"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "imageflow_bridge_mirrored_total", "imageflow_bridge_dropped_total"); err != nil {
		t.Fatal(err)
	}
}

func header(r kafka.Message, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// pendingOf is what the durable consumer still holds: undelivered plus
// delivered-but-unacknowledged.
func pendingOf(t *testing.T, b *bus.Bus, stream, durable string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := b.JetStream().Consumer(ctx, stream, durable)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return int(info.NumPending) + info.NumAckPending
}

func TestMirrorProtobufFormatKeepsBusBytes(t *testing.T) {
	b := startBus(t)
	k := startKafka(t)
	m := newTestMirror(t, b, k, func(c *Config) { c.Format = FormatProtobuf; c.Streams = []string{StreamArchive} })
	af := &busv1.ArchiveFrame{Camera: "cam-2", ContentType: "image/jpeg", Data: []byte{1, 2, 3, 0, 255}}
	publish(t, b, b.Subjects().Archive("cam-2"), af)
	waitFor(t, 10*time.Second, "mirrored", func() bool { return m.Stats(StreamArchive).Mirrored == 1 })
	recs := readTopic(t, k.addr(), "imageflow.archive")
	want, _ := proto.Marshal(af)
	if len(recs) != 1 || !bytes.Equal(recs[0].Value, want) || header(recs[0], "content-type") != "application/x-protobuf" {
		t.Fatalf("records %+v", recs)
	}
	// Only the configured stream gets a consumer.
	if _, err := b.JetStream().Consumer(context.Background(), "PROGRESS", m.Durable(StreamProgress)); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("progress consumer: %v", err)
	}
}

func TestMirrorKafkaDownThenBackLosesNothing(t *testing.T) {
	b := startBus(t)
	k := startKafka(t)
	const batch = 50
	m := newTestMirror(t, b, k, func(c *Config) { c.Streams = []string{StreamProgress}; c.BatchSize = batch })
	s := b.Subjects()
	execs := []string{"e1", "e2", "e3", "e4"}
	send := func(from, to int) {
		for i := from; i < to; i++ {
			publish(t, b, s.Progress(execs[i%len(execs)]), progress(execs[i%len(execs)], i))
		}
	}
	send(0, 100)
	waitFor(t, 10*time.Second, "first 100 mirrored", func() bool { return m.Stats(StreamProgress).Mirrored == 100 })

	k.stop()
	send(100, 300)
	waitFor(t, 10*time.Second, "failed writes counted", func() bool { return m.Stats(StreamProgress).Failed >= 5 })
	// The lag gauge follows the whole backlog, not only the batch in hand.
	waitFor(t, 5*time.Second, "lag of 200", func() bool { return m.Stats(StreamProgress).Lag == 200 })
	if st := m.Stats(StreamProgress); st.Mirrored != 100 {
		t.Fatalf("while Kafka is down: %+v", st)
	}
	// The 200 new messages wait in JetStream, none acknowledged.
	if n := pendingOf(t, b, "PROGRESS", m.Durable(StreamProgress)); n != 200 {
		t.Fatalf("jetstream holds %d, want 200", n)
	}

	k.start() // same port, same data
	waitFor(t, 20*time.Second, "all mirrored", func() bool { return m.Stats(StreamProgress).Mirrored >= 300 })
	waitFor(t, 5*time.Second, "consumer drained", func() bool { return pendingOf(t, b, "PROGRESS", m.Durable(StreamProgress)) == 0 })

	recs := readTopic(t, k.addr(), "imageflow.progress")
	seen := map[uint32]int{}
	for _, r := range recs {
		var p busv1.Progress
		if err := protojson.Unmarshal(r.Value, &p); err != nil {
			t.Fatal(err)
		}
		seen[p.Index]++
	}
	dups := 0
	for i := range 300 {
		switch n := seen[uint32(i)]; {
		case n == 0:
			t.Fatalf("message %d lost", i)
		case n > 1:
			dups += n - 1
		}
	}
	st := m.Stats(StreamProgress)
	t.Logf("outage: %d records in Kafka for 300 messages, %d duplicates, %d failed writes, %d redelivered", len(recs), dups, st.Failed, st.Redelivered)
	if len(recs) != 300+dups || len(seen) != 300 {
		t.Fatalf("%d records, %d distinct", len(recs), len(seen))
	}
}

func TestMirrorRestartResumesFromDurable(t *testing.T) {
	b := startBus(t)
	k := startKafka(t)
	s := b.Subjects()
	cfg := func(c *Config) { c.Streams = []string{StreamProgress, StreamMetrics} }
	m1 := newTestMirror(t, b, k, cfg)
	for i := range 10 {
		publish(t, b, s.Progress("run"), progress("run", i))
	}
	waitFor(t, 10*time.Second, "first mirror", func() bool { return m1.Stats(StreamProgress).Mirrored == 10 })
	m1.Close()
	m1.Close() // harmless

	for i := 10; i < 25; i++ {
		publish(t, b, s.Progress("run"), progress("run", i))
	}
	publish(t, b, s.Metrics("n"), &busv1.NodeMetrics{Node: "n"})
	m2 := newTestMirror(t, b, k, cfg)
	waitFor(t, 10*time.Second, "second mirror", func() bool {
		return m2.Stats(StreamProgress).Mirrored == 15 && m2.Stats(StreamMetrics).Mirrored == 1
	})
	recs := readTopic(t, k.addr(), "imageflow.progress")
	if len(recs) != 25 {
		t.Fatalf("%d records, want 25 (each once)", len(recs))
	}
	for i, r := range recs {
		var p busv1.Progress
		if err := protojson.Unmarshal(r.Value, &p); err != nil || p.Index != uint32(i) {
			t.Fatalf("record %d: index %d, %v", i, p.Index, err)
		}
	}
	if st := m2.Stats(StreamProgress); st.Redelivered != 0 {
		t.Fatalf("restart redelivered acknowledged messages: %+v", st)
	}
}

func TestMirrorDropsWhatKafkaCannotTake(t *testing.T) {
	b := startBus(t)
	k := startKafka(t)
	m := newTestMirror(t, b, k, func(c *Config) { c.Streams = []string{StreamArchive, StreamProgress}; c.MaxMessageBytes = 4096 })
	s := b.Subjects()
	// Garbage on a progress subject, then a good message: the garbage is
	// dropped and counted, the stream goes on.
	if err := b.Conn().Publish(s.Progress("x"), []byte{0xff, 0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	publish(t, b, s.Progress("x"), progress("x", 1))
	// A frame too large for MaxMessageBytes, then one that fits.
	publish(t, b, s.Archive("c"), &busv1.ArchiveFrame{Camera: "c", Data: make([]byte, 8000)})
	publish(t, b, s.Archive("c"), &busv1.ArchiveFrame{Camera: "c", Pts: 2, Data: make([]byte, 100)})
	waitFor(t, 10*time.Second, "good messages mirrored", func() bool {
		return m.Stats(StreamProgress).Mirrored == 1 && m.Stats(StreamArchive).Mirrored == 1
	})
	if p, a := m.Stats(StreamProgress), m.Stats(StreamArchive); p.Dropped != 1 || a.Dropped != 1 {
		t.Fatalf("dropped: progress %+v archive %+v", p, a)
	}
	recs := readTopic(t, k.addr(), "imageflow.archive")
	var af busv1.ArchiveFrame
	if len(recs) != 1 || protojson.Unmarshal(recs[0].Value, &af) != nil || af.Pts != 2 {
		t.Fatalf("archive records: %d", len(recs))
	}
	waitFor(t, 5*time.Second, "consumer drained", func() bool { return pendingOf(t, b, "ARCHIVE", m.Durable(StreamArchive)) == 0 })
}

func TestNewMirrorRejectsBadConfig(t *testing.T) {
	b := startBus(t)
	cases := []struct {
		name string
		cfg  Config
		want error
	}{
		{"no bus", Config{Brokers: []string{"x:9092"}}, ErrNoBus},
		{"no brokers", Config{Bus: b}, ErrNoBrokers},
		{"blank brokers", Config{Bus: b, Brokers: []string{" ", ""}}, ErrNoBrokers},
		{"bad format", Config{Bus: b, Brokers: []string{"x:9092"}, Format: "avro"}, ErrFormat},
		{"bad stream", Config{Bus: b, Brokers: []string{"x:9092"}, Streams: []string{"video"}}, ErrStream},
		{"bad durable", Config{Bus: b, Brokers: []string{"x:9092"}, DurablePrefix: "a.b"}, bus.ErrInvalidToken},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewMirror(tc.cfg); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	m, err := NewMirror(Config{Bus: b, Brokers: []string{"x:9092"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Topic(StreamProgress) + " " + m.Durable(StreamArchive); got != "imageflow.progress bridge-archive" {
		t.Fatal(got)
	}
	m.Close() // never started: harmless
	if err := m.Start(context.Background()); !errors.Is(err, ErrStarted) {
		t.Fatalf("start after close: %v", err)
	}
}

// TestKcatReadsMirroredTopic proves a standard Kafka client (librdkafka's
// kcat) sees the records as written.
func TestKcatReadsMirroredTopic(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat not installed (Debian package kcat)")
	}
	b := startBus(t)
	k := startKafka(t)
	m := newTestMirror(t, b, k, func(c *Config) { c.Streams = []string{StreamProgress} })
	for i := range 12 {
		id := []string{"job-1", "job-2"}[i%2]
		publish(t, b, b.Subjects().Progress(id), progress(id, i))
	}
	waitFor(t, 10*time.Second, "mirrored", func() bool { return m.Stats(StreamProgress).Mirrored == 12 })

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, kcat, "-b", k.addr(), "-C", "-t", "imageflow.progress",
		"-o", "beginning", "-e", "-J", "-q").Output()
	if err != nil {
		t.Fatalf("kcat: %v (%s)", err, out)
	}
	seen := map[uint32]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var rec struct {
			Topic   string   `json:"topic"`
			Key     string   `json:"key"`
			Payload string   `json:"payload"`
			Headers []string `json:"headers"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("kcat line %q: %v", line, err)
		}
		var p busv1.Progress
		if err := protojson.Unmarshal([]byte(rec.Payload), &p); err != nil {
			t.Fatalf("payload %q: %v", rec.Payload, err)
		}
		if rec.Topic != "imageflow.progress" || rec.Key != p.Execution || !slices.Contains(rec.Headers, "application/json") {
			t.Fatalf("kcat record %+v", rec)
		}
		seen[p.Index] = true
	}
	if len(seen) != 12 {
		t.Fatalf("kcat saw %d distinct messages, want 12:\n%s", len(seen), out)
	}
}

// TestMirrorCloseDuringOutageHandsBatchBack checks that a Mirror closed while
// Kafka is down returns its batch to JetStream at once: the next Mirror
// delivers it without waiting for AckWait (two minutes by default).
func TestMirrorCloseDuringOutageHandsBatchBack(t *testing.T) {
	b := startBus(t)
	k := startKafka(t)
	cfg := func(c *Config) { c.Streams = []string{StreamProgress}; c.BatchSize = 8 }
	m1 := newTestMirror(t, b, k, cfg)
	publish(t, b, b.Subjects().Progress("warm"), progress("warm", 0))
	waitFor(t, 10*time.Second, "topic created", func() bool { return m1.Stats(StreamProgress).Mirrored == 1 })
	k.stop()
	for i := 1; i <= 20; i++ {
		publish(t, b, b.Subjects().Progress("x"), progress("x", i))
	}
	waitFor(t, 10*time.Second, "failing", func() bool { return m1.Stats(StreamProgress).Failed >= 1 })
	start := time.Now()
	m1.Close()
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Close took %v while Kafka was down", d)
	}
	k.start()
	m2 := newTestMirror(t, b, k, cfg)
	waitFor(t, 15*time.Second, "backlog mirrored by the second Mirror", func() bool { return m2.Stats(StreamProgress).Mirrored >= 20 })
	recs := readTopic(t, k.addr(), "imageflow.progress")
	seen := map[uint32]bool{}
	for _, r := range recs {
		var p busv1.Progress
		if err := protojson.Unmarshal(r.Value, &p); err != nil {
			t.Fatal(err)
		}
		seen[p.Index] = true
	}
	if len(seen) != 21 {
		t.Fatalf("%d distinct messages in Kafka, want 21", len(seen))
	}
}

// TestMirrorAfterCrashDeliversTheDeadBatch stands in for a Mirror that
// crashed holding a batch: its messages were fetched through the durable and
// never acknowledged. The next Mirror writes everything else at once and the
// dead batch after AckWait; nothing is lost.
func TestMirrorAfterCrashDeliversTheDeadBatch(t *testing.T) {
	b := startBus(t)
	k := startKafka(t)
	cfg := func(c *Config) { c.Streams = []string{StreamProgress}; c.AckWait = time.Second }
	m1 := newTestMirror(t, b, k, cfg) // creates the durable
	m1.Close()
	for i := range 30 {
		publish(t, b, b.Subjects().Progress("c"), progress("c", i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cons, err := b.JetStream().Consumer(ctx, "PROGRESS", m1.Durable(StreamProgress))
	if err != nil {
		t.Fatal(err)
	}
	mb, err := cons.Fetch(10, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	held := 0
	for range mb.Messages() {
		held++ // the crashed Mirror's batch: never acknowledged
	}
	if held != 10 {
		t.Fatalf("held %d", held)
	}
	m2 := newTestMirror(t, b, k, cfg)
	waitFor(t, 15*time.Second, "all 30 mirrored", func() bool { return m2.Stats(StreamProgress).Mirrored >= 30 })
	seen := map[uint32]bool{}
	for _, r := range readTopic(t, k.addr(), "imageflow.progress") {
		var p busv1.Progress
		if err := protojson.Unmarshal(r.Value, &p); err != nil {
			t.Fatal(err)
		}
		seen[p.Index] = true
	}
	if len(seen) != 30 {
		t.Fatalf("%d of 30 distinct messages in Kafka", len(seen))
	}
	if st := m2.Stats(StreamProgress); st.Redelivered != 10 {
		t.Fatalf("redelivered %d, want the 10 held", st.Redelivered)
	}
}

// TestMirrorRecreatesDeletedConsumer: an operator deleting the durable
// consumer stalls nothing; the Mirror puts it back (starting over from the
// stream's beginning, so earlier messages come again — at least once).
func TestMirrorRecreatesDeletedConsumer(t *testing.T) {
	b := startBus(t)
	k := startKafka(t)
	m := newTestMirror(t, b, k, func(c *Config) { c.Streams = []string{StreamProgress} })
	publish(t, b, b.Subjects().Progress("d"), progress("d", 0))
	waitFor(t, 10*time.Second, "first mirrored", func() bool { return m.Stats(StreamProgress).Mirrored == 1 })
	if err := b.JetStream().DeleteConsumer(t.Context(), "PROGRESS", m.Durable(StreamProgress)); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		publish(t, b, b.Subjects().Progress("d"), progress("d", i))
	}
	waitFor(t, 10*time.Second, "mirrored after the consumer came back", func() bool { return m.Stats(StreamProgress).Mirrored >= 7 })
	seen := map[uint32]int{}
	for _, r := range readTopic(t, k.addr(), "imageflow.progress") {
		var p busv1.Progress
		if err := protojson.Unmarshal(r.Value, &p); err != nil {
			t.Fatal(err)
		}
		seen[p.Index]++
	}
	if len(seen) != 6 || seen[0] != 2 {
		t.Fatalf("records per index: %v", seen)
	}
}
