package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrNoJetStream means a node without a store (Config.NoStore) found no
// JetStream to use in time: it is neither routed to cluster nodes nor a
// leaf of a hub that has one, or they have not created their assets yet.
var ErrNoJetStream = errors.New("no JetStream reachable")

// storeStreams are the streams a node without a store needs to exist
// before it takes work: the work queue it consumes and the streams its
// live pipelines write to.
var storeStreams = []string{"JOBS", "RESULTS", "EVENTS", "PROGRESS"}

// startUpstream connects a node without a store to another node's client
// port instead of running a server, and binds that node's assets.
func (b *Bus) startUpstream(ctx context.Context) error {
	if b.Logger == nil {
		b.Logger = slog.Default()
	}
	opts := []nats.Option{nats.Name("imageflow-worker"), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond),
		// The first connection is retried too: a worker may start before
		// the node it uses.
		nats.RetryOnFailedConnect(true)}
	if b.UpstreamUser != "" {
		opts = append(opts, nats.UserInfo(b.UpstreamUser, b.UpstreamPassword))
	}
	nc, err := nats.Connect(b.Upstream, opts...)
	if err != nil {
		return fmt.Errorf("nats connect %s: %w", redactURL(b.Upstream), err)
	}
	b.nc = nc
	if b.js, err = jetstream.New(nc); err != nil {
		b.Close()
		return fmt.Errorf("jetstream: %w", err)
	}
	if err := b.bind(ctx); err != nil {
		b.Close()
		return err
	}
	return nil
}

// redactURL drops the user information of a NATS URL for messages.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	return u.String()
}

// bind waits until the JetStream this node reaches over its routes (or
// leaf connection) answers and holds the streams, buckets and object store
// the storing nodes create, and binds them. It creates nothing: a node
// without data must not decide the replicas or limits of the cluster's
// assets.
func (b *Bus) bind(parent context.Context) error {
	ctx, cancel := context.WithTimeout(parent, b.formTimeout())
	defer cancel()
	var logged time.Time
	buckets := []string{BucketCameras, BucketPipelines, BucketExecutions, BucketInWork, BucketRecordings, BucketProcessors}
	b.kv = make(map[string]jetstream.KeyValue)
	var last error
	for {
		last = b.bindOnce(ctx, buckets)
		if last == nil {
			return nil
		}
		if le := b.nc.LastError(); le != nil {
			// An upstream's refusal (a wrong password) says more than
			// the closed connection it leaves.
			last = fmt.Errorf("%w (connection: %v)", last, le)
		}
		if time.Since(logged) >= 5*time.Second {
			b.Logger.Info("waiting for the cluster's JetStream", "error", last)
			logged = time.Now()
		}
		select {
		case <-ctx.Done():
			if parent.Err() != nil {
				return parent.Err()
			}
			return fmt.Errorf("%w within %s (join with cluster_name and cluster_routes, nats_url, or leafnode_remotes): %v", ErrNoJetStream, b.formTimeout(), last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (b *Bus) bindOnce(ctx context.Context, buckets []string) error {
	actx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	for _, name := range storeStreams {
		if _, err := b.js.Stream(actx, name); err != nil {
			return fmt.Errorf("stream %s: %w", name, err)
		}
	}
	for _, name := range buckets {
		if b.kv[name] != nil {
			continue
		}
		kv, err := b.js.KeyValue(actx, name)
		if err != nil {
			return fmt.Errorf("kv %s: %w", name, err)
		}
		b.kv[name] = kv
	}
	if b.objects == nil {
		obj, err := b.js.ObjectStore(actx, ObjectStoreBlobs)
		if err != nil {
			return fmt.Errorf("object store %s: %w", ObjectStoreBlobs, err)
		}
		b.objects = obj
	}
	return nil
}
