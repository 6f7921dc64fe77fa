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

// TestWorkerTakesBatchAndLiveWork is one `imageflow serve` (ingest node,
// live_pipelines: shared) and one `imageflow worker` using its NATS client
// port: a batch of 100 pictures is shared by both (files done per node
// printed), every result exactly once; the camera's live pipeline runs on
// the worker, whose results carry RTP timestamps of the camera's video
// (what the overlays match frames by); when the worker is killed the
// ingest node runs the pipeline again (time printed).
func TestWorkerTakesBatchAndLiveWork(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two processes")
	}
	ingest := &clusterNode{name: "ingest1", data: t.TempDir(), env: []string{"IFC_NODE=ingest1", "IFC_NATS_USER=tool",
		"IFC_NATS_PASSWORD=tool-secret", "IFC_LIVE_PIPELINES=shared", "IFC_DETECT_FPS=4", "IFC_BATCH_WORKERS=1"}}
	ingest.start(t, false)
	ingest.ready(t, 2*time.Minute)
	gpu := &clusterNode{name: "gpu1", data: t.TempDir(), env: []string{"IFC_NODE=gpu1", "IFC_NATS_URL=" + ingest.nats,
		"IFC_NATS_USER=tool", "IFC_NATS_PASSWORD=tool-secret", "IFC_BATCH_WORKERS=1"}}
	gpu.startWorkerNode(t)
	gpu.ready(t, 2*time.Minute)

	// A worker answers health, readiness and metrics, and nothing else.
	for path, want := range map[string]int{"/api/v1/health": 200, "/api/v1/ready": 200, "/metrics": 200, "/api/v1/cameras": 404, "/": 404} {
		resp, err := httpGet("http://" + gpu.http + path)
		if err != nil || resp != want {
			t.Fatalf("GET %s on the worker: %d %v, want %d", path, resp, err, want)
		}
	}

	nc, err := nats.Connect(ingest.nats, nats.UserInfo("tool", "tool-secret"))
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
	batch := startClusterBatch(t, ingest)
	postJSON(t, "http://"+ingest.http+"/api/v1/cameras", `{"id":"lobby","pipeline":"small","source":"file:///usr/share/doc/opencv-doc/examples/data/vtest.avi"}`)
	batch.waitDone(t, 1)
	batch.check(t, []*clusterNode{ingest, gpu})
	shares := map[string]string{}
	for _, nd := range []*clusterNode{ingest, gpu} {
		shares[nd.name] = nodeMetric(nd, `imageflow_batch_files_total{state="done"}`)
	}
	fmt.Printf("worker batch: %d pictures, each done once; files done per node: ingest1=%s gpu1=%s\n", clusterBatchFiles, shares["ingest1"], shares["gpu1"])
	for name, v := range shares {
		if n, _ := strconv.Atoi(v); n == 0 {
			t.Fatalf("node %s did no batch work: %v", name, shares)
		}
	}

	// The camera's pipeline runs on the worker, and its results match the
	// camera's access units by RTP timestamp.
	testkit.WaitFor(t, 60*time.Second, "live results from the worker", func() bool {
		n, matched := live.count("gpu1")
		return n >= 8 && matched >= 8
	})
	live.mu.Lock()
	t.Logf("live results by node while the worker is up: %v (matching a video RTP timestamp: %v)", live.byNode, live.matched)
	lastIngest := live.last["ingest1"]
	live.mu.Unlock()
	if !lastIngest.IsZero() && time.Since(lastIngest) < 2*time.Second {
		t.Fatalf("the ingest node still publishes results for the shared camera (last %s ago)", time.Since(lastIngest))
	}
	if m := nodeMetric(gpu, `imageflow_live_results_total{camera="lobby",pipeline="small"}`); m == "0" {
		t.Fatalf("the worker's metrics count no live results")
	}

	// The worker dies: the ingest node takes its camera's pipeline back.
	before, _ := live.count("ingest1")
	if err := gpu.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	_ = gpu.cmd.Wait()
	testkit.WaitFor(t, 30*time.Second, "live results from the ingest node after the worker's kill", func() bool {
		n, _ := live.count("ingest1")
		return n > before
	})
	fmt.Printf("worker live handover: results from the ingest node %.2fs after kill -9 of the worker (pool beat 1s, stale after 3s)\n", time.Since(killed).Seconds())
	if !strings.Contains(ingest.logs.String(), "live pipeline runs here") {
		t.Fatalf("ingest node log has no handover line:\n%s", ingest.logs.String())
	}
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
