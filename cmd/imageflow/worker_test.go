package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/internal/testkit"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// startWorkerNode runs `imageflow worker` as node n.
func (n *clusterNode) startWorkerNode(t *testing.T) {
	t.Helper()
	n.cmd = exec.Command(binary(t), "worker", "--data", n.data, "--http", "127.0.0.1:0")
	n.cmd.Env = append(os.Environ(), n.env...)
	n.logs = &testkit.LockedBuffer{}
	n.cmd.Stdout, n.cmd.Stderr = n.logs, n.logs
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd := n.cmd
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
}

// liveResults records a camera's results by node and the RTP timestamps
// of its video, read on a NATS client of the serving node.
type liveResults struct {
	mu       sync.Mutex
	byNode   map[string]int
	last     map[string]time.Time
	videoRTP map[uint32]bool
	matched  map[string]int // results whose rtp_timestamp is one of a video access unit's
}

func (l *liveResults) count(node string) (int, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byNode[node], l.matched[node]
}

// TestWorkerTakesBatchAndLiveWork runs an `imageflow worker` beside
// serving nodes whose cameras have live_pipelines: shared, in the two ways
// a worker joins: "upstream", one `imageflow serve` without a cluster and
// the worker on its NATS client port (nats_url); "routes", two clustered
// serving nodes and the worker routed to them without a JetStream store
// (nats-server elects no JetStream leader in a cluster of one JetStream
// server, so a cluster needs two serving nodes at least). In each, a batch
// of 100 pictures is shared by every node (files done per node printed),
// every result exactly once; the camera's live pipeline runs on the
// worker, whose results carry RTP timestamps of the camera's video (what
// the overlays match frames by); when the worker is killed the camera's
// ingest node runs the pipeline again (time printed).
func TestWorkerTakesBatchAndLiveWork(t *testing.T) {
	if testing.Short() {
		t.Skip("starts several processes")
	}
	shared := []string{"IFC_NATS_USER=tool", "IFC_NATS_PASSWORD=tool-secret", "IFC_LIVE_PIPELINES=shared", "IFC_DETECT_FPS=4", "IFC_BATCH_WORKERS=1"}
	t.Run("upstream", func(t *testing.T) {
		ingest := &clusterNode{name: "ingest1", data: t.TempDir(), env: append([]string{"IFC_NODE=ingest1"}, shared...)}
		ingest.start(t, false)
		ingest.ready(t, 2*time.Minute)
		gpu := &clusterNode{name: "gpu1", data: t.TempDir(), env: []string{"IFC_NODE=gpu1", "IFC_NATS_URL=" + ingest.nats,
			"IFC_NATS_USER=tool", "IFC_NATS_PASSWORD=tool-secret", "IFC_BATCH_WORKERS=1"}}
		gpu.startWorkerNode(t)
		gpu.ready(t, 2*time.Minute)
		workerScenario(t, []*clusterNode{ingest}, gpu)
	})
	t.Run("routes", func(t *testing.T) {
		nodes := newCluster(t, 2, "route-secret-w")
		for _, nd := range nodes {
			nd.env = append(append(nd.env, shared...), "IFC_REPLICAS=1")
			nd.start(t, false)
		}
		for _, nd := range nodes {
			nd.ready(t, 3*time.Minute)
		}
		gpu := &clusterNode{name: "gpu1", data: t.TempDir(), clusterAddr: freePort(t)}
		for _, e := range nodes[0].env {
			if strings.HasPrefix(e, "IFC_CLUSTER_") && !strings.HasPrefix(e, "IFC_CLUSTER_LISTEN=") {
				gpu.env = append(gpu.env, e)
			}
		}
		gpu.env = append(gpu.env, "IFC_NODE=gpu1", "IFC_CLUSTER_LISTEN="+gpu.clusterAddr, "IFC_REPLICAS=1", "IFC_BATCH_WORKERS=1")
		gpu.startWorkerNode(t)
		gpu.ready(t, 2*time.Minute)
		workerScenario(t, nodes, gpu)
	})
}

// workerScenario runs the batch, the shared camera and the worker's kill
// on serving nodes servers (the first takes the requests) and worker gpu.
func workerScenario(t *testing.T, servers []*clusterNode, gpu *clusterNode) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, nd := range append(append([]*clusterNode{}, servers...), gpu) {
			lines := strings.Split(nd.logs.String(), "\n")
			t.Logf("last log lines of %s:\n%s", nd.name, strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	// A worker answers health, readiness and metrics, and nothing else.
	for path, want := range map[string]int{"/api/v1/health": 200, "/api/v1/ready": 200, "/metrics": 200, "/api/v1/cameras": 404, "/": 404} {
		resp, err := httpGet("http://" + gpu.http + path)
		if err != nil || resp != want {
			t.Fatalf("GET %s on the worker: %d %v, want %d", path, resp, err, want)
		}
	}
	front := servers[0]
	// Every node's API lists the worker beside the serving nodes, by role.
	for _, nd := range servers {
		var roles map[string]string
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			var list struct{ Items []struct{ Node, Role string } }
			roles = map[string]string{}
			if getJSON("http://"+nd.http+"/api/v1/nodes", &list) == nil {
				for _, n := range list.Items {
					roles[n.Node] = n.Role
				}
			}
			ok := roles[gpu.name] == "worker" && len(roles) == len(servers)+1
			for _, sv := range servers {
				ok = ok && roles[sv.name] == "serve"
			}
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET /api/v1/nodes on %s: roles %v, want %s as worker beside %d serving nodes", nd.name, roles, gpu.name, len(servers))
			}
		}
	}
	nc, err := nats.Connect(front.nats, nats.UserInfo("tool", "tool-secret"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	live := &liveResults{byNode: map[string]int{}, last: map[string]time.Time{}, videoRTP: map[uint32]bool{}, matched: map[string]int{}}
	// Video first: a result's frame was an access unit before it was decoded.
	if _, err := nc.Subscribe("ifc.video.lobby", func(m *nats.Msg) {
		var au busv1.AccessUnit
		if proto.Unmarshal(m.Data, &au) == nil {
			live.mu.Lock()
			live.videoRTP[au.RtpTimestamp] = true
			live.mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe("ifc.results.lobby", func(m *nats.Msg) {
		var r busv1.Result
		if proto.Unmarshal(m.Data, &r) != nil {
			return
		}
		live.mu.Lock()
		live.byNode[r.Node]++
		live.last[r.Node] = time.Now()
		if live.videoRTP[r.RtpTimestamp] {
			live.matched[r.Node]++
		}
		live.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	// The batch creates the "small" pipeline; the camera uses it too.
	batch := startClusterBatch(t, front)
	postJSON(t, "http://"+front.http+"/api/v1/cameras", `{"id":"lobby","pipeline":"small","source":"file:///usr/share/doc/opencv-doc/examples/data/vtest.avi"}`)
	batch.waitDone(t, 1)
	all := append(append([]*clusterNode{}, servers...), gpu)
	batch.check(t, all)
	var shares []string
	for _, nd := range all {
		v := nodeMetric(nd, `imageflow_batch_files_total{state="done"}`)
		shares = append(shares, nd.name+"="+v)
		if n, _ := strconv.Atoi(v); n == 0 && nd == gpu {
			// On an idle machine the serving nodes can drain 100 small
			// pictures in ~2 s before the worker's first pull over a
			// route lands (ci7); the share is printed, and each result
			// once is what is asserted.
			t.Logf("the worker did no batch work this time: %v", shares)
		}
	}
	fmt.Printf("worker batch (%s): %d pictures, each done once; files done per node: %s\n", t.Name(), clusterBatchFiles, strings.Join(shares, " "))

	// The camera's pipeline runs on the worker, and its results match the
	// camera's access units by RTP timestamp.
	testkit.WaitFor(t, 60*time.Second, "live results from the worker", func() bool {
		n, matched := live.count(gpu.name)
		return n >= 8 && matched >= 8
	})
	var owner string
	testkit.WaitFor(t, 30*time.Second, "the camera's owner", func() bool {
		owner = front.cameras(t)["lobby"]
		return owner != "" || len(servers) == 1
	})
	if owner == "" {
		owner = front.name
	}
	live.mu.Lock()
	t.Logf("live results by node while the worker is up: %v (matching a video RTP timestamp: %v); camera ingested on %s", live.byNode, live.matched, owner)
	for node, at := range live.last {
		if node != gpu.name && time.Since(at) < 2*time.Second {
			t.Errorf("%s still publishes results for the shared camera (last %s ago)", node, time.Since(at))
		}
	}
	live.mu.Unlock()
	if m := nodeMetric(gpu, `imageflow_live_results_total{camera="lobby",pipeline="small"}`); m == "0" {
		t.Fatalf("the worker's metrics count no live results")
	}

	// The worker dies: the camera's ingest node takes its pipeline back.
	before, _ := live.count(owner)
	if err := gpu.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	_ = gpu.cmd.Wait()
	testkit.WaitFor(t, 30*time.Second, "live results from the ingest node after the worker's kill", func() bool {
		n, _ := live.count(owner)
		return n > before
	})
	fmt.Printf("worker live handover (%s): results from the ingest node %s %.2fs after kill -9 of the worker (pool beat 1s, stale after 3s)\n", t.Name(), owner, time.Since(killed).Seconds())
}

// httpGet answers a GET's status code.
func httpGet(url string) (int, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
