package bus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrLeaf reports an invalid leaf node configuration.
var ErrLeaf = errors.New("invalid leaf node configuration")

// TLSFiles names the PEM files of one TLS link between servers (routes or
// leaf node connections): this server's certificate and key, and the CA the
// peer's certificate must be signed by. Both sides present a certificate and
// verify the other's, so a server without a certificate from CA is refused.
type TLSFiles struct {
	Cert, Key, CA string
}

// Enabled reports whether any file is set.
func (f TLSFiles) Enabled() bool { return f.Cert != "" || f.Key != "" || f.CA != "" }

// config loads the files into a mutual-TLS configuration (nil when none set).
func (f TLSFiles) config() (*tls.Config, error) {
	if !f.Enabled() {
		return nil, nil
	}
	if f.Cert == "" || f.Key == "" || f.CA == "" {
		return nil, errors.New("TLS needs a certificate, its key and the CA, all three")
	}
	cfg, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: f.Cert, KeyFile: f.Key, CaFile: f.CA, Verify: true})
	if err != nil {
		return nil, err
	}
	// The same CA checks the peers this server dials (GenTLSConfig sets it
	// for the ones that dial in only).
	cfg.RootCAs = cfg.ClientCAs
	return cfg, nil
}

// tlsTimeout is the handshake deadline of route and leaf TLS, in seconds
// (nats-server's default of 2 s is short on a loaded edge box).
const tlsTimeout = 5

// LeafConfig links servers of different sites: a hub opens a leaf node
// listener, an edge box connects to it as a leaf node. The edge keeps its
// own JetStream domain (its node name), so its streams and buckets stay
// local and work while the uplink is down; the hub copies the edge's
// streams with JetStream sourcing, which resumes where it stopped.
type LeafConfig struct {
	// Listen opens the leaf node listener (host:port) on a hub.
	Listen string
	// User and Password: a hub requires them from its leaves; a leaf
	// presents them to its hub (unless a remote URL carries its own).
	User, Password string
	// TLS protects the leaf node connections on both sides.
	TLS TLSFiles
	// Remotes are the hub's leaf node URLs (nats-leaf://host:7422, or
	// tls://); setting them makes this server a leaf node.
	Remotes []string
	// Sources names the leaves (their node names, which are their
	// JetStream domains) whose streams a hub aggregates.
	Sources []string
}

// IsLeaf reports whether this server connects to a hub as a leaf node.
func (c LeafConfig) IsLeaf() bool { return len(c.Remotes) > 0 }

// AggregatedStreams are the streams of a leaf that its hub copies: what the
// edge produced (progress, results, metrics, events, camera status, archived
// frames). Work queues, video and the buckets stay on the leaf.
var AggregatedStreams = []string{"PROGRESS", "RESULTS", "METRICS", "EVENTS", "STATUS", "ARCHIVE"}

// LeafStreamName is the hub's copy of one of a leaf's streams, e.g.
// PROGRESS_edge-1.
func LeafStreamName(stream, leaf string) string { return stream + "_" + leaf }

// leafBuffer is how long a leaf keeps what its hub has not copied yet in
// the streams that keep little locally (RESULTS: a minute otherwise): the
// longest uplink outage that loses none of it.
const leafBuffer = time.Hour

// applyLeaf sets the leaf node listener (hub) or remotes (leaf).
func (b *Bus) applyLeaf(opts *server.Options, node string) error {
	c := b.Leaf
	tlsCfg, err := c.TLS.config()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrLeaf, err)
	}
	if c.Listen != "" {
		host, port, err := splitHostPort(c.Listen)
		if err != nil {
			return fmt.Errorf("%w: listen %q: %v", ErrLeaf, c.Listen, err)
		}
		opts.LeafNode.Host, opts.LeafNode.Port = host, port
		opts.LeafNode.Username, opts.LeafNode.Password = c.User, c.Password
		if tlsCfg != nil {
			opts.LeafNode.TLSConfig, opts.LeafNode.TLSTimeout = tlsCfg, tlsTimeout
		}
	}
	for _, s := range c.Sources {
		if err := ValidateToken(s); err != nil {
			return fmt.Errorf("%w: leaf source %q: %v", ErrLeaf, s, err)
		}
	}
	if !c.IsLeaf() {
		return nil
	}
	if b.NoStore {
		// A leaf keeps its own JetStream domain and nothing of ours crosses
		// its link: a node without a store would have neither jobs nor
		// JetStream. Workers join by routes or an upstream URL.
		return fmt.Errorf("%w: a node without a store (worker) cannot be a leaf node; use cluster routes or nats_url", ErrLeaf)
	}
	if err := ValidateToken(node); err != nil {
		return fmt.Errorf("%w: node %q: %v", ErrLeaf, node, err)
	}
	// The domain keeps the leaf's JetStream API, streams and buckets apart
	// from the hub's (nats-server then denies $JS.API, $KV and $OBJ across
	// the link); the hub reaches them as $JS.<node>.API.
	opts.ServerName, opts.JetStreamDomain = node, node
	remote := &server.RemoteLeafOpts{
		// Our own subjects never cross the uplink in either direction:
		// every stream on both sides subscribes to them, so a message
		// crossing would be stored twice (and a hub's batch job would run on
		// the edge too). What the hub gets, it gets by sourcing.
		DenyImports: []string{b.Prefix + ".>"},
		DenyExports: []string{b.Prefix + ".>"},
	}
	for _, r := range c.Remotes {
		u, err := url.Parse(r)
		if err != nil || u.Host == "" {
			return fmt.Errorf("%w: remote %q: want nats-leaf://host:port", ErrLeaf, r)
		}
		if u.User == nil && c.User != "" {
			u.User = url.UserPassword(c.User, c.Password)
		}
		remote.URLs = append(remote.URLs, u)
	}
	if tlsCfg != nil {
		remote.TLS, remote.TLSConfig, remote.TLSTimeout = true, tlsCfg, tlsTimeout
	}
	opts.LeafNode.Remotes = []*server.RemoteLeafOpts{remote}
	// A hub that is away is retried every few seconds for ever.
	opts.LeafNode.ReconnectInterval = 2 * time.Second
	return nil
}

// setupLeafSources creates, on a hub, one stream per leaf and aggregated
// stream that sources the leaf's stream through its JetStream domain. A
// source remembers the last sequence it copied (in the copies' headers),
// so after an outage, or a restart of either side, it resumes there: every
// message arrives once. A leaf that is not connected yet is simply retried.
//
// The source uses nats-server's own ephemeral consumer: a durable one on
// the leaf (StreamSource.Consumer) resumed in 5 s instead of up to 40 s, but
// in about one run in ten it stalled for more than 90 s with heartbeats
// flowing and nothing copied (docs/cluster.md).
func (b *Bus) setupLeafSources(ctx context.Context) error {
	replicas := max(b.Cluster.Replicas, 1)
	var fresh []string
	for _, leaf := range b.Leaf.Sources {
		if _, err := b.js.Stream(ctx, LeafStreamName(AggregatedStreams[0], leaf)); errors.Is(err, jetstream.ErrStreamNotFound) {
			fresh = append(fresh, leaf)
		}
	}
	// A new source asks its leaf at once, and a request sent while the leaf
	// is not connected waits 30 s before the next one: give leaves that are
	// already running the moment they take to dial (5 s in all).
	b.waitLeaves(ctx, fresh, 5*time.Second)
	for _, leaf := range b.Leaf.Sources {
		for _, name := range AggregatedStreams {
			maxAge := 24 * time.Hour
			if name == "EVENTS" {
				maxAge = b.eventsRetention()
			}
			cfg := jetstream.StreamConfig{
				Name:        LeafStreamName(name, leaf),
				Description: fmt.Sprintf("%s of leaf node %s", name, leaf),
				Storage:     jetstream.FileStorage,
				Replicas:    replicas,
				MaxAge:      maxAge,
				MaxBytes:    1 << 30,
				Discard:     jetstream.DiscardOld,
				Sources: []*jetstream.StreamSource{{
					Name:     name,
					External: &jetstream.ExternalStream{APIPrefix: "$JS." + leaf + ".API"},
				}},
			}
			if err := b.retry(ctx, "stream "+cfg.Name, func(ctx context.Context) error {
				_, err := b.js.CreateOrUpdateStream(ctx, cfg)
				return err
			}); err != nil {
				return fmt.Errorf("stream %s: %w", cfg.Name, err)
			}
		}
	}
	return nil
}

// waitLeaves waits until the named leaves are connected, at most within.
func (b *Bus) waitLeaves(ctx context.Context, leaves []string, within time.Duration) {
	deadline := time.Now().Add(within)
	for len(leaves) > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		connected := map[string]bool{}
		if lz, err := b.ns.Leafz(nil); err == nil {
			for _, l := range lz.Leafs {
				connected[l.Name] = true
			}
		}
		waiting := leaves[:0:0]
		for _, l := range leaves {
			if !connected[l] {
				waiting = append(waiting, l)
			}
		}
		if leaves = waiting; len(leaves) > 0 {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// LeafConnections counts the leaf node connections up now: a leaf's
// uplink (1 while it reaches its hub), or the leaves connected to a hub.
func (b *Bus) LeafConnections() int {
	if b.ns == nil {
		return 0
	}
	return b.ns.NumLeafNodes()
}

// LeafAddr is the address the leaf node listener is bound to, or "".
func (b *Bus) LeafAddr() string {
	if b.ns == nil || b.Leaf.Listen == "" {
		return ""
	}
	lz, err := b.ns.Varz(nil)
	if err != nil || lz.LeafNode.Port == 0 {
		return ""
	}
	return fmt.Sprintf("%s:%d", lz.LeafNode.Host, lz.LeafNode.Port)
}
