package bus

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestNoStoreNodeJoinsByRoutes routes a node without a store (an
// `imageflow worker`) to a two-node cluster: it binds the assets the
// storing nodes created, its writes land in their JetStream, it holds no
// JetStream data and it is not a Raft peer (nats-server's mixed mode).
// Two storing nodes, because nats-server never elects a JetStream meta
// leader in a cluster of one JetStream server (its expected peer set is
// at least 2).
func TestNoStoreNodeJoinsByRoutes(t *testing.T) {
	if testing.Short() {
		t.Skip("forms a cluster")
	}
	cfgs := clusterConfigs(t, 3, "route-secret")
	storing := cfgs[:2]
	for i := range cfgs {
		cfgs[i].Cluster.Replicas = 1
		cfgs[i].VideoWindow = 0
	}
	// The storing nodes' seed lists are the site's as it was; the worker
	// names them, and they learn of it when it connects.
	for i := range storing {
		storing[i].Cluster.Routes = cfgs[0].Cluster.Routes[:2]
	}
	worker := cfgs[2]
	worker.NoStore = true
	worker.Cluster.Routes = cfgs[0].Cluster.Routes[:2]

	start := time.Now()
	buses := startCluster(t, append(storing[:2:2], worker))
	t.Logf("two storing nodes and a worker up in %s", time.Since(start).Round(time.Millisecond))
	w := buses[2]
	checkNoStore(t, buses[0], w, worker.DataDir)

	jsz, err := buses[0].ns.Jsz(nil)
	if err != nil || jsz.Meta == nil {
		t.Fatalf("jsz: %v", err)
	}
	if jsz.Meta.Size != 2 {
		t.Fatalf("meta group size %d, want 2 (the worker must not be a peer)", jsz.Meta.Size)
	}
	for _, p := range jsz.Meta.Replicas {
		if p.Name == worker.Cluster.Node {
			t.Fatalf("the worker is a meta peer: %+v", jsz.Meta)
		}
	}
}

// TestNoStoreNodeUpstream connects a node without a store to a storing
// node's client port (a one-box site without a cluster).
func TestNoStoreNodeUpstream(t *testing.T) {
	store := &Bus{Config: Config{DataDir: t.TempDir(), ClientAddr: "127.0.0.1:0", ClientUser: "tool", ClientPassword: "tool-secret"}}
	if err := store.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	dir := t.TempDir()
	w := &Bus{Config: Config{DataDir: dir, NoStore: true, Upstream: store.ClientURL(), UpstreamUser: "tool", UpstreamPassword: "tool-secret"}}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	checkNoStore(t, store, w, dir)

	// A wrong password is refused, and the error says where, without it.
	bad := &Bus{Config: Config{DataDir: t.TempDir(), NoStore: true, Upstream: store.ClientURL(), UpstreamUser: "tool", UpstreamPassword: "wrong",
		Cluster: ClusterConfig{FormTimeout: 2 * time.Second}}}
	err := bad.Start(context.Background())
	if err == nil {
		bad.Close()
		t.Fatal("a wrong upstream password was accepted")
	}
	t.Logf("wrong password: %v", err)
}

// checkNoStore checks that the worker w writes and reads through the
// storing node's JetStream and keeps none of its own.
func checkNoStore(t *testing.T, store, w *Bus, workerDir string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := w.KV(BucketPipelines).Put(ctx, "p1", []byte("from the worker")); err != nil {
		t.Fatal(err)
	}
	e, err := store.KV(BucketPipelines).Get(ctx, "p1")
	if err != nil || string(e.Value()) != "from the worker" {
		t.Fatalf("the storing node reads %v %v", e, err)
	}
	if err := w.Ready(ctx); err != nil {
		t.Fatalf("worker not ready: %v", err)
	}
	if w.ns != nil && w.ns.JetStreamEnabled() {
		t.Fatal("the worker runs JetStream")
	}
	if _, err := os.Stat(filepath.Join(workerDir, "jetstream")); !os.IsNotExist(err) {
		t.Fatalf("the worker has a JetStream directory: %v", err)
	}
	if _, err := w.JetStream().CreateOrUpdateConsumer(ctx, "JOBS", jetstream.ConsumerConfig{Durable: "probe"}); err != nil {
		t.Fatalf("consumer from the worker: %v", err)
	}
	if _, err := w.Objects().PutBytes(ctx, "from-worker", []byte("blob")); err != nil {
		t.Fatalf("object store from the worker: %v", err)
	}
	if b, err := store.Objects().GetBytes(ctx, "from-worker"); err != nil || string(b) != "blob" {
		t.Fatalf("blob on the storing node: %q %v", b, err)
	}
}
