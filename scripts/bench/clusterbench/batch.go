package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// batchPipeline is the work of every item: what cmd/imageflow's cluster
// test runs (a 1/4-scale decode serves the resize).
const batchPipeline = `{"id":"small","steps":[{"id":"small","processor":"resize","params":{"width":320}},{"id":"blur","processor":"filter","params":{"mode":"blur"},"inputs":["small"]}]}`

// batchWarmup items run first in every round, not measured: the work
// queue's consumers and the pipeline's first use.
const batchWarmup = 10

// batchRound is one measured execution.
type batchRound struct {
	nodes, replicas int
	wall            time.Duration
	perNode         []float64 // items done by each node
	cpu             []time.Duration
	ok              bool
	cliOut          string
}

// batchRounds runs the rounds of o.batchSizes; one of 3 nodes with
// replicas 3 runs on cluster3, the cluster the relay rounds used.
func batchRounds(o options, dir string, cluster3 []*node) error {
	jpeg, err := os.ReadFile(o.image)
	if err != nil {
		return fmt.Errorf("batch picture: %w", err)
	}
	in := filepath.Join(dir, "pictures")
	if err := os.MkdirAll(in, 0o755); err != nil {
		return err
	}
	var files []string
	for i := range o.items + batchWarmup {
		f := filepath.Join(in, fmt.Sprintf("p%04d.jpg", i))
		if err := os.WriteFile(f, jpeg, 0o644); err != nil {
			return err
		}
		files = append(files, f)
	}
	var rounds []batchRound
	for i, spec := range strings.Split(o.batchSizes, ",") {
		sizeText, replText, _ := strings.Cut(strings.TrimSpace(spec), ":")
		size, err := strconv.Atoi(sizeText)
		replicas := 1
		if replText != "" {
			replicas, err = strconv.Atoi(replText)
		}
		if err != nil || size < 1 || size > 3 || replicas != 1 && replicas != 3 || replicas > size {
			return fmt.Errorf("-nodes %q: want nodes:replicas pairs such as 3:3,2:1,1:1 (1..3 nodes, replicas 1 or 3)", o.batchSizes)
		}
		var nodes []*node
		if size == 3 && replicas == 3 {
			nodes = cluster3
		}
		r, err := batchRound1(o, filepath.Join(dir, fmt.Sprintf("batch%d", i)), size, replicas, files, nodes)
		if err != nil {
			return err
		}
		rounds = append(rounds, r)
	}
	fmt.Fprintf(o.out, "\nbatch: %d pictures (%s, %d bytes) through resize(320)+blur, uploaded to node1 by `imageflow batch run`, %d workers per node (batch_workers default)\n",
		o.items, filepath.Base(o.image), len(jpeg), 2)
	fmt.Fprintf(o.out, "%-6s %-9s %9s %9s %-22s %-24s %s\n", "nodes", "replicas", "wall s", "items/s", "items done per node", "CPU per item (ms)", "result")
	var base float64
	for _, r := range rounds {
		var total time.Duration
		per := make([]float64, len(r.cpu))
		for i, c := range r.cpu {
			total += c
			per[i] = float64(c.Milliseconds()) / float64(o.items)
		}
		perItem := float64(total.Milliseconds()) / float64(o.items)
		if r.nodes == 1 && base == 0 {
			base = perItem
		}
		res := "all done"
		if !r.ok {
			res = "NOT all done: " + r.cliOut
		}
		fmt.Fprintf(o.out, "%-6d %-9d %9.2f %9.1f %-22s %-24s %s\n", r.nodes, r.replicas, r.wall.Seconds(), float64(o.items)/r.wall.Seconds(),
			joinf(r.perNode, "%.0f"), fmt.Sprintf("%.1f (%s)", perItem, joinf(per, "%.1f")), res)
	}
	if base > 0 {
		for _, r := range rounds {
			if r.nodes == 1 {
				continue
			}
			var total time.Duration
			for _, c := range r.cpu {
				total += c
			}
			fmt.Fprintf(o.out, "cluster overhead with %d nodes, replicas %d: %+.1f ms CPU per item against one node\n", r.nodes, r.replicas, float64(total.Milliseconds())/float64(o.items)-base)
		}
	}
	return nil
}

// batchRound1 starts size nodes (or uses nodes when given), runs a warm-up
// execution, then measures one execution of o.items pictures uploaded to
// node 1. Results are not downloaded: the round measures the work.
func batchRound1(o options, dir string, size, replicas int, files []string, nodes []*node) (batchRound, error) {
	r := batchRound{nodes: size, replicas: replicas}
	if nodes == nil {
		t0 := time.Now()
		var err error
		nodes, err = startNodes(o.bin, dir, cluster{size: size, replicas: r.replicas})
		if err != nil {
			return r, err
		}
		defer func() {
			for _, n := range nodes {
				n.stop()
			}
		}()
		fmt.Fprintf(o.out, "\nbatch: %d node(s), replicas %d, ready in %s\n", size, r.replicas, time.Since(t0).Round(100*time.Millisecond))
	}
	if _, err := nodes[0].do("POST", "/api/v1/pipelines", batchPipeline, 201); err != nil {
		return r, err
	}
	runCLI := func(files []string) (string, error) {
		cmd := exec.Command(o.bin, append([]string{"batch", "run", "--server", "http://" + nodes[0].http, "--pipeline", "small", "--quiet"}, files...)...)
		b, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(b)), err
	}
	if out, err := runCLI(files[:batchWarmup]); err != nil {
		return r, fmt.Errorf("warm-up batch: %v: %s", err, out)
	}
	done0 := make([]float64, size)
	for i, n := range nodes {
		done0[i] = n.metric("imageflow_batch_files_total{", `state="done"`)
	}
	c0, t1 := cpuOf(nodes), time.Now()
	out, err := runCLI(files[batchWarmup:])
	r.wall = time.Since(t1)
	c1 := cpuOf(nodes)
	r.cliOut = out
	r.ok = err == nil && strings.Contains(out, fmt.Sprintf("%d done, 0 failed", o.items))
	for i, n := range nodes {
		r.cpu = append(r.cpu, c1[i]-c0[i])
		r.perNode = append(r.perNode, n.metric("imageflow_batch_files_total{", `state="done"`)-done0[i])
	}
	fmt.Fprintf(o.out, "%d items in %.2f s on %d node(s): %s\n", o.items, r.wall.Seconds(), size, lastLine(out))
	return r, nil
}

func lastLine(s string) string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
