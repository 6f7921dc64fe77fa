package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/imageflowcanvas/imageflow/bus/hub"
)

var frameRe = regexp.MustCompile(`frame=\s*(\d+)`)

// relayRound is one measured window: CPU of every node, frames read.
type relayRound struct {
	name string
	cpu  []float64 // % of one core per node
	// in, out are what each node read and wrote (Mbit/s, /proc/<pid>/io).
	in, out       []float64
	frames, want  int
	readerErrors  int
	readers, node int // node: index of the readers' node, -1 for none
}

func (r relayRound) total() float64 {
	t := 0.0
	for _, c := range r.cpu {
		t += c
	}
	return t
}

// relayRounds pushes o.ncam cameras into node 1 of a 3-node cluster and
// measures windows with no readers, readers on node 1 and readers on node 2,
// o.repeat times in turn (the cluster's own background work varies more
// than a reader costs); the publishers stop when it returns.
func relayRounds(o options, dir string, nodes []*node) error {
	clip, err := encodeClip(o, dir)
	if err != nil {
		return err
	}
	ingest := nodes[0]
	ids := make([]string, o.ncam)
	for i := range ids {
		ids[i] = fmt.Sprintf("cam%02d", i+1)
		// A publish camera's publisher must reach its owner: pin it.
		if _, err := ingest.do("POST", "/api/v1/cameras", `{"id":"`+ids[i]+`","source":"publish","node":"`+ingest.name+`"}`, 201); err != nil {
			return err
		}
	}
	if err := waitCameras(ingest, ids, func(c apiCamera) bool { return c.Owner == ingest.name }, "owned by "+ingest.name); err != nil {
		return err
	}
	var idle []relayRound
	for range o.repeat {
		idle = append(idle, measureRelay(o, nodes, ids, -1, "idle: cameras made, no publisher"))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var pubs sync.WaitGroup
	defer pubs.Wait()
	defer cancel()
	for _, id := range ids {
		cmd := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", clip,
			"-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp", "rtsp://"+ingest.rtsp+"/"+id)
		if err := cmd.Start(); err != nil {
			return err
		}
		pubs.Add(1)
		go func() { defer pubs.Done(); _ = cmd.Wait() }()
	}
	if err := waitCameras(ingest, ids, func(c apiCamera) bool { return c.State == "online" }, "online"); err != nil {
		return err
	}
	streams := o.ncam * o.nread
	names := []string{"publishers only, no reader", fmt.Sprintf("%d readers on node1 (the ingest node)", streams),
		fmt.Sprintf("%d readers on node2 (one route hop)", streams)}
	var each [3][]relayRound
	for range o.repeat {
		for k, at := range []int{-1, 0, 1} {
			each[k] = append(each[k], measureRelay(o, nodes, ids, at, names[k]))
		}
	}
	rounds := []relayRound{mean(idle), mean(each[0]), mean(each[1]), mean(each[2])}
	fmt.Fprintf(o.out, "\nrelay: %d cameras 1080p30 H264 (%s/s) pushed by ffmpeg over RTSP/TCP into node1, %d ffmpeg reader(s) each; each figure the mean of %d windows of %s\n",
		o.ncam, o.bitrate, o.nread, o.repeat, o.dur)
	fmt.Fprintf(o.out, "%-44s %-28s %8s %12s %s\n", "round", "CPU node1 node2 node3 (%)", "total %", "per stream", "frames read")
	for _, r := range rounds {
		per := "-"
		if r.readers > 0 {
			per = fmt.Sprintf("%.2f%%", r.total()/float64(r.readers))
		}
		frames := "-"
		if r.want > 0 {
			frames = fmt.Sprintf("%d of ~%d (%.1f%%), %d errors", r.frames, r.want, 100*float64(r.frames)/float64(r.want), r.readerErrors)
		}
		fmt.Fprintf(o.out, "%-44s %-28s %8.1f %12s %s\n", r.name, joinf(r.cpu, "%6.1f"), r.total(), per, frames)
	}
	quiet, none, local, remote := rounds[0], rounds[1], rounds[2], rounds[3]
	s := float64(streams)
	cams := float64(o.ncam)
	fmt.Fprintf(o.out, "publishers add per camera: node1 (ingest) %+.2f%%, node2 %+.2f%%, node3 %+.2f%% of a core (no reader anywhere)\n",
		(none.cpu[0]-quiet.cpu[0])/cams, (none.cpu[1]-quiet.cpu[1])/cams, (none.cpu[2]-quiet.cpu[2])/cams)
	fmt.Fprintf(o.out, "readers on the ingest node add %.2f%% per stream (all nodes)\n", (local.total()-none.total())/s)
	fmt.Fprintf(o.out, "readers one hop away add %.2f%% per stream (all nodes): node1 %+.2f%%, node2 %+.2f%%, node3 %+.2f%% per stream\n",
		(remote.total()-none.total())/s, (remote.cpu[0]-none.cpu[0])/s, (remote.cpu[1]-none.cpu[1])/s, (remote.cpu[2]-none.cpu[2])/s)
	fmt.Fprintf(o.out, "route hop cost: %+.2f%% of a core per stream (remote minus local, all nodes)\n", (remote.total()-local.total())/s)
	fmt.Fprintf(o.out, "%-44s %-34s %s\n", "traffic (Mbit/s, /proc/<pid>/io)", "read by node1 node2 node3", "written by node1 node2 node3")
	for _, r := range rounds {
		fmt.Fprintf(o.out, "%-44s %-34s %s\n", r.name, joinf(r.in, "%7.1f"), joinf(r.out, "%7.1f"))
	}
	fmt.Fprintf(o.out, "per camera without readers: node1 writes %.2f Mbit/s, node2 reads %.2f, node3 reads %.2f (video sent to nodes nobody reads it on)\n",
		(none.out[0]-quiet.out[0])/cams, (none.in[1]-quiet.in[1])/cams, (none.in[2]-quiet.in[2])/cams)
	fmt.Fprintf(o.out, "readers one hop away: node2 reads %+.2f Mbit/s more per stream over the route, node1 writes %+.2f Mbit/s more\n",
		(remote.in[1]-none.in[1])/s, (remote.out[0]-none.out[0])/s)
	return nil
}

// mean averages rounds of one kind.
func mean(rs []relayRound) relayRound {
	m := rs[0]
	m.cpu, m.in, m.out = make([]float64, len(rs[0].cpu)), make([]float64, len(rs[0].in)), make([]float64, len(rs[0].out))
	m.frames, m.want, m.readerErrors = 0, 0, 0
	for _, r := range rs {
		for i := range r.cpu {
			m.cpu[i] += r.cpu[i] / float64(len(rs))
			m.in[i] += r.in[i] / float64(len(rs))
			m.out[i] += r.out[i] / float64(len(rs))
		}
		m.frames += r.frames
		m.want += r.want
		m.readerErrors += r.readerErrors
	}
	return m
}

// measureRelay runs o.nread readers per camera on nodes[at] (none when at
// is -1) and measures every node's CPU over o.dur after a warm-up.
func measureRelay(o options, nodes []*node, ids []string, at int, name string) relayRound {
	const warm = 3 * time.Second
	readFor := warm + o.dur + 2*time.Second
	r := relayRound{name: name, node: at}
	type result struct {
		frames int
		err    error
	}
	var results chan result
	var readers sync.WaitGroup
	if at >= 0 {
		r.readers = len(ids) * o.nread
		results = make(chan result, r.readers)
		for _, id := range ids {
			for range o.nread {
				cmd := exec.Command("ffmpeg", "-hide_banner", "-nostdin", "-rtsp_transport", "tcp", "-i", "rtsp://"+nodes[at].rtsp+"/"+id,
					"-t", strconv.FormatFloat(readFor.Seconds(), 'f', 1, 64), "-c", "copy", "-f", "null", "-")
				readers.Add(1)
				go func() {
					defer readers.Done()
					out, err := cmd.CombinedOutput()
					f := 0
					if m := frameRe.FindAllSubmatch(out, -1); len(m) > 0 {
						f, _ = strconv.Atoi(string(m[len(m)-1][1]))
					}
					results <- result{f, err}
				}()
			}
		}
	}
	time.Sleep(warm)
	io0 := make([][2]int64, len(nodes))
	for i, n := range nodes {
		io0[i][0], io0[i][1] = n.io()
	}
	c0, t0 := cpuOf(nodes), time.Now()
	time.Sleep(o.dur)
	c1, t1 := cpuOf(nodes), time.Now()
	wall := t1.Sub(t0)
	for i, n := range nodes {
		r.cpu = append(r.cpu, pct(c1[i]-c0[i], wall))
		rd, wr := n.io()
		r.in = append(r.in, float64(rd-io0[i][0])*8/1e6/wall.Seconds())
		r.out = append(r.out, float64(wr-io0[i][1])*8/1e6/wall.Seconds())
	}
	if at >= 0 {
		readers.Wait()
		// The readers' node keeps its subscription to the cameras' video for
		// a linger after they left (bus/hub): the next window starts after it.
		time.Sleep(hub.DefaultLinger + time.Second)
		close(results)
		for res := range results {
			r.frames += res.frames
			if res.err != nil {
				r.readerErrors++
			}
		}
		r.want = r.readers * int(readFor.Seconds()*30)
	}
	return r
}

// apiCamera is what GET /api/v1/cameras says of one camera.
type apiCamera struct {
	ID    string `json:"id"`
	Owner string `json:"owner"`
	State string `json:"state"`
}

// waitCameras waits up to a minute until ok holds for every camera in ids
// as n lists them.
func waitCameras(n *node, ids []string, ok func(apiCamera) bool, what string) error {
	deadline := time.Now().Add(time.Minute)
	var last []apiCamera
	for time.Now().Before(deadline) {
		b, err := n.do("GET", "/api/v1/cameras", "", 200)
		var list struct{ Items []apiCamera }
		if err == nil && json.Unmarshal(b, &list) == nil {
			last = list.Items
			byID := map[string]apiCamera{}
			for _, c := range list.Items {
				byID[c.ID] = c
			}
			all := true
			for _, id := range ids {
				if c, found := byID[id]; !found || !ok(c) {
					all = false
				}
			}
			if all {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("cameras not %s within a minute: %+v", what, last)
}
