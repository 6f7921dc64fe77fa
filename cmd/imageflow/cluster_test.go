package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/imageflowcanvas/imageflow/internal/testkit"
	"github.com/imageflowcanvas/imageflow/webapp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// clusterNode is one `imageflow serve` process of a test cluster.
type clusterNode struct {
	name, data, clusterAddr string
	env                     []string
	cmd                     *exec.Cmd
	logs                    *testkit.LockedBuffer
	http, nats, rtsp        string
}

// start runs the node; ready waits for it.
func (n *clusterNode) start(t *testing.T, demo bool) {
	t.Helper()
	args := []string{"serve", "--data", n.data, "--http", "127.0.0.1:0", "--rtsp", "127.0.0.1:0", "--rtsp-udp", "", "--grpc", "",
		"--webrtc-udp", "127.0.0.1:0", "--nats", "127.0.0.1:0", fmt.Sprintf("--demo=%v", demo)}
	n.cmd = exec.Command(binary(t), args...)
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

func (n *clusterNode) ready(t *testing.T, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		var li struct {
			HTTP string `json:"http"`
			NATS string `json:"nats"`
			RTSP string `json:"rtsp"`
			PID  int    `json:"pid"`
		}
		if b, err := os.ReadFile(filepath.Join(n.data, "listen.json")); err == nil && json.Unmarshal(b, &li) == nil && li.PID == n.cmd.Process.Pid {
			if resp, err := http.Get("http://" + li.HTTP + "/api/v1/ready"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					n.http, n.nats, n.rtsp = li.HTTP, li.NATS, li.RTSP
					return
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s not ready within %s; logs:\n%s", n.name, within, n.logs.String())
}

type clusterCamera struct {
	ID    string `json:"id"`
	Owner string `json:"owner"`
}

func (n *clusterNode) cameras(t *testing.T) map[string]string {
	t.Helper()
	var out struct{ Items []clusterCamera }
	if err := getJSON("http://"+n.http+"/api/v1/cameras", &out); err != nil {
		return nil
	}
	m := map[string]string{}
	for _, c := range out.Items {
		m[c.ID] = c.Owner
	}
	return m
}

// ingests lists the cameras whose source runs in this process, from its
// own /metrics: a camera counted on two nodes is owned twice.
func (n *clusterNode) ingests() map[string]bool {
	out, _ := n.ingestsWithin(30 * time.Second)
	return out
}

func getJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func postJSON(t *testing.T, url, body string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("POST %s: %s", url, resp.Status)
	}
}

func newCluster(t *testing.T, n int, password string) []*clusterNode {
	var routes []string
	var nodes []*clusterNode
	for i := 0; i < n; i++ {
		addr := freePort(t)
		routes = append(routes, "nats-route://"+addr)
		nodes = append(nodes, &clusterNode{name: fmt.Sprintf("node%d", i+1), data: t.TempDir(), clusterAddr: addr})
	}
	for _, nd := range nodes {
		nd.env = []string{"IFC_CLUSTER_NAME=ifc-test", "IFC_NODE=" + nd.name, "IFC_CLUSTER_LISTEN=" + nd.clusterAddr,
			"IFC_CLUSTER_ROUTES=" + strings.Join(routes, ","), "IFC_CLUSTER_USER=route", "IFC_CLUSTER_PASSWORD=" + password,
			"IFC_REPLICAS=3", "IFC_NATS_USER=tool", "IFC_NATS_PASSWORD=tool-secret", "IFC_DETECT_FPS=2"}
	}
	return nodes
}

// TestClusterSurvivesNodeLoss is the cluster acceptance test: three
// binaries with replicas=3; cameras made on node 1 are listed everywhere
// and each is ingested by exactly one node; the demo camera's owner is
// killed with SIGKILL and the time until its video flows again from
// another node is measured; the state survives; the killed node rejoins
// and no camera is owned twice; a node with a wrong route password is
// refused and the refusal is logged.
func TestClusterSurvivesNodeLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	nodes := newCluster(t, 3, "route-secret-1")
	for i, nd := range nodes {
		nd.start(t, i == 0)
	}
	for _, nd := range nodes {
		nd.ready(t, 3*time.Minute)
	}
	postJSON(t, "http://"+nodes[0].http+"/api/v1/cameras", `{"id":"lobby","source":"file:///usr/share/doc/opencv-doc/examples/data/vtest.avi"}`)
	postJSON(t, "http://"+nodes[0].http+"/api/v1/cameras", `{"id":"yard","source":"file:///usr/share/doc/opencv-doc/examples/data/vtest.avi"}`)

	// Every node lists every camera with the same single owner, and that
	// owner is the only process ingesting it.
	cams := []string{"demo", "lobby", "yard"}
	settled := func(live []*clusterNode, within time.Duration) map[string]string {
		t.Helper()
		deadline := time.Now().Add(within)
		var last string
		for time.Now().Before(deadline) {
			owners, ok := live[0].cameras(t), true
			for _, nd := range live[1:] {
				if other := nd.cameras(t); fmt.Sprint(other) != fmt.Sprint(owners) {
					ok = false
				}
			}
			ingest := map[string][]string{}
			for _, nd := range live {
				for cam := range nd.ingests() {
					ingest[cam] = append(ingest[cam], nd.name)
				}
			}
			for _, cam := range cams {
				if owners[cam] == "" || len(ingest[cam]) != 1 || ingest[cam][0] != owners[cam] {
					ok = false
				}
			}
			last = fmt.Sprintf("owners %v ingest %v", owners, ingest)
			if ok {
				return owners
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatalf("cameras not placed once each within %s: %s", within, last)
		return nil
	}
	owners := settled(nodes, 90*time.Second)
	var load struct{ Items []map[string]any }
	_ = getJSON("http://"+nodes[1].http+"/api/v1/nodes", &load)
	t.Logf("placement: %v; nodes: %v", owners, load.Items)

	// Any node serves any camera: an RTSP reader on a node that does not
	// ingest the demo camera gets its video over the route.
	for _, nd := range nodes {
		if nd.name == owners["demo"] {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-rtsp_transport", "tcp",
			"-select_streams", "v:0", "-count_packets", "-read_intervals", "%+2",
			"-show_entries", "stream=codec_name,width,height,nb_read_packets", "-of", "csv=p=0",
			"rtsp://"+nd.rtsp+"/demo").CombinedOutput()
		cancel()
		if f := strings.Split(strings.TrimSpace(string(out)), ","); err != nil || len(f) < 4 || f[1] != "768" || f[3] == "0" {
			t.Fatalf("RTSP read of the demo camera (ingested on %s) from %s: %v: %q", owners["demo"], nd.name, err, out)
		}
		t.Logf("RTSP reader on %s (camera on %s): %s", nd.name, owners["demo"], strings.TrimSpace(string(out)))
		// The REST API answers the same there: the owner's live state.
		var cam struct{ State, Owner string }
		if err := getJSON("http://"+nd.http+"/api/v1/cameras/demo", &cam); err != nil || cam.State != "online" || cam.Owner != owners["demo"] {
			t.Fatalf("GET /cameras/demo on %s: %+v %v", nd.name, cam, err)
		}
		break
	}

	// A viewer on a node that does not ingest the demo camera plays it in
	// Chromium with detection boxes: the video and the results reach that
	// node's WHEP egress over the route.
	for _, nd := range nodes {
		if nd.name != owners["demo"] {
			t.Run("ViewerOnAnotherNode", func(t *testing.T) { clusterViewer(t, nd, owners["demo"]) })
			break
		}
	}

	// Placement may have evened the load meanwhile (a camera moves at
	// most once per 10 s): the victim is the demo camera's owner now.
	owners = settled(nodes, 60*time.Second)
	var victim *clusterNode
	var survivors []*clusterNode
	for _, nd := range nodes {
		if nd.name == owners["demo"] {
			victim = nd
		} else {
			survivors = append(survivors, nd)
		}
	}
	nc, err := nats.Connect("nats://"+strings.TrimPrefix(survivors[0].nats, "nats://"), nats.UserInfo("tool", "tool-secret"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	frames := make(chan time.Time, 1024)
	sub, err := nc.Subscribe("ifc.video.demo", func(*nats.Msg) {
		select {
		case frames <- time.Now():
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	select {
	case <-frames:
	case <-time.After(30 * time.Second):
		t.Fatal("no demo video on the bus before the kill")
	}

	// A batch of 100 pictures runs across the cluster while the owner dies.
	batch := startClusterBatch(t, survivors[0])
	batch.waitDone(t, 5)

	// Taking a lease over needs the leases stream's Raft leader: when the
	// victim leads it, nats-server elects another first (4-9 s).
	leasesLeader := ""
	if js, err := jetstream.New(nc); err == nil {
		if st, err := js.Stream(context.Background(), "KV_leases"); err == nil && st.CachedInfo().Cluster != nil {
			leasesLeader = st.CachedInfo().Cluster.Leader
		}
	}
	if !victim.ingests()["demo"] {
		t.Logf("the demo camera moved off %s before the kill (rebalancing); the takeover below is not measured from its owner", victim.name)
	}
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	_ = victim.cmd.Wait()
	// Drain what was already delivered before the kill.
	for len(frames) > 0 {
		<-frames
	}
	var resumed time.Duration
	for resumed == 0 {
		select {
		case at := <-frames:
			if at.After(killed) {
				resumed = at.Sub(killed)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("demo video did not resume within 60s of killing %s; logs:\n%s", victim.name, survivors[0].logs.String())
		}
	}
	fmt.Printf("cluster takeover: demo camera video flows again %.2fs after kill -9 of its owner %s (lease 2.5s, 1s once its route is gone; leases stream leader was %s; placement %v)\n", resumed.Seconds(), victim.name, leasesLeader, owners)
	t.Logf("killed %s at %s", victim.name, killed.UTC().Format("15:04:05.000"))
	for _, nd := range survivors {
		for _, line := range strings.Split(nd.logs.String(), "\n") {
			if os.Getenv("IFC_CLUSTER_DEBUG") != "" && strings.Contains(line, "demo") && line > "time="+killed.UTC().Add(-time.Second).Format("2006-01-02T15:04:05") {
				t.Logf("%s: %s", nd.name, line)
				continue
			}
			if strings.Contains(line, "camera taken over") || strings.Contains(line, "camera placed here") || strings.Contains(line, "camera lease") || strings.Contains(line, "handed") {
				t.Logf("%s: %s", nd.name, line)
			}
		}
	}

	after := settled(survivors, 60*time.Second)
	if after["demo"] == victim.name || len(after) != 3 {
		t.Fatalf("after the kill: %v", after)
	}
	batch.check(t, append(survivors, victim))
	var pipes struct{ Items []struct{ ID string } }
	if err := getJSON("http://"+survivors[1].http+"/api/v1/pipelines", &pipes); err != nil || len(pipes.Items) == 0 {
		t.Fatalf("pipelines on a survivor: %v %v", pipes, err)
	}

	victim.start(t, false)
	victim.ready(t, 3*time.Minute)
	final := settled(nodes, 60*time.Second)
	t.Logf("after rejoin: %v", final)

	// A camera pinned to the rejoined node is ingested there and nowhere else.
	postJSON(t, "http://"+survivors[0].http+"/api/v1/cameras",
		`{"id":"pinned","node":"`+victim.name+`","source":"file:///usr/share/doc/opencv-doc/examples/data/vtest.avi"}`)
	cams = append(cams, "pinned")
	if final = settled(nodes, 60*time.Second); final["pinned"] != victim.name {
		t.Fatalf("camera pinned to %s is owned by %q", victim.name, final["pinned"])
	}

	// A fourth node with a wrong route password is refused, and node 1 says so.
	bad := newCluster(t, 1, "wrong-password")[0]
	bad.env = append(nodes[0].env[:0:0], nodes[0].env...)
	for i, e := range bad.env {
		switch {
		case strings.HasPrefix(e, "IFC_CLUSTER_PASSWORD="):
			bad.env[i] = "IFC_CLUSTER_PASSWORD=wrong-password"
		case strings.HasPrefix(e, "IFC_NODE="):
			bad.env[i] = "IFC_NODE=intruder"
		case strings.HasPrefix(e, "IFC_CLUSTER_LISTEN="):
			bad.env[i] = "IFC_CLUSTER_LISTEN=" + bad.clusterAddr
		}
	}
	bad.start(t, false)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(nodes[0].logs.String()+nodes[1].logs.String()+nodes[2].logs.String(), "authentication error") {
		if time.Now().After(deadline) {
			t.Fatalf("node1 did not log the refused route; its log:\n%s", nodes[0].logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	var list struct{ Items []struct{ Node string } }
	if err := getJSON("http://"+nodes[0].http+"/api/v1/nodes", &list); err != nil {
		t.Fatal(err)
	}
	for _, n := range list.Items {
		if n.Node == "intruder" {
			t.Fatalf("a node with a wrong password joined: %v", list)
		}
	}
	if len(list.Items) != 3 {
		t.Fatalf("nodes: %+v", list.Items)
	}
}

// clusterBatch is a `imageflow batch run` of 100 pictures against one node.
type clusterBatch struct {
	base, out string
	cli       *exec.Cmd
	done      chan error
	stdout    *testkit.LockedBuffer
	stderr    *testkit.LockedBuffer
	id        string
}

const clusterBatchFiles = 100

func startClusterBatch(t *testing.T, nd *clusterNode) *clusterBatch {
	t.Helper()
	jpeg, err := os.ReadFile("/usr/share/doc/opencv-doc/examples/data/messi5.jpg")
	if err != nil {
		t.Skip("messi5.jpg missing (opencv-doc)")
	}
	in := t.TempDir()
	var files []string
	for i := 0; i < clusterBatchFiles; i++ {
		f := filepath.Join(in, fmt.Sprintf("p%03d.jpg", i))
		if err := os.WriteFile(f, jpeg, 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	b := &clusterBatch{base: "http://" + nd.http, out: t.TempDir(), done: make(chan error, 1), stdout: &testkit.LockedBuffer{}, stderr: &testkit.LockedBuffer{}}
	postJSON(t, b.base+"/api/v1/pipelines", `{"id":"small","steps":[{"id":"small","processor":"resize","params":{"width":320}},{"id":"blur","processor":"filter","params":{"mode":"blur"},"inputs":["small"]}]}`)
	b.cli = exec.Command(binary(t), append([]string{"batch", "run", "--server", b.base, "--pipeline", "small", "--out", b.out, "--quiet"}, files...)...)
	b.cli.Stdout, b.cli.Stderr = b.stdout, b.stderr
	if err := b.cli.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { b.done <- b.cli.Wait() }()
	t.Cleanup(func() {
		if b.cli.ProcessState == nil {
			_ = b.cli.Process.Kill()
			<-b.done
		}
	})
	return b
}

func (b *clusterBatch) get() (x batchExecution, err error) {
	err = getJSON(b.base+"/api/v1/executions/"+b.id, &x)
	return x, err
}

// waitDone waits until n pictures are done.
func (b *clusterBatch) waitDone(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if b.id == "" {
			if f := strings.Fields(b.stderr.String()); len(f) >= 2 && f[0] == "execution" {
				b.id = strings.TrimSuffix(f[1], ":")
			}
		} else if x, err := b.get(); err == nil && x.Done >= n {
			t.Logf("batch: %d of %d done before the kill", x.Done, clusterBatchFiles)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("batch made no progress; stderr:\n%s", b.stderr.String())
}

// check waits for the batch to end and checks 100 results, each once, and
// which nodes did the work.
func (b *clusterBatch) check(t *testing.T, nodes []*clusterNode) {
	t.Helper()
	select {
	case err := <-b.done:
		if err != nil {
			t.Fatalf("batch cli: %v\n%s\n%s", err, b.stdout.String(), b.stderr.String())
		}
	case <-time.After(3 * time.Minute):
		t.Fatalf("batch did not finish; stderr:\n%s", b.stderr.String())
	}
	if !strings.Contains(b.stdout.String(), fmt.Sprintf("done: %d done, 0 failed", clusterBatchFiles)) {
		t.Fatalf("batch cli output:\n%s", b.stdout.String())
	}
	x, err := b.get()
	if err != nil || x.State != "done" || x.Done != clusterBatchFiles || len(x.Files) != clusterBatchFiles {
		t.Fatalf("execution record: %+v %v", x, err)
	}
	entries, _ := os.ReadDir(b.out)
	if len(entries) != 2*clusterBatchFiles {
		t.Fatalf("--out holds %d entries, want %d (an image and a result per picture)", len(entries), 2*clusterBatchFiles)
	}
	var shares []string
	for _, nd := range nodes {
		if nd.cmd.ProcessState != nil {
			shares = append(shares, nd.name+"=killed")
			continue
		}
		shares = append(shares, fmt.Sprintf("%s=%s", nd.name, nodeMetric(nd, `imageflow_batch_files_total{state="done"}`)))
	}
	t.Logf("batch of %d across the cluster: done exactly once each; files done per node: %s", clusterBatchFiles, strings.Join(shares, " "))
}

// nodeMetric reads one series of a node's /metrics ("" when absent).
func nodeMetric(nd *clusterNode, series string) string {
	resp, err := http.Get("http://" + nd.http + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return "0"
}

// clusterViewer opens the demo camera's live page on node nd (the camera is
// ingested on owner) in headless Chromium and waits until the page decoded
// frames and drew boxes on frames whose rtpTimestamp equals the result's.
func clusterViewer(t *testing.T, nd *clusterNode, owner string) {
	testkit.NeedCommand(t, "chromium")
	if !webapp.Built() {
		testkit.Need(t, "web UI not built (scripts/build-webapp.sh)")
	}
	browser, _ := testkit.Chromium(t)
	tab, cancel := chromedp.NewContext(browser)
	defer cancel()
	// The API needs no login here; the page reads the camera and plays it.
	if err := chromedp.Do(tab, chromedp.Navigate("http://"+nd.http+"/cameras/demo")); err != nil {
		t.Fatal(err)
	}
	var state string
	testkit.WaitFor(t, 90*time.Second, "frames decoded and boxes on matching frames on "+nd.name, func() bool {
		ok, err := chromedp.Run(tab, chromedp.Evaluate[bool](`!!(window.__ifc && window.__ifc.framesDecoded > 10 && window.__ifc.exactFrames >= 3)`))
		state, _ = chromedp.Run(tab, chromedp.Evaluate[string](`JSON.stringify(window.__ifc || null)`))
		if err != nil || !ok {
			time.Sleep(200 * time.Millisecond)
			return false
		}
		return true
	})
	t.Logf("viewer on %s (camera ingested on %s): %s", nd.name, owner, state)
	var sessions struct{ Items []map[string]any }
	_ = getJSON("http://"+nd.http+"/api/v1/nodes", &sessions)
	t.Logf("nodes while viewing: %v", sessions.Items)
}
