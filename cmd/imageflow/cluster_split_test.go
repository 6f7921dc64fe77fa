package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ingestsWithin is ingests with a deadline: a frozen node does not answer,
// and a frozen process publishes nothing, so it counts as ingesting nothing.
func (n *clusterNode) ingestsWithin(d time.Duration) (map[string]bool, bool) {
	client := http.Client{Timeout: d}
	resp, err := client.Get("http://" + n.http + "/metrics")
	if err != nil {
		return nil, false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, false
	}
	out := map[string]bool{}
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, `imageflow_camera_state{camera="`) && strings.Contains(line, `state="online"} 1`) {
			cam := strings.TrimPrefix(line, `imageflow_camera_state{camera="`)
			out[cam[:strings.Index(cam, `"`)]] = true
		}
	}
	return out, true
}

// ingestWatch samples which nodes ingest which camera and keeps, per
// camera, the longest run of samples in which two nodes ingested it.
type ingestWatch struct {
	nodes   []*clusterNode
	double  map[string]time.Duration // camera → longest double ingest seen
	since   map[string]time.Time     // camera → start of the current double run
	last    map[string]string        // camera → its single ingesting node at the last sample
	moves   map[string]int           // camera → changes of its single ingesting node
	where   map[string]map[string]bool
	samples int
	// answered is whether every node answered the last sample.
	answered bool
}

func newIngestWatch(nodes []*clusterNode) *ingestWatch {
	return &ingestWatch{nodes: nodes, double: map[string]time.Duration{}, since: map[string]time.Time{},
		last: map[string]string{}, moves: map[string]int{}, where: map[string]map[string]bool{}}
}

// sample reads every node once and returns camera → ingesting nodes.
func (w *ingestWatch) sample() map[string][]string {
	at := time.Now()
	by := map[string][]string{}
	w.answered = true
	for _, nd := range w.nodes {
		got, ok := nd.ingestsWithin(300 * time.Millisecond)
		w.answered = w.answered && ok
		for cam := range got {
			by[cam] = append(by[cam], nd.name)
		}
	}
	w.samples++
	for cam, list := range by {
		if w.where[cam] == nil {
			w.where[cam] = map[string]bool{}
		}
		for _, nd := range list {
			w.where[cam][nd] = true
		}
		if len(list) > 1 {
			if _, ok := w.since[cam]; !ok {
				w.since[cam] = at
			}
			if d := time.Since(w.since[cam]); d > w.double[cam] {
				w.double[cam] = d
			}
			continue
		}
		delete(w.since, cam)
		if prev := w.last[cam]; prev != "" && prev != list[0] {
			w.moves[cam]++
		}
		w.last[cam] = list[0]
	}
	for cam := range w.since {
		if len(by[cam]) < 2 {
			delete(w.since, cam)
		}
	}
	return by
}

// watchUntil samples every 100 ms until done says so or within passes.
func (w *ingestWatch) watchUntil(within time.Duration, done func(map[string][]string) bool) (map[string][]string, bool) {
	deadline := time.Now().Add(within)
	var by map[string][]string
	for time.Now().Before(deadline) {
		by = w.sample()
		if done(by) {
			return by, true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return by, false
}

// once reports whether every camera is ingested by exactly one node.
func once(cams []string) func(map[string][]string) bool {
	return func(by map[string][]string) bool {
		for _, cam := range cams {
			if len(by[cam]) != 1 {
				return false
			}
		}
		return true
	}
}

// TestClusterSplitAndRebalance freezes (SIGSTOP) the node ingesting a
// camera for longer than the lease, as a partition or a stalled box would:
// its cameras move, and no camera is ingested by two nodes for longer than
// the lease (2.5 s) during the freeze or after the node resumes. Then the
// resumed node, holding nothing, gets cameras back one at a time until the
// load is even, never a pinned one, and nothing moves once it is even.
func TestClusterSplitAndRebalance(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	const lease = 2500 * time.Millisecond
	const freeze = 12 * time.Second
	nodes := newCluster(t, 3, "route-secret-2")
	// Only node3 carries the label the camera "gpu" asks for.
	nodes[2].env = append(nodes[2].env, "IFC_NODE_LABELS=gpu")
	for _, nd := range nodes {
		nd.start(t, false)
	}
	// On failure, each node's placement decisions, to tell a rebalancing
	// move from a takeover after a lapsed lease.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, nd := range nodes {
			var lines []string
			for _, l := range strings.Split(nd.logs.String(), "\n") {
				if strings.Contains(l, "camera taken over") || strings.Contains(l, "handed away") ||
					strings.Contains(l, "leadership") || strings.Contains(l, "camera started") || strings.Contains(l, "lease") {
					lines = append(lines, l)
				}
			}
			t.Logf("placement lines of %s:\n%s", nd.name, strings.Join(lines, "\n"))
		}
	})
	for _, nd := range nodes {
		nd.ready(t, 3*time.Minute)
	}
	cams := []string{"c1", "c2", "c3", "gpu", "pin"}
	for _, id := range cams[:3] {
		postJSON(t, "http://"+nodes[0].http+"/api/v1/cameras", `{"id":"`+id+`","source":"file:///usr/share/doc/opencv-doc/examples/data/vtest.avi"}`)
	}
	postJSON(t, "http://"+nodes[1].http+"/api/v1/cameras", `{"id":"gpu","labels":["gpu"],"source":"file:///usr/share/doc/opencv-doc/examples/data/vtest.avi"}`)
	// The node ingesting c1 is frozen below; a camera pinned to another
	// node stays there, even when that node carries the most.
	w := newIngestWatch(nodes)
	by, ok := w.watchUntil(90*time.Second, once(cams[:4]))
	if !ok {
		t.Fatalf("cameras not ingested once each: %v", by)
	}
	// The victim ingests a free camera; node3 (the only one for "gpu")
	// only when no other node does.
	var victim *clusterNode
	for _, nd := range nodes {
		for _, cam := range cams[:3] {
			if by[cam][0] == nd.name && (victim == nil || victim == nodes[2]) {
				victim = nd
			}
		}
	}
	pinnedTo := nodes[0]
	if pinnedTo == victim {
		pinnedTo = nodes[1]
	}
	postJSON(t, "http://"+nodes[0].http+"/api/v1/cameras",
		`{"id":"pin","node":"`+pinnedTo.name+`","source":"file:///usr/share/doc/opencv-doc/examples/data/vtest.avi"}`)
	if by, ok = w.watchUntil(60*time.Second, once(cams)); !ok || by["pin"][0] != pinnedTo.name {
		t.Fatalf("cameras not ingested once each, pin on %s: %v", pinnedTo.name, by)
	}
	t.Logf("before the freeze: %v", by)

	held := map[string]bool{}
	for _, cam := range cams {
		if by[cam][0] == victim.name {
			held[cam] = true
		}
	}
	t.Logf("freezing %s at %s", victim.name, time.Now().UTC().Format("15:04:05.000"))
	if err := victim.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	// Freeze for longer than a Raft election of a group the victim led
	// (4-9 s) and the lease after it: its free cameras move meanwhile.
	moved := map[string]time.Duration{}
	w.watchUntil(freeze, func(by map[string][]string) bool {
		for _, cam := range cams {
			if _, ok := moved[cam]; !ok && held[cam] && len(by[cam]) == 1 && by[cam][0] != victim.name {
				moved[cam] = time.Since(frozen)
			}
		}
		return false
	})
	if err := victim.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	by, ok = w.watchUntil(60*time.Second, func(by map[string][]string) bool { return w.answered && once(cams)(by) })
	if !ok {
		t.Fatalf("after the node resumed, cameras not ingested once each: %v", by)
	}
	settle := time.Since(resumed)
	t.Cleanup(func() {
		if os.Getenv("IFC_CLUSTER_DEBUG") == "" {
			return
		}
		for _, nd := range nodes {
			for _, line := range strings.Split(nd.logs.String(), "\n") {
				if strings.Contains(line, "camera ") && !strings.Contains(line, "camera state") {
					t.Logf("%s: %s", nd.name, line)
				}
			}
		}
	})
	// Stay watching a little: once settled, no camera is owned twice.
	w.watchUntil(3*time.Second, func(by map[string][]string) bool {
		for _, cam := range cams {
			if len(by[cam]) > 1 {
				t.Errorf("after settling, camera %s is ingested on %v", cam, by[cam])
			}
		}
		return false
	})
	var doubles []string
	for _, cam := range cams {
		if d := w.double[cam]; d > 0 {
			doubles = append(doubles, fmt.Sprintf("%s %.2fs", cam, d.Seconds()))
		}
		if w.double[cam] > lease {
			t.Errorf("camera %s was ingested by two nodes for %s, longer than the lease (%s)", cam, w.double[cam].Round(time.Millisecond), lease)
		}
	}
	fmt.Printf("cluster split: %s frozen (SIGSTOP) %s holding %d cameras; moved after %v; after SIGCONT one owner each within %.2fs; double ingest seen (100 ms samples): %v\n",
		victim.name, freeze, len(held), moved, settle.Seconds(), doubles)

	// Rebalancing: the resumed node holds nothing when the freeze cost it
	// its free cameras, the others hold the rest; cameras come back one at
	// a time (at most one per node every 10 s, never the pinned one, the
	// labelled one only to a node with its label) until no node carries
	// two more than another (the leader of the leases Raft group counting
	// two more), and then nothing moves.
	nc, err := nats.Connect("nats://"+strings.TrimPrefix(pinnedTo.nats, "nats://"), nats.UserInfo("tool", "tool-secret"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	load := func(by map[string][]string) (map[string]int, int) {
		m := map[string]int{}
		for _, nd := range nodes {
			m[nd.name] = 0
		}
		for _, cam := range cams {
			if len(by[cam]) > 0 {
				m[by[cam][0]]++
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if st, err := js.Stream(ctx, "KV_leases"); err == nil && st.CachedInfo().Cluster != nil {
			m[st.CachedInfo().Cluster.Leader] += 2
		}
		lo, hi := 1<<30, 0
		for _, v := range m {
			lo, hi = min(lo, v), max(hi, v)
		}
		return m, hi - lo
	}
	first, spread := load(by)
	t.Logf("after the freeze: %v (load with the leases leader's +2: %v, spread %d)", by, first, spread)
	movesBefore := map[string]int{}
	for k, v := range w.moves {
		movesBefore[k] = v
	}
	start := time.Now()
	by, ok = w.watchUntil(90*time.Second, func(by map[string][]string) bool {
		if !once(cams)(by) {
			return false
		}
		_, spread := load(by)
		return spread < 2
	})
	final, _ := load(by)
	if !ok {
		t.Fatalf("load not even within 90s: %v (load %v)", by, final)
	}
	even := time.Since(start)
	// Then nothing moves: watch for another 12 s.
	w.watchUntil(12*time.Second, func(map[string][]string) bool { return false })
	var moves []string
	for _, cam := range cams {
		if n := w.moves[cam] - movesBefore[cam]; n > 0 {
			moves = append(moves, fmt.Sprintf("%s×%d", cam, n))
		}
		if w.moves[cam]-movesBefore[cam] > 1 {
			t.Errorf("camera %s moved %d times while the load was evened", cam, w.moves[cam]-movesBefore[cam])
		}
		if w.double[cam] > lease {
			t.Errorf("camera %s was ingested by two nodes for %s while rebalancing", cam, w.double[cam].Round(time.Millisecond))
		}
	}
	sort.Strings(moves)
	if w.moves["pin"] != 0 || len(w.where["pin"]) != 1 {
		t.Errorf("the camera pinned to %s moved (moves %v, ingested on %v)", pinnedTo.name, w.moves, w.where["pin"])
	}
	if len(w.where["gpu"]) != 1 || !w.where["gpu"][nodes[2].name] {
		t.Errorf("the camera labelled gpu was ingested on %v, want only %s", w.where["gpu"], nodes[2].name)
	}
	fmt.Printf("cluster rebalance: load %v after the resume, %v even %.1fs later; moves %v\n", first, final, even.Seconds(), moves)
}
