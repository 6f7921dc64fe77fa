package k3s

import (
	"net"
	"reflect"
	"strconv"
	"testing"
)

// TestWorkerConfig loads the worker's ConfigMap file with the real loader
// and its pod's environment: it joins the serving pods' cluster (same
// name, routes, route user and password), uses their blob store, opens no
// NATS client port, and its HTTP port is the container's and Prometheus'.
func TestWorkerConfig(t *testing.T) {
	b := loadKustomization(t, baseDir)
	var worker *podContainer
	for _, pc := range imageflowContainers(t, b) {
		if len(pc.c.Args) > 0 && pc.c.Args[0] == "worker" {
			pc := pc
			worker = &pc
		}
	}
	if worker == nil {
		t.Fatal("no container runs imageflow worker")
	}
	w := loadPodConfig(t, b, *worker, "10.0.0.8")
	s := loadPodConfig(t, b, serveContainer(t, b), "10.0.0.7")
	if w.ClusterName != s.ClusterName || !reflect.DeepEqual(w.ClusterRoutes, s.ClusterRoutes) ||
		w.ClusterUser != s.ClusterUser || w.ClusterPassword == "" || w.ClusterPassword != s.ClusterPassword || w.Replicas != s.Replicas {
		t.Errorf("the worker does not join the serving pods' cluster: %q %v %q vs %q %v %q",
			w.ClusterName, w.ClusterRoutes, w.ClusterUser, s.ClusterName, s.ClusterRoutes, s.ClusterUser)
	}
	if w.S3Endpoint != s.S3Endpoint || w.S3Bucket != s.S3Bucket || w.S3AccessKey != s.S3AccessKey || w.S3SecretKey != s.S3SecretKey {
		t.Errorf("the worker's blob store %q/%q differs from the serving pods' %q/%q", w.S3Endpoint, w.S3Bucket, s.S3Endpoint, s.S3Bucket)
	}
	if w.NATSAddr != "" || w.Demo {
		t.Errorf("worker config opens a NATS port (%q) or asks for the demo camera (%v)", w.NATSAddr, w.Demo)
	}
	for _, a := range []struct{ key, value, port string }{{"http", w.HTTPAddr, "http"}, {"cluster_listen", w.ClusterListen, "cluster"}} {
		_, ps, _ := net.SplitHostPort(a.value)
		n, _ := strconv.Atoi(ps)
		if num, proto, ok := worker.c.port(intOrString{Str: a.port}); !ok || num != n || proto != "TCP" {
			t.Errorf("worker %s %q: container port %q is %d/%s", a.key, a.value, a.port, num, proto)
		}
	}
	if ann := worker.pod.w.Spec.Template.Metadata.Annotations; ann["prometheus.io/port"] != portOf(w.HTTPAddr) {
		t.Errorf("worker prometheus.io/port %q, http %q", ann["prometheus.io/port"], w.HTTPAddr)
	}
}
