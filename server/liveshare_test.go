package server

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestChooseWorker: every node that heard the same workers picks the same
// one for a camera whatever the order, the cameras spread over the
// workers, and a worker leaving moves only the cameras it had.
func TestChooseWorker(t *testing.T) {
	workers := []string{"gpu1", "gpu2", "gpu3"}
	before := map[string]string{}
	per := map[string]int{}
	for i := 0; i < 300; i++ {
		cam := fmt.Sprintf("cam%d", i)
		w := chooseWorker(cam, workers)
		if w != chooseWorker(cam, []string{"gpu3", "gpu1", "gpu2"}) {
			t.Fatalf("%s: the order of the workers changed the choice", cam)
		}
		before[cam] = w
		per[w]++
	}
	for _, w := range workers {
		if per[w] < 60 {
			t.Fatalf("cameras per worker %v: %s has too few", per, w)
		}
	}
	moved := 0
	for cam, w := range before {
		after := chooseWorker(cam, []string{"gpu1", "gpu3"})
		if w != "gpu2" && after != w {
			t.Fatalf("%s moved from %s to %s although %s stayed", cam, w, after, w)
		}
		if w == "gpu2" {
			moved++
		}
	}
	if chooseWorker("cam1", nil) != "" {
		t.Fatal("a choice without workers")
	}
	t.Logf("300 cameras over 3 workers: %v; gpu2 leaving moves its %d only", per, moved)
}

// TestWorkerConfigValidation: live_pipelines and nats_url are checked.
func TestWorkerConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		field string
		edit  func(*Config)
	}{
		{"live_pipelines", func(c *Config) { c.LivePipelines = "everywhere" }},
		{"nats_url", func(c *Config) { c.NATSURL = "http://user:secret@host:4222" }},
		{"nats_url", func(c *Config) { c.NATSURL, c.ClusterName = "nats://host:4222", "site" }},
	} {
		c := Defaults()
		tc.edit(&c)
		err := c.Validate()
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), ": "+tc.field+": ") || strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: %v", tc.field, err)
		}
	}
	c := Defaults()
	c.LivePipelines, c.NATSURL = LivePipelinesShared, "nats://10.0.0.1:4222"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}
