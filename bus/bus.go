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
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
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
	ErrCluster      = errors.New("invalid cluster configuration")
	// ErrNoMetaLeader means the cluster did not elect a JetStream leader in
	// time: fewer than a quorum of nodes are reachable.
	ErrNoMetaLeader = errors.New("no JetStream meta leader")
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
	// BucketLeases holds which node ingests each camera (cluster placement).
	BucketLeases = "leases"
	// BucketNodes holds each node's heartbeat and load.
	BucketNodes      = "nodes"
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

	// Cluster joins this server to a NATS cluster; the zero value keeps it
	// alone, as before clustering existed.
	Cluster ClusterConfig

	// NoStore runs the server without JetStream (`imageflow worker`): the
	// node holds no stream data and takes no part in Raft; its connection
	// uses the JetStream of the nodes it is routed to (nats-server's mixed
	// mode), and the streams, buckets and object store they created are
	// bound, waited for but never created or changed from here.
	NoStore bool
	// Upstream, with NoStore, replaces the embedded server: the node
	// connects to this NATS URL (another node's client port) with
	// UpstreamUser and UpstreamPassword, for a site whose one storing node
	// runs without a cluster.
	Upstream                       string
	UpstreamUser, UpstreamPassword string
	// Leaf links this server to other sites: a hub for leaf nodes, or a
	// leaf node of a hub (docs/cluster.md); the zero value does neither.
	Leaf LeafConfig
}

// ClusterConfig joins the embedded server to a NATS cluster: routes between
// the nodes, JetStream replicated by nats-server's own Raft groups.
type ClusterConfig struct {
	// Name is the NATS cluster name every node shares; empty disables
	// clustering.
	Name string
	// Node is this server's stable name (server_name); Raft peers are known
	// by it, so it must not change between restarts.
	Node string
	// Listen is the route listener (host:port, port 0 picks one).
	Listen string
	// Routes are the seed URLs (nats-route://host:port) of other nodes; a
	// node may list itself. DNS names resolve as nats-server does.
	Routes []string
	// User and Password authenticate routes in both directions.
	User, Password string
	// TLS protects the routes (mutual TLS: a node without a certificate
	// from the CA is refused).
	TLS TLSFiles
	// Replicas is how many copies every stream, bucket and the object store
	// keep: 1 or 3.
	Replicas int
	// FormTimeout bounds the wait for a JetStream meta leader and for the
	// first creation of the streams; 0 means one minute.
	FormTimeout time.Duration
}

// Clustered reports whether the server joins a cluster.
func (c ClusterConfig) Clustered() bool { return c.Name != "" }

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
	if b.NoStore && b.Upstream != "" {
		return b.startUpstream(ctx)
	}

	internalPass := randomHex(16)
	opts := &server.Options{
		ServerName: "imageflow",
		JetStream:  !b.NoStore,
		StoreDir:   filepath.Join(b.DataDir, "jetstream"),
		DontListen: true,
		NoSigs:     true,
		NoLog:      true,
		// Large access units (4K keyframes) must fit in one message.
		MaxPayload:         16 << 20,
		JetStreamMaxMemory: 1 << 30,
	}
	if err := b.applyCluster(opts); err != nil {
		return err
	}
	if err := b.applyLeaf(opts, b.Cluster.Node); err != nil {
		return err
	}
	linked := b.Cluster.Clustered() || b.Leaf.IsLeaf() || b.Leaf.Listen != ""
	clientAddr := b.ClientAddr
	if clientAddr == "" && linked {
		// nats-server starts routing only once a client listener is up: a
		// loopback port that only the internal user can use.
		clientAddr = "127.0.0.1:0"
	}
	if clientAddr != "" {
		if b.ClientAddr != "" && (b.ClientUser == "" || b.ClientPassword == "") {
			return ErrCredentials
		}
		host, port, err := splitHostPort(clientAddr)
		if err != nil {
			return fmt.Errorf("%w %q: %v", ErrInvalidAddr, clientAddr, err)
		}
		opts.DontListen = false
		opts.Host = host
		opts.Port = port
		opts.Users = []*server.User{{Username: "imageflow-internal", Password: internalPass}}
		if b.ClientAddr != "" {
			opts.Users = append(opts.Users, &server.User{Username: b.ClientUser, Password: b.ClientPassword})
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
	if linked {
		ns.SetLoggerV2(natsLogger{b.Logger.With("nats", b.Cluster.Node)}, false, false, false)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return errors.New("nats server: not ready within 10s")
	}
	b.ns = ns

	copts := []nats.Option{nats.InProcessServer(ns), nats.Name("imageflow-internal"), nats.MaxReconnects(-1)}
	if clientAddr != "" || b.MQTTAddr != "" {
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
	if b.NoStore {
		if err := b.bind(ctx); err != nil {
			b.Close()
			return err
		}
		return nil
	}
	if b.Cluster.Clustered() {
		if err := b.waitFormed(ctx); err != nil {
			b.Close()
			return err
		}
	}
	if err := b.setup(ctx); err != nil {
		b.Close()
		return err
	}
	if err := b.setupLeafSources(ctx); err != nil {
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
	results := jetstream.StreamConfig{Name: "RESULTS", Subjects: []string{s.Results("*")}, Storage: jetstream.MemoryStorage, MaxAge: time.Minute, Discard: jetstream.DiscardOld}
	metrics := jetstream.StreamConfig{Name: "METRICS", Subjects: []string{s.Metrics("*")}, Storage: jetstream.MemoryStorage, MaxAge: time.Hour}
	if b.Leaf.IsLeaf() {
		// A leaf's results and metrics wait here for its hub while the
		// uplink is down, on disk: a restart must neither lose them nor
		// start the sequences the hub resumes from again at 1.
		results.MaxAge, results.MaxBytes, results.Storage = leafBuffer, 256<<20, jetstream.FileStorage
		metrics.MaxAge, metrics.Storage = leafBuffer, jetstream.FileStorage
	}
	specs := []jetstream.StreamConfig{
		results,
		// Detection events: acknowledged means stored on disk; message ids
		// (event id + message number) make a retried publish land once.
		{Name: "EVENTS", Subjects: []string{s.Events("*")}, Storage: jetstream.FileStorage, MaxAge: b.eventsRetention(), Duplicates: 2 * time.Minute},
		{Name: "STATUS", Subjects: []string{s.Status("*")}, Storage: jetstream.FileStorage, MaxAge: 24 * time.Hour, MaxMsgsPerSubject: 1000},
		{Name: "JOBS", Subjects: []string{s.Jobs("*")}, Storage: jetstream.FileStorage, Retention: jetstream.WorkQueuePolicy},
		{Name: "PROGRESS", Subjects: []string{s.Progress("*")}, Storage: jetstream.FileStorage, MaxAge: 24 * time.Hour},
		metrics,
		{Name: "ARCHIVE", Subjects: []string{s.Archive("*")}, Storage: jetstream.FileStorage, MaxAge: time.Hour, MaxBytes: 1 << 30, Discard: jetstream.DiscardOld},
	}
	if b.VideoWindow > 0 {
		specs = append(specs, jetstream.StreamConfig{Name: "VIDEO", Subjects: []string{s.Video("*")}, Storage: jetstream.MemoryStorage, MaxAge: b.VideoWindow, Discard: jetstream.DiscardOld, MaxBytes: 512 << 20})
	}
	return specs
}

func (b *Bus) setup(ctx context.Context) error {
	timeout := 30 * time.Second
	if b.Cluster.Clustered() {
		timeout = b.formTimeout()
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	replicas := max(b.Cluster.Replicas, 1)
	// Streams, buckets and the object store do not depend on each other,
	// and in a cluster each is a Raft group that elects a leader before
	// JetStream answers its creation: made one after another, three nodes
	// started at once spent 15-60 s here, each first request timing out.
	// They are made at once; a task sets only its own result.
	var tasks []setupTask
	for _, cfg := range b.streamSpecs() {
		cfg.Replicas = replicas
		tasks = append(tasks, setupTask{what: "stream " + cfg.Name, op: func(ctx context.Context) error {
			_, err := b.js.CreateOrUpdateStream(ctx, cfg)
			if err != nil && strings.Contains(err.Error(), "storage type") && (cfg.Name == "RESULTS" || cfg.Name == "METRICS") {
				// A box that becomes a leaf (or stops being one) moves these
				// short-lived streams between memory and disk: JetStream
				// cannot change a stream's storage, so it starts afresh.
				b.Logger.Info("stream storage changed, recreating it", "stream", cfg.Name, "storage", cfg.Storage.String())
				if err := b.js.DeleteStream(ctx, cfg.Name); err != nil {
					return err
				}
				_, err = b.js.CreateStream(ctx, cfg)
			}
			return err
		}})
	}
	// Nodes also on one node: `imageflow worker`s joined through its client
	// port beat there, so its API lists them.
	buckets := []string{BucketCameras, BucketPipelines, BucketExecutions, BucketInWork, BucketRecordings, BucketProcessors, BucketNodes}
	if b.Cluster.Clustered() {
		buckets = append(buckets, BucketLeases)
	}
	kvs := make([]jetstream.KeyValue, len(buckets))
	for i, name := range buckets {
		cfg := jetstream.KeyValueConfig{Bucket: name, History: 1, Storage: jetstream.FileStorage, Replicas: replicas}
		if name == BucketLeases || name == BucketNodes {
			// Leases and heartbeats are rewritten every second: memory is
			// enough, and a whole-cluster restart starts placement afresh.
			cfg.Storage = jetstream.MemoryStorage
		}
		tasks = append(tasks, setupTask{what: "kv " + name, op: func(ctx context.Context) (err error) {
			if replicas == 1 || name == BucketLeases || name == BucketNodes {
				kvs[i], err = b.js.CreateOrUpdateKeyValue(ctx, cfg)
				return err
			}
			return b.leaderReadBucket(ctx, cfg, &kvs[i])
		}})
	}
	var obj jetstream.ObjectStore
	tasks = append(tasks, setupTask{what: "object store " + ObjectStoreBlobs, op: func(ctx context.Context) (err error) {
		obj, err = b.js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: ObjectStoreBlobs, Storage: jetstream.FileStorage, Replicas: replicas})
		return err
	}})
	if b.VideoWindow <= 0 {
		// A window switched off after a previous run must not keep storing.
		tasks = append(tasks, setupTask{what: "stream VIDEO removal", op: func(ctx context.Context) error {
			if err := b.js.DeleteStream(ctx, "VIDEO"); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
				return err
			}
			return nil
		}})
	}
	if err := b.runSetup(ctx, tasks); err != nil {
		return err
	}
	b.kv = make(map[string]jetstream.KeyValue, len(buckets))
	for i, name := range buckets {
		b.kv[name] = kvs[i]
	}
	b.objects = obj
	return nil
}

// setupTask is one stream, bucket or object store of setup.
type setupTask struct {
	what string
	op   func(ctx context.Context) error
}

// runSetup runs the tasks at once, each retried (retry) until it succeeds
// or ctx ends, and returns the first failure.
func (b *Bus) runSetup(ctx context.Context, tasks []setupTask) error {
	errs := make([]error, len(tasks))
	var wg sync.WaitGroup
	for i, t := range tasks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.retry(ctx, t.what, t.op); err != nil {
				errs[i] = fmt.Errorf("%s: %w", t.what, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// leaderReadBucket creates or binds a replicated bucket whose reads go to
// its Raft leader: a direct get may be answered by a follower that has not
// applied the last acknowledged write yet, and a camera created through the
// API must be there when the next request reads it. Leases and heartbeats
// keep direct reads: a stale one only makes a compare-and-set fail.
//
// The bucket is created once and then only adjusted (never through
// CreateOrUpdate, which would switch direct gets back on): a node's handle
// bound while direct gets were on would find no responder once they are off.
func (b *Bus) leaderReadBucket(ctx context.Context, cfg jetstream.KeyValueConfig, kv *jetstream.KeyValue) error {
	if _, err := b.js.CreateKeyValue(ctx, cfg); err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
		return err
	}
	stream, err := b.js.Stream(ctx, "KV_"+cfg.Bucket)
	if err != nil {
		return err
	}
	sc := stream.CachedInfo().Config
	if sc.AllowDirect || sc.Replicas != cfg.Replicas {
		// An existing data directory upgrades in place: more replicas,
		// reads from the leader.
		sc.AllowDirect, sc.Replicas = false, cfg.Replicas
		if _, err := b.js.UpdateStream(ctx, sc); err != nil {
			return err
		}
	}
	if *kv, err = b.js.KeyValue(ctx, cfg.Bucket); err != nil {
		return err
	}
	// Until the leader answers gets the bucket is not ready.
	if _, err = (*kv).Get(ctx, "ready-probe"); err == nil || errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	return fmt.Errorf("read from leader: %w", err)
}

// retry runs op until it succeeds or ctx ends: while a cluster forms (a
// peer restarting, a leader being elected) JetStream answers with timeouts
// and "no suitable peers" for a while. A single server is answered at once.
func (b *Bus) retry(ctx context.Context, what string, op func(ctx context.Context) error) error {
	for {
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := op(actx)
		cancel()
		if err == nil || !b.Cluster.Clustered() {
			return err
		}
		b.Logger.Info("jetstream not ready, retrying", "what", what, "error", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (b *Bus) formTimeout() time.Duration {
	if b.Cluster.FormTimeout > 0 {
		return b.Cluster.FormTimeout
	}
	return time.Minute
}

// applyCluster sets the route options of a clustered server.
func (b *Bus) applyCluster(opts *server.Options) error {
	c := b.Cluster
	if !c.Clustered() {
		if c.Replicas > 1 {
			return fmt.Errorf("%w: replicas %d needs a cluster name", ErrCluster, c.Replicas)
		}
		return nil
	}
	if err := ValidateToken(c.Node); err != nil {
		return fmt.Errorf("%w: node %q: %v", ErrCluster, c.Node, err)
	}
	if c.Replicas != 0 && c.Replicas != 1 && c.Replicas != 3 {
		return fmt.Errorf("%w: replicas %d: want 1 or 3", ErrCluster, c.Replicas)
	}
	host, port, err := splitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("%w: listen %q: %v", ErrCluster, c.Listen, err)
	}
	opts.ServerName = c.Node
	opts.Cluster = server.ClusterOpts{Name: c.Name, Host: host, Port: port, Username: c.User, Password: c.Password,
		// A restarted peer is retried for ever (the default gives up on
		// implicit routes after a few tries).
		ConnectRetries: -1}
	if opts.Cluster.TLSConfig, err = c.TLS.config(); err != nil {
		return fmt.Errorf("%w: tls: %v", ErrCluster, err)
	}
	if opts.Cluster.TLSConfig != nil {
		opts.Cluster.TLSTimeout = tlsTimeout
	}
	for _, r := range c.Routes {
		u, err := url.Parse(r)
		if err != nil || u.Host == "" {
			return fmt.Errorf("%w: route %q: want nats-route://host:port", ErrCluster, r)
		}
		if u.User == nil && c.User != "" {
			u.User = url.UserPassword(c.User, c.Password)
		}
		opts.Routes = append(opts.Routes, u)
	}
	return nil
}

// waitFormed waits until the cluster has a JetStream meta leader, that is
// until a quorum of the nodes found each other.
func (b *Bus) waitFormed(ctx context.Context) error {
	deadline := time.Now().Add(b.formTimeout())
	for {
		if b.MetaLeader() != "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w within %s (routes %v)", ErrNoMetaLeader, b.formTimeout(), b.Cluster.Routes)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// MetaLeader names the node leading the JetStream meta group ("" while
// none is elected); a single server leads itself.
func (b *Bus) MetaLeader() string {
	if b.ns == nil {
		return ""
	}
	if !b.Cluster.Clustered() {
		return b.ns.Name()
	}
	jsz, err := b.ns.Jsz(nil)
	if err != nil || jsz.Meta == nil {
		return ""
	}
	return jsz.Meta.Leader
}

// Routes counts the routes to other nodes that are connected now.
func (b *Bus) Routes() int {
	if b.ns == nil {
		return 0
	}
	return b.ns.NumRoutes()
}

// RoutedNodes names the nodes this one has a connected route to now; nil
// without a cluster. A node killed outright drops out at once (its sockets
// close), long before any lease or Raft timeout notices.
func (b *Bus) RoutedNodes() map[string]bool {
	if b.ns == nil || !b.Cluster.Clustered() {
		return nil
	}
	rz, err := b.ns.Routez(nil)
	if err != nil {
		return nil
	}
	out := make(map[string]bool, len(rz.Routes))
	for _, r := range rz.Routes {
		out[r.RemoteName] = true
	}
	return out
}

// LeadsLeases reports whether this node leads the Raft group of the
// leases bucket (false without a cluster). Its death stalls every lease
// write for a Raft election (4-9 s in nats-server), so placement keeps
// cameras off it while other nodes can take them.
func (b *Bus) LeadsLeases() bool {
	if b.ns == nil || !b.Cluster.Clustered() {
		return false
	}
	return b.ns.GlobalAccount().JetStreamIsStreamLeader("KV_" + BucketLeases)
}

// ClusterAddr is the address the route listener is bound to, or "".
func (b *Bus) ClusterAddr() string {
	if b.ns == nil || !b.Cluster.Clustered() {
		return ""
	}
	if a := b.ns.ClusterAddr(); a != nil {
		return a.String()
	}
	return ""
}

func splitHostPort(addr string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, errors.New("bad port")
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return host, port, nil
}

// Conn is the shared in-process connection.
func (b *Bus) Conn() *nats.Conn { return b.nc }

// Interest reports whether a message published on subject now would reach
// any subscriber: a client of this server (in-process or not), a peer
// across a route, a JetStream stream. It is true when this node cannot tell
// (connected to an upstream server instead of embedding one). An ingest
// that feeds its camera's video to this process's hub directly publishes
// it on the bus only for such interest (hub.KeepLocal): the NATS round
// trip of every access unit was a third of a relay's CPU.
func (b *Bus) Interest(subject string) bool {
	if b.ns == nil {
		return true
	}
	acc := b.ns.GlobalAccount()
	return acc == nil || acc.SubscriptionInterest(subject)
}

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
	if b.nc == nil || (b.ns == nil && b.Upstream == "") {
		return ErrNotStarted
	}
	if (b.ns != nil && !b.ns.Running()) || !b.nc.IsConnected() {
		return errors.New("bus: not connected")
	}
	if !b.NoStore && !b.ns.JetStreamEnabled() {
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

// natsLogger hands nats-server's warnings and errors (a route refused for a
// wrong password, a peer lost) to the bus's logger; its notices are debug.
type natsLogger struct{ log *slog.Logger }

func (l natsLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l natsLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Debugf(format string, v ...any)  {}
func (l natsLogger) Tracef(format string, v ...any)  {}

// ServerName is the NATS server name: the node name in a cluster.
func (b *Bus) ServerName() string {
	if b.ns == nil {
		return ""
	}
	return b.ns.Name()
}
