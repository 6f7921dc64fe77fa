package main

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/internal/testkit"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// putJSON sends a PUT and fails the test unless it answers 200.
func putJSON(t *testing.T, url, body string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("PUT %s: %s", url, resp.Status)
	}
}

// resultLog keeps the last live result of a camera seen on the bus.
type resultLog struct {
	mu   sync.Mutex
	last *busv1.Result
	at   time.Time
}

// since answers whether a result arriving after t matched want.
func (l *resultLog) since(t time.Time, want func(*busv1.Result) bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last != nil && l.at.After(t) && want(l.last)
}

// TestClusterChangesReachTheOwner changes, through the node that does not
// ingest a camera, first the pipeline the camera runs and then the camera
// itself, and checks that the owning node runs each change (its results
// show it) within seconds: every node's API acts the same on a camera
// wherever it is ingested.
func TestClusterChangesReachTheOwner(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two servers")
	}
	nodes := newCluster(t, 2, "route-secret-c")
	for _, nd := range nodes {
		nd.env = append(nd.env, "IFC_REPLICAS=1")
		nd.start(t, false)
	}
	for _, nd := range nodes {
		nd.ready(t, 3*time.Minute)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, nd := range nodes {
			lines := strings.Split(nd.logs.String(), "\n")
			t.Logf("last log lines of %s:\n%s", nd.name, strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	nc, err := nats.Connect(nodes[0].nats, nats.UserInfo("tool", "tool-secret"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	results := &resultLog{}
	if _, err := nc.Subscribe("ifc.results.lobby", func(m *nats.Msg) {
		var r busv1.Result
		if proto.Unmarshal(m.Data, &r) != nil {
			return
		}
		results.mu.Lock()
		results.last, results.at = &r, time.Now()
		results.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	const clip = "file:///usr/share/doc/opencv-doc/examples/data/vtest.avi"
	postJSON(t, "http://"+nodes[0].http+"/api/v1/pipelines", `{"id":"look","steps":[{"id":"small","processor":"resize","params":{"width":160}}]}`)
	postJSON(t, "http://"+nodes[0].http+"/api/v1/pipelines", `{"id":"other","steps":[{"id":"small","processor":"resize","params":{"width":160}}]}`)
	// Pinned to node1, so that rebalancing cannot move it meanwhile: a new
	// owner would start the changed configuration whether or not the
	// change reached the old one.
	owner, other := nodes[0], nodes[1]
	postJSON(t, "http://"+owner.http+"/api/v1/cameras", `{"id":"lobby","pipeline":"look","node":"node1","source":"`+clip+`"}`)
	testkit.WaitFor(t, 60*time.Second, "results of the first pipeline from node1", func() bool {
		return results.since(time.Time{}, func(r *busv1.Result) bool { return r.Pipeline == "look" && r.Node == owner.name })
	})
	if results.since(time.Time{}, func(r *busv1.Result) bool { _, ok := r.Values["motion"]; return ok }) {
		t.Fatal("the first pipeline has no motion step, yet its result has a motion value")
	}

	// The pipeline gains a motion step through the node that does not
	// ingest the camera: the owner's results carry the step's value.
	changed := time.Now()
	putJSON(t, "http://"+other.http+"/api/v1/pipelines/look",
		`{"id":"look","steps":[{"id":"small","processor":"resize","params":{"width":160}},{"id":"move","processor":"motion","inputs":["small"]}]}`)
	testkit.WaitFor(t, 30*time.Second, "results of the changed pipeline from the owner", func() bool {
		return results.since(changed, func(r *busv1.Result) bool { _, ok := r.Values["motion"]; return ok && r.Node == owner.name })
	})
	fmt.Printf("cluster change: pipeline changed through %s ran on owner %s after %.2fs\n", other.name, owner.name, time.Since(changed).Seconds())
	// Only the owner restarts the camera, once: the node that took the
	// request restarts nothing by itself.
	time.Sleep(time.Second)
	for _, nd := range nodes {
		want := 0
		if nd == owner {
			want = 1
		}
		if got := strings.Count(nd.logs.String(), "pipeline changed, restarting camera"); got != want {
			t.Errorf("%s restarted the camera for the pipeline change %d times, want %d", nd.name, got, want)
		}
	}

	// The camera moves to another pipeline through the same node.
	changed = time.Now()
	putJSON(t, "http://"+other.http+"/api/v1/cameras/lobby", `{"id":"lobby","pipeline":"other","node":"node1","source":"`+clip+`"}`)
	testkit.WaitFor(t, 30*time.Second, "results of the camera's new pipeline", func() bool {
		return results.since(changed, func(r *busv1.Result) bool { return r.Pipeline == "other" && r.Node == owner.name })
	})
	fmt.Printf("cluster change: camera changed through %s ran on its owner after %.2fs\n", other.name, time.Since(changed).Seconds())
	if got := other.cameras(t)["lobby"]; got != owner.name {
		t.Errorf("%s lists the pinned camera's owner as %q, want %s", other.name, got, owner.name)
	}
}
