package bus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// freePorts reserves n loopback ports and frees them for the servers: a
// cluster's seed list must name every port before any node starts.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var lns []net.Listener
	var ports []int
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

func clusterConfigs(t *testing.T, n int, password string) []Config {
	ports := freePorts(t, n)
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	var cfgs []Config
	for i, p := range ports {
		cfgs = append(cfgs, Config{DataDir: t.TempDir(), VideoWindow: 5 * time.Second, Cluster: ClusterConfig{
			Name: "test", Node: fmt.Sprintf("n%d", i+1), Listen: fmt.Sprintf("127.0.0.1:%d", p),
			Routes: routes, User: "route", Password: password, Replicas: 3, FormTimeout: 2 * time.Minute,
		}})
	}
	return cfgs
}

func startCluster(t *testing.T, cfgs []Config) []*Bus {
	t.Helper()
	buses := make([]*Bus, len(cfgs))
	errs := make([]error, len(cfgs))
	var wg sync.WaitGroup
	for i := range cfgs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			b := &Bus{Config: cfgs[i]}
			errs[i] = b.Start(context.Background())
			buses[i] = b
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i+1, err)
		}
	}
	for _, b := range buses {
		t.Cleanup(b.Close)
	}
	return buses
}

// TestClusterReplicatesState starts three buses as one NATS cluster with
// replicas=3: a camera written on one node is read on the others, every
// stream keeps three copies, and the state survives one node's loss.
func TestClusterReplicatesState(t *testing.T) {
	buses := startCluster(t, clusterConfigs(t, 3, "route-secret"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := buses[0].KV(BucketCameras).Put(ctx, "front", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	for i, b := range buses {
		// Just after start a node's JetStream API may still lack a
		// responder for the bucket (seen on a loaded machine): poll.
		var e jetstream.KeyValueEntry
		err := retryJetStream(t, fmt.Sprintf("node %d: read", i+1), func() (err error) {
			e, err = b.KV(BucketCameras).Get(ctx, "front")
			return err
		})
		if err != nil || string(e.Value()) != "v1" {
			t.Fatalf("node %d reads %v %v", i+1, e, err)
		}
		if b.MetaLeader() == "" || b.Routes() < 2 {
			t.Fatalf("node %d: leader %q routes %d", i+1, b.MetaLeader(), b.Routes())
		}
	}
	info, err := buses[1].JetStream().Stream(ctx, "JOBS")
	if err != nil {
		t.Fatal(err)
	}
	if got := info.CachedInfo().Config.Replicas; got != 3 {
		t.Fatalf("JOBS replicas %d", got)
	}
	buses[0].Close()
	// The survivors elect new leaders for what node 1 led; until then
	// JetStream answers "temporarily unavailable" (ci18): poll.
	if err := retryJetStream(t, "write with one node down", func() error {
		_, err := buses[1].KV(BucketCameras).Put(ctx, "back", []byte("v2"))
		return err
	}); err != nil {
		t.Fatalf("write with one node down: %v", err)
	}
	var e jetstream.KeyValueEntry
	err = retryJetStream(t, "survivor read", func() (err error) {
		e, err = buses[2].KV(BucketCameras).Get(ctx, "front")
		return err
	})
	if err != nil || string(e.Value()) != "v1" {
		t.Fatalf("survivor reads %v %v", e, err)
	}
}

// retryJetStream calls op every 100 ms until it succeeds or 15 s have
// passed, and logs how many tries it took when more than one.
func retryJetStream(t *testing.T, what string, op func() error) error {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for tries := 1; ; tries++ {
		err := op()
		if err == nil || time.Now().After(deadline) {
			if tries > 1 {
				t.Logf("%s after %d tries (%v)", what, tries, err)
			}
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestClusterWrongPasswordRefused: a node with another route password
// never joins, so it finds no JetStream leader.
func TestClusterWrongPasswordRefused(t *testing.T) {
	cfgs := clusterConfigs(t, 2, "right-secret")
	cfgs[1].Cluster.Password = "wrong-secret"
	cfgs[0].Cluster.FormTimeout = 3 * time.Second
	cfgs[1].Cluster.FormTimeout = 3 * time.Second
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range cfgs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			b := &Bus{Config: cfgs[i]}
			errs[i] = b.Start(context.Background())
			b.Close()
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, ErrNoMetaLeader) {
			t.Fatalf("node %d with a mismatched route password: %v", i+1, err)
		}
	}
}

func TestClusterConfigErrors(t *testing.T) {
	for _, c := range []ClusterConfig{
		{Replicas: 3},
		{Name: "c", Node: "a.b", Listen: "127.0.0.1:0"},
		{Name: "c", Node: "a", Listen: "127.0.0.1:0", Replicas: 2},
		{Name: "c", Node: "a", Listen: "nonsense"},
		{Name: "c", Node: "a", Listen: "127.0.0.1:0", Routes: []string{"::"}},
	} {
		err := (&Bus{Config: Config{DataDir: t.TempDir(), Cluster: c}}).Start(context.Background())
		if !errors.Is(err, ErrCluster) {
			t.Errorf("%+v: %v", c, err)
		}
	}
}
