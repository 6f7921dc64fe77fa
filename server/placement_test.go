package server

import (
	"errors"
	"strings"
	"testing"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// TestCameraLabelsRestrictNodes: a camera restricted by labels may run
// only on a node carrying all of them, a pinned camera only on its node.
func TestCameraLabelsRestrictNodes(t *testing.T) {
	for _, tc := range []struct {
		cam    *busv1.Camera
		node   string
		labels []string
		want   bool
	}{
		{&busv1.Camera{}, "n1", nil, true},
		{&busv1.Camera{Labels: []string{"gpu"}}, "n1", nil, false},
		{&busv1.Camera{Labels: []string{"gpu"}}, "n1", []string{"gpu", "site-b"}, true},
		{&busv1.Camera{Labels: []string{"gpu", "site-a"}}, "n1", []string{"gpu", "site-b"}, false},
		{&busv1.Camera{Node: "n2"}, "n1", nil, false},
		{&busv1.Camera{Node: "n1", Labels: []string{"gpu"}}, "n1", []string{"gpu"}, true},
	} {
		if got := mayRun(tc.cam, tc.node, tc.labels); got != tc.want {
			t.Errorf("camera node=%q labels=%v on %s %v: %v, want %v", tc.cam.Node, tc.cam.Labels, tc.node, tc.labels, got, tc.want)
		}
	}
}

// TestNodeLabelsConfig: node_labels need a cluster and valid, distinct
// labels; they are kept sorted.
func TestNodeLabelsConfig(t *testing.T) {
	for _, labels := range [][]string{{"a b"}, {"gpu", "gpu"}, {"x.y"}} {
		c := Defaults()
		c.ClusterName, c.NodeLabels = "site", labels
		if err := c.Validate(); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "node_labels") {
			t.Errorf("node_labels %q: %v", labels, err)
		}
	}
	c := Defaults()
	c.NodeLabels = []string{"gpu"}
	if err := c.Validate(); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "node_labels") {
		t.Errorf("node_labels without a cluster: %v", err)
	}
	c = Defaults()
	c.ClusterName, c.NodeLabels = "site", []string{"site-b", "gpu"}
	if err := c.Validate(); err != nil || strings.Join(c.NodeLabels, ",") != "gpu,site-b" {
		t.Fatalf("valid node_labels: %v %v", err, c.NodeLabels)
	}
}

// TestCameraLabelsAPI: bad labels get a 400 and change nothing; good ones
// are stored and shown.
func TestCameraLabelsAPI(t *testing.T) {
	ts := startServer(t, testConfig(t.TempDir()))
	src := "file:///usr/share/doc/opencv-doc/examples/data/vtest.avi"
	for _, bad := range []string{`["a b"]`, `["gpu","gpu"]`, `["` + strings.Repeat("x", 300) + `"]`, `[1]`} {
		st, body, _ := ts.do("POST", "/api/v1/cameras", "", `{"id":"lab","enabled":false,"source":"`+src+`","labels":`+bad+`}`)
		if st != 400 {
			t.Fatalf("labels %s: %d %s", bad, st, body)
		}
	}
	if st, _, _ := ts.do("GET", "/api/v1/cameras/lab", "", nil); st != 404 {
		t.Fatalf("a refused camera was stored: %d", st)
	}
	st, body, _ := ts.do("POST", "/api/v1/cameras", "", `{"id":"lab","enabled":false,"source":"`+src+`","labels":["site-b","gpu"]}`)
	if st != 201 {
		t.Fatalf("create: %d %s", st, body)
	}
	var cam struct{ Labels []string }
	st, body, _ = ts.do("GET", "/api/v1/cameras/lab", "", nil)
	if err := jsonInto(body, &cam); st != 200 || err != nil || strings.Join(cam.Labels, ",") != "gpu,site-b" {
		t.Fatalf("GET: %d %s", st, body)
	}
}
