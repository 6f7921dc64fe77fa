// Package bridge carries what the data platform wants from the bus to Kafka:
// a Mirror copies the PROGRESS, METRICS, ARCHIVE and EVENTS JetStream streams
// to Kafka topics at least once, a MetricsPublisher puts node metric snapshots on the
// bus, and an Archiver puts sampled JPEG frames of an archived camera on it.
//
// While Kafka is unreachable nothing is lost: the Mirror reads through durable
// JetStream consumers and acknowledges a message only after Kafka confirmed
// its write, so JetStream is the fallback queue and the Mirror resumes where
// it stopped, after an outage or a restart.
package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/bus"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// Names of the mirrored streams, as Config.Streams takes them. Each is also
// the suffix of its Kafka topic: <TopicPrefix>.progress and so on.
const (
	StreamProgress = "progress"
	StreamMetrics  = "metrics"
	StreamArchive  = "archive"
	// StreamEvents is the detection events (package events), already JSON
	// on the bus: they are written unchanged in either format.
	StreamEvents = "events"
)

// Payload formats of the Kafka records.
const (
	// FormatJSON writes protojson with proto field names and every field
	// present (the shape the REST API and WebSocket use), readable by Kafka
	// Connect's JsonConverter with schemas.enable=false. 64-bit integers are
	// JSON strings and bytes (ArchiveFrame.data, the JPEG) are base64, as the
	// proto3 JSON mapping says.
	FormatJSON = "json"
	// FormatProtobuf writes the bus payload unchanged (proto/bus.proto), for
	// consumers that read protobuf; Kafka Connect needs ByteArrayConverter.
	FormatProtobuf = "protobuf"
)

// Defaults of a Config.
const (
	DefaultTopicPrefix     = "imageflow"
	DefaultDurablePrefix   = "bridge"
	DefaultBatchSize       = 500
	DefaultPartitions      = 3
	DefaultWriteTimeout    = 10 * time.Second
	DefaultMinBackoff      = 100 * time.Millisecond
	DefaultMaxBackoff      = 10 * time.Second
	DefaultAckWait         = 30 * time.Second
	DefaultMaxMessageBytes = 1 << 20
	DefaultPollInterval    = 100 * time.Millisecond
)

// Errors of the bridge.
var (
	ErrNoBus     = errors.New("bridge: no bus (set Config.Bus or Config.JetStream)")
	ErrNoBrokers = errors.New("bridge: no Kafka brokers")
	ErrStream    = errors.New("bridge: unknown stream")
	ErrFormat    = errors.New("bridge: unknown format")
	ErrStarted   = errors.New("bridge: already started")
)

// Config configures a Mirror. Zero values take the defaults above.
type Config struct {
	// Bus supplies JetStream and the subject prefix; alternatively set
	// JetStream and Subjects (a bus reached over a NATS client port).
	Bus       *bus.Bus
	JetStream jetstream.JetStream
	Subjects  bus.Subjects
	// Brokers are the Kafka bootstrap addresses (host:port).
	Brokers []string
	// TopicPrefix names the topics <TopicPrefix>.progress, .metrics, .archive.
	TopicPrefix string
	// Streams to mirror (StreamProgress, StreamMetrics, StreamArchive,
	// StreamEvents); the first three when empty.
	Streams []string
	// Format is FormatJSON (default) or FormatProtobuf, for every topic.
	Format string
	// DurablePrefix names the JetStream consumers <DurablePrefix>-<stream>;
	// two Mirrors with the same prefix share the work, a different prefix
	// gets its own copy of every message.
	DurablePrefix string
	// BatchSize is the most messages fetched, written and acknowledged at once.
	BatchSize int
	// Partitions and ReplicationFactor are used when the Mirror creates a
	// missing topic (replication 1 when 0).
	Partitions        int
	ReplicationFactor int
	// MaxMessageBytes is the largest record Kafka accepts (its
	// message.max.bytes); a bigger one is dropped and counted, not retried
	// forever.
	MaxMessageBytes int
	// WriteTimeout bounds one batch write to Kafka.
	WriteTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between failed writes.
	MinBackoff, MaxBackoff time.Duration
	// AckWait is how long JetStream waits for an acknowledgement before it
	// redelivers (what a crashed Mirror's batch waits); the Mirror extends it
	// while it retries a batch.
	AckWait time.Duration
	// PollInterval is the longest wait between two looks at an idle stream,
	// so the most a quiet stream's first new message waits.
	PollInterval time.Duration
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
	// Registerer receives the Mirror's metrics; none are registered when nil.
	Registerer prometheus.Registerer
}

// streamSpec ties a mirrored stream to its JetStream stream, subject and
// payload type.
type streamSpec struct {
	name     string // StreamProgress...
	jsStream string // PROGRESS...
	subject  func(bus.Subjects) string
	// newMsg makes the payload's proto message; nil for a stream whose
	// payload is JSON already (copied as it is).
	newMsg func() proto.Message
	// typeName is the ifc-type header of a JSON stream.
	typeName string
}

var streamSpecs = map[string]streamSpec{
	StreamProgress: {StreamProgress, "PROGRESS", func(s bus.Subjects) string { return s.Progress("*") }, func() proto.Message { return &busv1.Progress{} }, ""},
	StreamMetrics:  {StreamMetrics, "METRICS", func(s bus.Subjects) string { return s.Metrics("*") }, func() proto.Message { return &busv1.NodeMetrics{} }, ""},
	StreamArchive:  {StreamArchive, "ARCHIVE", func(s bus.Subjects) string { return s.Archive("*") }, func() proto.Message { return &busv1.ArchiveFrame{} }, ""},
	StreamEvents:   {StreamEvents, "EVENTS", func(s bus.Subjects) string { return s.Events("*") }, nil, "imageflow.events.Event"},
}

// mirrorJSON matches the JSON the REST API and the progress WebSocket send.
var mirrorJSON = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// StreamStats are the totals of one mirrored stream.
type StreamStats struct {
	// Mirrored counts messages Kafka confirmed.
	Mirrored uint64
	// Failed counts failed batch writes (each is retried).
	Failed uint64
	// Dropped counts messages that can never be written (undecodable payload,
	// larger than MaxMessageBytes); they are acknowledged and logged.
	Dropped uint64
	// Redelivered counts messages JetStream delivered more than once; each
	// may be a duplicate in Kafka (at-least-once).
	Redelivered uint64
	// Lag is the number of messages waiting in JetStream for this stream
	// (not yet delivered, or delivered and not yet acknowledged).
	Lag uint64
}

// Mirror copies JetStream streams to Kafka topics at least once.
type Mirror struct {
	cfg     Config
	specs   []streamSpec
	log     *slog.Logger
	metrics *mirrorMetrics
	writer  *kafka.Writer
	client  *kafka.Client

	// topicsReady is set once the topics are known to exist.
	topicsReady atomic.Bool

	mu      sync.Mutex
	stats   map[string]*StreamStats
	started bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closed  bool
}

// NewMirror validates cfg and fills its defaults; nothing connects before Start.
func NewMirror(cfg Config) (*Mirror, error) {
	if cfg.Bus != nil {
		if cfg.JetStream == nil {
			cfg.JetStream = cfg.Bus.JetStream()
		}
		if cfg.Subjects.Prefix == "" {
			cfg.Subjects = cfg.Bus.Subjects()
		}
	}
	if cfg.JetStream == nil {
		return nil, ErrNoBus
	}
	if cfg.Subjects.Prefix == "" {
		cfg.Subjects.Prefix = "ifc"
	}
	var brokers []string
	for _, b := range cfg.Brokers {
		if b = strings.TrimSpace(b); b != "" {
			brokers = append(brokers, b)
		}
	}
	if len(brokers) == 0 {
		return nil, ErrNoBrokers
	}
	cfg.Brokers = brokers
	if cfg.TopicPrefix == "" {
		cfg.TopicPrefix = DefaultTopicPrefix
	}
	if cfg.DurablePrefix == "" {
		cfg.DurablePrefix = DefaultDurablePrefix
	}
	if err := bus.ValidateToken(cfg.DurablePrefix); err != nil {
		return nil, fmt.Errorf("bridge: durable prefix %q: %w", cfg.DurablePrefix, err)
	}
	switch cfg.Format {
	case "":
		cfg.Format = FormatJSON
	case FormatJSON, FormatProtobuf:
	default:
		return nil, fmt.Errorf("%w %q (want %q or %q)", ErrFormat, cfg.Format, FormatJSON, FormatProtobuf)
	}
	if len(cfg.Streams) == 0 {
		cfg.Streams = []string{StreamProgress, StreamMetrics, StreamArchive}
	}
	m := &Mirror{stats: make(map[string]*StreamStats)}
	for _, s := range cfg.Streams {
		spec, ok := streamSpecs[s]
		if !ok {
			return nil, fmt.Errorf("%w %q (want progress, metrics, archive or events)", ErrStream, s)
		}
		if _, dup := m.stats[s]; dup {
			continue
		}
		m.specs = append(m.specs, spec)
		m.stats[s] = &StreamStats{}
	}
	setDefault(&cfg.BatchSize, DefaultBatchSize)
	setDefault(&cfg.Partitions, DefaultPartitions)
	setDefault(&cfg.ReplicationFactor, 1)
	setDefault(&cfg.MaxMessageBytes, DefaultMaxMessageBytes)
	setDefault(&cfg.WriteTimeout, DefaultWriteTimeout)
	setDefault(&cfg.MinBackoff, DefaultMinBackoff)
	setDefault(&cfg.MaxBackoff, DefaultMaxBackoff)
	setDefault(&cfg.AckWait, DefaultAckWait)
	setDefault(&cfg.PollInterval, DefaultPollInterval)
	cfg.PollInterval = max(cfg.PollInterval, minPoll)
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = cfg.MinBackoff
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m.cfg = cfg
	m.log = cfg.Logger.With("component", "bridge")

	transport := &kafka.Transport{ClientID: "imageflow-bridge", DialTimeout: 5 * time.Second, MetadataTTL: 10 * time.Second}
	m.writer = &kafka.Writer{
		Addr: kafka.TCP(cfg.Brokers...),
		// Murmur2 is the Java client's default partitioner, so a key lands on
		// the partition any other producer of these topics would pick.
		Balancer:     &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll,
		BatchSize:    cfg.BatchSize,
		BatchBytes:   int64(cfg.MaxMessageBytes),
		// Every call hands a whole batch over; a partial per-partition batch
		// must not sit waiting for more.
		BatchTimeout:    time.Millisecond,
		WriteTimeout:    cfg.WriteTimeout,
		ReadTimeout:     cfg.WriteTimeout,
		MaxAttempts:     2,
		WriteBackoffMin: 50 * time.Millisecond,
		WriteBackoffMax: 200 * time.Millisecond,
		Transport:       transport,
	}
	m.client = &kafka.Client{Addr: m.writer.Addr, Timeout: cfg.WriteTimeout, Transport: transport}
	m.metrics = newMirrorMetrics(m)
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(m.metrics); err != nil {
			return nil, fmt.Errorf("bridge: metrics: %w", err)
		}
	}
	return m, nil
}

func setDefault[T int | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Topic is the Kafka topic a stream is mirrored to.
func (m *Mirror) Topic(stream string) string { return m.cfg.TopicPrefix + "." + stream }

// Durable is the JetStream consumer name a stream is read through.
func (m *Mirror) Durable(stream string) string { return m.cfg.DurablePrefix + "-" + stream }

// Start creates (or binds to) the durable consumers and starts one goroutine
// per stream; they run until ctx ends or Close. Kafka need not be reachable.
func (m *Mirror) Start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started || m.closed {
		return ErrStarted
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	consumers := make([]jetstream.Consumer, len(m.specs))
	for i, spec := range m.specs {
		c, err := m.cfg.JetStream.CreateOrUpdateConsumer(cctx, spec.jsStream, m.consumerConfig(spec))
		if err != nil {
			return fmt.Errorf("bridge: consumer %s on %s: %w", m.Durable(spec.name), spec.jsStream, err)
		}
		consumers[i] = c
	}
	rctx, rcancel := context.WithCancel(ctx)
	m.cancel = rcancel
	m.started = true
	for i, spec := range m.specs {
		r := &streamRunner{m: m, spec: spec, cons: consumers[i], stats: m.stats[spec.name],
			topic: m.Topic(spec.name), log: m.log.With("stream", spec.name)}
		m.wg.Go(func() { r.run(rctx) })
	}
	return nil
}

// consumerConfig is the durable consumer a stream is read through.
func (m *Mirror) consumerConfig(spec streamSpec) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       m.Durable(spec.name),
		Description:   "imageflow bridge: " + spec.name + " to Kafka " + m.Topic(spec.name),
		FilterSubject: spec.subject(m.cfg.Subjects),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		// Explicit, not AckAll: after a crash the new Mirror fetches past
		// the dead one's unacknowledged batch, and an AckAll of its own
		// batch would acknowledge (lose) that one too.
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       m.cfg.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: 4 * m.cfg.BatchSize,
	}
}

// Close stops the stream goroutines, hands unacknowledged messages back to
// JetStream and closes the Kafka writer; a second call does nothing.
func (m *Mirror) Close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	cancel := m.cancel
	m.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	m.wg.Wait()
	_ = m.writer.Close()
	if t, ok := m.writer.Transport.(*kafka.Transport); ok {
		t.CloseIdleConnections()
	}
}

// Stats returns the totals of one stream (zero for a stream not mirrored).
func (m *Mirror) Stats(stream string) StreamStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.stats[stream]; ok {
		return *s
	}
	return StreamStats{}
}

func (m *Mirror) update(s *StreamStats, fn func(*StreamStats)) {
	m.mu.Lock()
	fn(s)
	m.mu.Unlock()
}

// ensureTopics creates the mirrored topics that do not exist yet, so the
// Mirror works against brokers with auto-creation off (the production
// default) and picks the partition count itself.
func (m *Mirror) ensureTopics(ctx context.Context) error {
	req := &kafka.CreateTopicsRequest{}
	for _, spec := range m.specs {
		req.Topics = append(req.Topics, kafka.TopicConfig{Topic: m.Topic(spec.name),
			NumPartitions: m.cfg.Partitions, ReplicationFactor: m.cfg.ReplicationFactor})
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.WriteTimeout)
	defer cancel()
	resp, err := m.client.CreateTopics(ctx, req)
	if err != nil {
		return err
	}
	for topic, err := range resp.Errors {
		if err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", topic, err)
		}
	}
	return nil
}
