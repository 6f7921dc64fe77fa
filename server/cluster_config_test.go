package server

import (
	"errors"
	"strings"
	"testing"
)

// TestClusterConfigValidation: each bad cluster setting is refused with an
// error naming its field; clustering on defaults the route listener.
func TestClusterConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		field string
		edit  func(*Config)
	}{
		{"replicas", func(c *Config) { c.Replicas = 3 }},
		{"cluster_routes", func(c *Config) { c.ClusterRoutes = []string{"nats-route://a:6222"} }},
		{"cluster_name", func(c *Config) { c.ClusterName = "a.b" }},
		{"cluster_listen", func(c *Config) { c.ClusterName, c.ClusterListen = "c", "nope" }},
		{"cluster_routes[0]", func(c *Config) { c.ClusterName, c.ClusterRoutes = "c", []string{"http://x:1"} }},
		{"cluster_user", func(c *Config) { c.ClusterName, c.ClusterUser = "c", "route" }},
		{"replicas", func(c *Config) { c.ClusterName, c.Replicas = "c", 2 }},
		{"cluster_tls_cert", func(c *Config) { c.ClusterName, c.ClusterTLSCert = "c", "/etc/n.pem" }},
		{"cluster_tls_cert", func(c *Config) { c.ClusterTLSCert, c.ClusterTLSKey, c.ClusterTLSCA = "a", "b", "c" }},
		{"leafnode_listen", func(c *Config) { c.LeafnodeListen = "nope" }},
		{"leafnode_remotes[0]", func(c *Config) { c.LeafnodeRemotes = []string{"http://hub:7422"} }},
		{"leafnode_remotes", func(c *Config) { c.ClusterName, c.LeafnodeRemotes = "c", []string{"nats-leaf://hub:7422"} }},
		{"leafnode_user", func(c *Config) { c.LeafnodeUser = "edge" }},
		{"leafnode_listen", func(c *Config) { c.LeafnodeListen = ":7422" }},
		{"leafnode_tls_cert", func(c *Config) { c.LeafnodeTLSKey = "k.pem" }},
		{"leafnode_tls_cert", func(c *Config) { c.LeafnodeTLSCert, c.LeafnodeTLSKey, c.LeafnodeTLSCA = "a", "b", "c" }},
		{"leaf_sources", func(c *Config) { c.LeafSources = []string{"edge-1"} }},
		{"leaf_sources[0]", func(c *Config) { c.LeafSources = []string{"edge.1"} }},
		{"leaf_sources[0]", func(c *Config) { c.LeafSources = []string{c.Node} }},
	} {
		c := Defaults()
		tc.edit(&c)
		err := c.Validate()
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), ": "+tc.field+": ") {
			t.Errorf("%s: %v", tc.field, err)
		}
	}
	c := Defaults()
	c.ClusterName, c.ClusterRoutes, c.ClusterUser, c.ClusterPassword, c.Replicas = "site", []string{"nats-route://10.0.0.1:6222"}, "route", "pw-123456", 3
	if err := c.Validate(); err != nil || c.ClusterListen != ":6222" {
		t.Fatalf("valid cluster config: %v, listen %q", err, c.ClusterListen)
	}
	hub := Defaults()
	hub.LeafnodeListen, hub.LeafnodeUser, hub.LeafnodePassword, hub.LeafSources = ":7422", "edge", "pw-123456", []string{"edge-1", "edge-2"}
	if err := hub.Validate(); err != nil {
		t.Fatalf("valid hub config: %v", err)
	}
	leaf := Defaults()
	leaf.Node, leaf.LeafnodeRemotes, leaf.LeafnodeUser, leaf.LeafnodePassword = "edge-1", []string{"nats-leaf://hub.example:7422"}, "edge", "pw-123456"
	if err := leaf.Validate(); err != nil {
		t.Fatalf("valid leaf config: %v", err)
	}
}
