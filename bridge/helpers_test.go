package bridge

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"

	"github.com/imageflowcanvas/imageflow/bus"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// quietLogger keeps expected warnings (Kafka down) out of the test output
// unless -v asks for them.
func quietLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func startBus(t *testing.T) *bus.Bus {
	t.Helper()
	b := &bus.Bus{Config: bus.Config{DataDir: t.TempDir(), Logger: quietLogger()}}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// kafkaCluster is franz-go's in-process Kafka, spoken to over the real wire
// protocol on 127.0.0.1. With a data dir it survives a stop and start on the
// same port, like a restarted broker.
type kafkaCluster struct {
	t    *testing.T
	c    *kfake.Cluster
	port int
	dir  string
}

func startKafka(t *testing.T) *kafkaCluster {
	t.Helper()
	k := &kafkaCluster{t: t, dir: t.TempDir()}
	k.start()
	t.Cleanup(k.stop)
	return k
}

func (k *kafkaCluster) start() {
	k.t.Helper()
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.DataDir(k.dir)}
	if k.port != 0 {
		opts = append(opts, kfake.Ports(k.port))
	} else {
		opts = append(opts, kfake.Ports(freePort(k.t)))
	}
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The old listener's port may take a moment to be free again.
		k.c, err = kfake.NewCluster(opts...)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		k.t.Fatal(err)
	}
	_, p, _ := net.SplitHostPort(k.c.ListenAddrs()[0])
	k.port, _ = strconv.Atoi(p)
}

func (k *kafkaCluster) stop() {
	if k.c != nil {
		k.c.Close()
		k.c = nil
	}
}

func (k *kafkaCluster) addr() string { return "127.0.0.1:" + strconv.Itoa(k.port) }

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// readTopic reads every record of topic with kafka-go readers, one per
// partition, up to the end offsets the broker reports now.
func readTopic(t *testing.T, addr, topic string) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	cl := &kafka.Client{Addr: kafka.TCP(addr), Transport: tr}
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		t.Fatal(err)
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil {
		t.Fatalf("topic %s: %+v", topic, md.Topics)
	}
	var reqs []kafka.OffsetRequest
	for _, p := range md.Topics[0].Partitions {
		reqs = append(reqs, kafka.LastOffsetOf(p.ID))
	}
	offs, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		t.Fatal(err)
	}
	var out []kafka.Message
	for _, po := range offs.Topics[topic] {
		if po.Error != nil {
			t.Fatal(po.Error)
		}
		if po.LastOffset == 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{addr}, Topic: topic, Partition: po.Partition,
			MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 100 * time.Millisecond})
		for {
			msg, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				t.Fatalf("read %s/%d: %v", topic, po.Partition, err)
			}
			out = append(out, msg)
			if msg.Offset >= po.LastOffset-1 {
				break
			}
		}
		r.Close()
	}
	return out
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newTestMirror(t *testing.T, b *bus.Bus, k *kafkaCluster, mod func(*Config)) *Mirror {
	t.Helper()
	cfg := Config{Bus: b, Brokers: []string{k.addr()}, Logger: quietLogger(),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, WriteTimeout: 3 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	m, err := NewMirror(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}
