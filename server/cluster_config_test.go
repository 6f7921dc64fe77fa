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
}
