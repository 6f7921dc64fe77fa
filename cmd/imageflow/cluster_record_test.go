package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// recordedSegment is a segment as GET /cameras/{id}/recordings lists it.
type recordedSegment struct {
	Start, End time.Time
	Complete   bool
	Node       string
}

// maxHandoverOverlap is how long two nodes may record one camera at once
// while its lease moves: an owner cut off stops 3.5 s after its last renewal
// and a frozen one at once on resume (server/placement.go); 5 s leaves room
// for a loaded machine.
const maxHandoverOverlap = 5 * time.Second

// TestClusterRecordingFollowsOwner records the demo camera in a three-node
// cluster, kills its owner with SIGKILL and checks that the node taking the
// camera over records it from then on, that a survivor lists the segments of
// both nodes, and that an export spanning the failover, asked of a
// survivor, plays in ffprobe and holds every recorded second.
func TestClusterRecordingFollowsOwner(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	nodes := newCluster(t, 3, "route-secret-2")
	for i, nd := range nodes {
		nd.env = append(nd.env, "IFC_RECORD_SEGMENT=2s")
		nd.start(t, i == 0)
	}
	for _, nd := range nodes {
		nd.ready(t, 3*time.Minute)
	}
	var demo struct{ Name, Source, Pipeline string }
	if err := getJSON("http://"+nodes[0].http+"/api/v1/cameras/demo", &demo); err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{"id": "demo", "name": demo.Name, "source": demo.Source, "pipeline": demo.Pipeline, "record": true})
	req, _ := http.NewRequest("PUT", "http://"+nodes[0].http+"/api/v1/cameras/demo", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("PUT /cameras/demo with record: %s", resp.Status)
	}

	// segments lists the demo camera's recordings as nd sees them.
	segments := func(nd *clusterNode) []recordedSegment {
		var list struct{ Segments []recordedSegment }
		_ = getJSON("http://"+nd.http+"/api/v1/cameras/demo/recordings", &list)
		return list.Segments
	}
	// waitSegments waits until nd lists n complete segments written by node.
	waitSegments := func(nd *clusterNode, node string, n int) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for time.Now().Before(deadline) {
			k := 0
			for _, s := range segments(nd) {
				if s.Complete && s.Node == node {
					k++
				}
			}
			if k >= n {
				return
			}
			time.Sleep(250 * time.Millisecond)
		}
		t.Fatalf("%s does not list %d complete segments of %s: %+v", nd.name, n, node, segments(nd))
	}

	var owner string
	for deadline := time.Now().Add(60 * time.Second); owner == "" && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		owner = nodes[0].cameras(t)["demo"]
	}
	var victim *clusterNode
	var survivors []*clusterNode
	for _, nd := range nodes {
		if nd.name == owner {
			victim = nd
		} else {
			survivors = append(survivors, nd)
		}
	}
	if victim == nil {
		t.Fatalf("demo camera has no owner: %v", nodes[0].cameras(t))
	}
	// Another node lists the owner's segments as they are written.
	waitSegments(survivors[0], victim.name, 2)
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	_ = victim.cmd.Wait()

	// The camera may move once more while a Raft group elects a leader (a
	// survivor that took it cannot renew its lease in time): wait for two
	// complete segments from one node other than the victim.
	var heir string
	for deadline := time.Now().Add(90 * time.Second); heir == "" && time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		count := map[string]int{}
		for _, s := range segments(survivors[1]) {
			if s.Complete && s.Node != victim.name && s.Start.After(killed) {
				if count[s.Node]++; count[s.Node] >= 2 {
					heir = s.Node
				}
			}
		}
	}
	if heir == "" {
		t.Fatalf("no node recorded the demo camera after its owner %s was killed: %+v", victim.name, segments(survivors[1]))
	}
	for _, nd := range survivors {
		var list struct{ Recording bool }
		if err := getJSON("http://"+nd.http+"/api/v1/cameras/demo/recordings", &list); err != nil || !list.Recording {
			t.Fatalf("%s: recordings list says recording=%v (%v) while %s records", nd.name, list.Recording, err, heir)
		}
	}
	segs := segments(survivors[1])
	var before, after int
	var since, until time.Time
	for i, s := range segs {
		if i > 0 && s.Start.Before(segs[i-1].End) {
			// A handover may overlap by as long as the old owner takes to
			// notice it lost the lease (maxHandoverOverlap); more, or an
			// overlap on one node, is a bug.
			overlap := segs[i-1].End.Sub(s.Start)
			if s.Node == segs[i-1].Node || overlap > maxHandoverOverlap {
				t.Fatalf("segments overlap by %s (two recorders at once): %+v then %+v", overlap, segs[i-1], s)
			}
			t.Logf("handover overlap of %s between %s and %s", overlap, segs[i-1].Node, s.Node)
		}
		switch {
		case s.Node == victim.name && s.Complete:
			before++
			if since.IsZero() {
				since = s.Start
			}
		case s.Node != victim.name && s.Complete:
			after++
			until = s.End
		}
	}
	// The export closes holes and drops what two nodes recorded at once
	// (record.Export): it holds the union of the listed segments' spans.
	var recorded time.Duration
	var covered time.Time
	for _, s := range segs {
		from, to := s.Start, s.End
		if from.Before(since) {
			from = since
		}
		if from.Before(covered) {
			from = covered
		}
		if to.After(until) {
			to = until
		}
		if to.After(from) {
			recorded += to.Sub(from)
			covered = to
		}
	}
	fmt.Printf("cluster recording: %s wrote %d complete segments before kill -9, the survivors %d after it (%s owns the camera now); export %s..%s holds %.1fs recorded\n",
		victim.name, before, after, heir, since.Format(time.TimeOnly), until.Format(time.TimeOnly), recorded.Seconds())

	// One export across the failover, from a survivor; ffprobe decodes it.
	q := url.Values{"since": {since.Format(time.RFC3339Nano)}, "until": {until.Format(time.RFC3339Nano)}}
	resp, err = http.Get("http://" + survivors[0].http + "/api/v1/cameras/demo/recordings/export?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	mp4, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("export: %s %v: %.200s", resp.Status, err, mp4)
	}
	file := filepath.Join(t.TempDir(), "failover.mp4")
	if err := os.WriteFile(file, mp4, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames",
		"-show_entries", "stream=nb_read_frames:format=duration", "-of", "default=nw=1:nk=1", file).CombinedOutput()
	f := strings.Fields(string(out))
	if err != nil || len(f) != 2 {
		t.Fatalf("ffprobe of the export: %v: %s", err, out)
	}
	frames, _ := strconv.Atoi(f[0])
	duration, _ := strconv.ParseFloat(f[1], 64)
	t.Logf("export across the failover: %d bytes, %d frames, %.2fs", len(mp4), frames, duration)
	if frames == 0 {
		t.Fatalf("export across the failover: no frames; the listed segments hold %.1fs", recorded.Seconds())
	}
	if duration < recorded.Seconds()-1.5 || duration > recorded.Seconds()+1.5 {
		t.Fatalf("export across the failover holds %.2fs of the %.1fs the listed segments hold (%d frames)", duration, recorded.Seconds(), frames)
	}
}
