// Package bus runs the embedded NATS JetStream server that carries every
// frame, result and job of ImageFlowCanvas, and sets up its streams, KV
// buckets and object store.
package bus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Errors returned by the bus.
var (
	ErrNotStarted   = errors.New("bus not started")
	ErrCredentials  = errors.New("a NATS client port needs a user and password")
	ErrInvalidAddr  = errors.New("invalid NATS client address")
	ErrInvalidToken = errors.New("invalid subject token")
)

// DefaultEventsRetention is how long detection events are kept by default.
const DefaultEventsRetention = 14 * 24 * time.Hour

// KV bucket and object store names.
const (
	BucketCameras    = "cameras"
	BucketPipelines  = "pipelines"
	BucketExecutions = "executions"
	// BucketProcessors holds the remote processors registered with the
	// server (their Info, keyed by address).
	BucketProcessors = "processors"
	// BucketInWork marks the batch files a process has started, so the next
	// process knows which work items it takes up after a crash.
	BucketInWork = "inwork"
	// BucketRecordings indexes recorded segments (package record).
	BucketRecordings = "recordings"
	ObjectStoreBlobs = "blobs"
)

// Config configures the embedded bus. Exported fields are configuration.
type Config struct {
	// DataDir holds the JetStream store (DataDir/jetstream).
	DataDir string
	// Prefix starts every subject; "ifc" when empty.
	Prefix string
	// ClientAddr opens a NATS client port (host:port) for remote processors and
	// tools; empty keeps the bus in-process only.
	ClientAddr string
	// ClientUser and ClientPassword are required when ClientAddr is set.
	ClientUser     string
	ClientPassword string
	// VideoWindow is how long the video stream keeps access units for replay
	// by NATS clients; 0 keeps none.
	VideoWindow time.Duration
	// EventsRetention is how long the EVENTS stream keeps detection events;
	// DefaultEventsRetention when 0.
	EventsRetention time.Duration
	// MQTTAddr opens nats-server's MQTT listener (host:port) so MQTT clients
	// read the bus (events on ifc/events/<camera>); empty keeps it closed.
	MQTTAddr string
	// MQTTAuth decides who an MQTT client (or any client that is not one of
	// the bus's own users) is: given the CONNECT user name and password it
	// says whether to let it in; nil lets everyone in. Admitted clients may
	// only subscribe to events.
	MQTTAuth func(user, password string) bool
	// Logger receives the bus's own log lines.
	Logger *slog.Logger
}

// Bus is the running embedded NATS server plus the connection the server's
// own components share.
type Bus struct {
	Config

	ns       *server.Server
	nc       *nats.Conn
	js       jetstream.JetStream
	subjects Subjects
	mqttAddr string

	kv      map[string]jetstream.KeyValue
	objects jetstream.ObjectStore

	closeOnce sync.Once
}

// Start runs nats-server in-process, connects to it without TCP and creates
// the streams, buckets and object store idempotently.
func (b *Bus) Start(ctx context.Context) error {
	if b.Prefix == "" {
		b.Prefix = "ifc"
	}
	if err := ValidateToken(b.Prefix); err != nil {
		return fmt.Errorf("bus prefix: %w", err)
	}
	if b.Logger == nil {
		b.Logger = slog.Default()
	}
	b.subjects = Subjects{Prefix: b.Prefix}

	internalPass := randomHex(16)
	opts := &server.Options{
		ServerName: "imageflow",
		JetStream:  true,
		StoreDir:   filepath.Join(b.DataDir, "jetstream"),
		DontListen: true,
		NoSigs:     true,
		NoLog:      true,
		// Large access units (4K keyframes) must fit in one message.
		MaxPayload:         16 << 20,
		JetStreamMaxMemory: 1 << 30,
	}
	if b.ClientAddr != "" {
		if b.ClientUser == "" || b.ClientPassword == "" {
			return ErrCredentials
		}
		host, portStr, err := net.SplitHostPort(b.ClientAddr)
		if err != nil {
			return fmt.Errorf("%w %q: %v", ErrInvalidAddr, b.ClientAddr, err)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil || port < 0 || port > 65535 {
			return fmt.Errorf("%w %q: bad port", ErrInvalidAddr, b.ClientAddr)
		}
		if port == 0 {
			port = server.RANDOM_PORT
		}
		opts.DontListen = false
		opts.Host = host
		opts.Port = port
		opts.Users = []*server.User{
			{Username: "imageflow-internal", Password: internalPass},
			{Username: b.ClientUser, Password: b.ClientPassword},
		}
	}
	if b.MQTTAddr != "" {
		if err := b.configureMQTT(opts, internalPass); err != nil {
			return err
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("nats server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return errors.New("nats server: not ready within 10s")
	}
	b.ns = ns

	copts := []nats.Option{nats.InProcessServer(ns), nats.Name("imageflow-internal"), nats.MaxReconnects(-1)}
	if b.ClientAddr != "" || b.MQTTAddr != "" {
		copts = append(copts, nats.UserInfo("imageflow-internal", internalPass))
	}
	nc, err := nats.Connect("", copts...)
	if err != nil {
		ns.Shutdown()
		return fmt.Errorf("nats connect: %w", err)
	}
	b.nc = nc
	js, err := jetstream.New(nc)
	if err != nil {
		b.Close()
		return fmt.Errorf("jetstream: %w", err)
	}
	b.js = js
	if err := b.setup(ctx); err != nil {
		b.Close()
		return err
	}
	if b.ClientAddr != "" {
		b.Logger.Info("nats client port open", "addr", b.ClientURL())
	}
	if b.MQTTAddr != "" {
		b.Logger.Info("mqtt listener open", "addr", b.MQTTListenAddr())
	}
	return nil
}

func (b *Bus) eventsRetention() time.Duration {
	if b.EventsRetention > 0 {
		return b.EventsRetention
	}
	return DefaultEventsRetention
}

// streamSpecs lists the streams of the architecture page.
func (b *Bus) streamSpecs() []jetstream.StreamConfig {
	s := b.subjects
	specs := []jetstream.StreamConfig{
		{Name: "RESULTS", Subjects: []string{s.Results("*")}, Storage: jetstream.MemoryStorage, MaxAge: time.Minute, Discard: jetstream.DiscardOld},
		// Detection events: acknowledged means stored on disk; message ids
		// (event id + message number) make a retried publish land once.
		{Name: "EVENTS", Subjects: []string{s.Events("*")}, Storage: jetstream.FileStorage, MaxAge: b.eventsRetention(), Duplicates: 2 * time.Minute},
		{Name: "STATUS", Subjects: []string{s.Status("*")}, Storage: jetstream.FileStorage, MaxAge: 24 * time.Hour, MaxMsgsPerSubject: 1000},
		{Name: "JOBS", Subjects: []string{s.Jobs("*")}, Storage: jetstream.FileStorage, Retention: jetstream.WorkQueuePolicy},
		{Name: "PROGRESS", Subjects: []string{s.Progress("*")}, Storage: jetstream.FileStorage, MaxAge: 24 * time.Hour},
		{Name: "METRICS", Subjects: []string{s.Metrics("*")}, Storage: jetstream.MemoryStorage, MaxAge: time.Hour},
		{Name: "ARCHIVE", Subjects: []string{s.Archive("*")}, Storage: jetstream.FileStorage, MaxAge: time.Hour, MaxBytes: 1 << 30, Discard: jetstream.DiscardOld},
	}
	if b.VideoWindow > 0 {
		specs = append(specs, jetstream.StreamConfig{Name: "VIDEO", Subjects: []string{s.Video("*")}, Storage: jetstream.MemoryStorage, MaxAge: b.VideoWindow, Discard: jetstream.DiscardOld, MaxBytes: 512 << 20})
	}
	return specs
}

func (b *Bus) setup(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, cfg := range b.streamSpecs() {
		if _, err := b.js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("stream %s: %w", cfg.Name, err)
		}
	}
	if b.VideoWindow <= 0 {
		// A window switched off after a previous run must not keep storing.
		if err := b.js.DeleteStream(ctx, "VIDEO"); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("stream VIDEO: %w", err)
		}
	}
	b.kv = make(map[string]jetstream.KeyValue)
	for _, name := range []string{BucketCameras, BucketPipelines, BucketExecutions, BucketInWork, BucketRecordings, BucketProcessors} {
		kv, err := b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: name, History: 1, Storage: jetstream.FileStorage})
		if err != nil {
			return fmt.Errorf("kv %s: %w", name, err)
		}
		b.kv[name] = kv
	}
	obj, err := b.js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: ObjectStoreBlobs, Storage: jetstream.FileStorage})
	if err != nil {
		return fmt.Errorf("object store %s: %w", ObjectStoreBlobs, err)
	}
	b.objects = obj
	return nil
}

// Conn is the shared in-process connection.
func (b *Bus) Conn() *nats.Conn { return b.nc }

// JetStream is the shared JetStream context.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// KV returns one of the buckets named by the Bucket constants.
func (b *Bus) KV(bucket string) jetstream.KeyValue { return b.kv[bucket] }

// Objects is the default blob store.
func (b *Bus) Objects() jetstream.ObjectStore { return b.objects }

// Subjects builds subject names with this bus's prefix.
func (b *Bus) Subjects() Subjects { return b.subjects }

// ClientURL is the nats:// URL of the client port, or "" when none is open.
func (b *Bus) ClientURL() string {
	if b.ns == nil || b.ClientAddr == "" {
		return ""
	}
	addr := b.ns.Addr()
	if addr == nil {
		return ""
	}
	return "nats://" + addr.String()
}

// Ready reports whether the server, the connection and JetStream answer.
func (b *Bus) Ready(ctx context.Context) error {
	if b.ns == nil || b.nc == nil {
		return ErrNotStarted
	}
	if !b.ns.Running() || !b.nc.IsConnected() {
		return errors.New("bus: not connected")
	}
	if !b.ns.JetStreamEnabled() {
		return errors.New("bus: jetstream disabled")
	}
	if _, err := b.js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("bus: jetstream: %w", err)
	}
	return nil
}

// Stats is a snapshot of the server's message counters.
type Stats struct {
	InMsgs, OutMsgs, InBytes, OutBytes int64
	SlowConsumers                      int64
	Connections                        int
}

// Stats reads the server's counters; it is cheap enough for every scrape.
func (b *Bus) Stats() Stats {
	if b.ns == nil {
		return Stats{}
	}
	v, err := b.ns.Varz(nil)
	if err != nil {
		return Stats{}
	}
	return Stats{InMsgs: v.InMsgs, OutMsgs: v.OutMsgs, InBytes: v.InBytes, OutBytes: v.OutBytes, SlowConsumers: v.SlowConsumers, Connections: v.Connections}
}

// Close drains the shared connection and shuts the server down; a second call
// does nothing.
func (b *Bus) Close() {
	b.closeOnce.Do(func() {
		if b.nc != nil {
			b.nc.Close()
		}
		if b.ns != nil {
			b.ns.Shutdown()
			b.ns.WaitForShutdown()
		}
	})
}

func randomHex(n int) string {
	buf := make([]byte, n)
	_, _ = rand.Read(buf)
	return hex.EncodeToString(buf)
}
