package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// node is one `imageflow serve` process.
type node struct {
	name, data string
	cmd        *exec.Cmd
	pid        int
	http, rtsp string
	logf       string
	done       chan error
	stopped    bool
}

// cluster is how the nodes of one round are configured.
type cluster struct {
	// size is the number of nodes; 1 runs a plain server (no cluster_*).
	size     int
	replicas int
}

// startNodes starts c.size servers on loopback as one cluster (routes on
// random ports, the route user and password of cmd/imageflow's cluster
// test) and waits until every one answers /api/v1/ready.
func startNodes(bin, dir string, c cluster) ([]*node, error) {
	var routes, clusterAddrs []string
	for range c.size {
		a, err := freePort()
		if err != nil {
			return nil, err
		}
		clusterAddrs = append(clusterAddrs, a)
		routes = append(routes, "nats-route://"+a)
	}
	var nodes []*node
	stopAll := func() {
		for _, n := range nodes {
			n.stop()
		}
	}
	for i := range c.size {
		n := &node{name: fmt.Sprintf("node%d", i+1), done: make(chan error, 1)}
		n.data = filepath.Join(dir, n.name)
		n.logf = filepath.Join(dir, n.name+".log")
		if err := os.MkdirAll(n.data, 0o755); err != nil {
			stopAll()
			return nil, err
		}
		logf, err := os.Create(n.logf)
		if err != nil {
			stopAll()
			return nil, err
		}
		n.cmd = exec.Command(bin, "serve", "--data", n.data, "--http", "127.0.0.1:0", "--rtsp", "127.0.0.1:0", "--rtsp-udp", "",
			"--grpc", "", "--webrtc-udp", "", "--demo=false", "--log-level", "warn")
		n.cmd.Env = os.Environ()
		if c.size > 1 {
			n.cmd.Env = append(n.cmd.Env, "IFC_CLUSTER_NAME=ifc-bench", "IFC_NODE="+n.name, "IFC_CLUSTER_LISTEN="+clusterAddrs[i],
				"IFC_CLUSTER_ROUTES="+strings.Join(routes, ","), "IFC_CLUSTER_USER=route", "IFC_CLUSTER_PASSWORD=bench-route-secret",
				"IFC_REPLICAS="+strconv.Itoa(c.replicas))
		}
		n.cmd.Stdout, n.cmd.Stderr = logf, logf
		err = n.cmd.Start()
		logf.Close()
		if err != nil {
			stopAll()
			return nil, err
		}
		n.pid = n.cmd.Process.Pid
		go func() { n.done <- n.cmd.Wait() }()
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		if err := n.ready(3 * time.Minute); err != nil {
			stopAll()
			return nil, err
		}
	}
	return nodes, nil
}

func freePort() (string, error) {
	l, err := listenTCP()
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// ready waits for listen.json of this process and a 200 from /api/v1/ready.
func (n *node) ready(within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		var l struct {
			HTTP, RTSP string
			PID        int
		}
		if b, err := os.ReadFile(filepath.Join(n.data, "listen.json")); err == nil && json.Unmarshal(b, &l) == nil && l.PID == n.pid {
			if res, err := http.Get("http://" + l.HTTP + "/api/v1/ready"); err == nil {
				res.Body.Close()
				if res.StatusCode == http.StatusOK {
					n.http, n.rtsp = l.HTTP, l.RTSP
					return nil
				}
			}
		}
		select {
		case err := <-n.done:
			n.done <- err
			return fmt.Errorf("%s exited: %v: %s", n.name, err, n.logTail())
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not ready within %s: %s", n.name, within, n.logTail())
}

func (n *node) logTail() string {
	b, _ := os.ReadFile(n.logf)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// cpu is utime+stime of the process from /proc/<pid>/stat.
func (n *node) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", n.pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces): utime and
	// stime are fields 14 and 15 of the line.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	// USER_HZ is 100 on Linux for every architecture Go runs on here.
	return time.Duration(u+s) * (time.Second / 100)
}

// io is the bytes the process read and wrote through system calls so far
// (rchar, wchar of /proc/<pid>/io): sockets included, so on a node whose
// disk is idle it is its network traffic.
func (n *node) io() (read, written int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", n.pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "rchar: "); ok {
			read, _ = strconv.ParseInt(v, 10, 64)
		}
		if v, ok := strings.CutPrefix(line, "wchar: "); ok {
			written, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return read, written
}

// metric sums the series of /metrics whose line starts with prefix and
// holds label (a `name="value"` pair; "" for any).
func (n *node) metric(prefix, label string) float64 {
	res, err := http.Get("http://" + n.http + "/metrics")
	if err != nil {
		return 0
	}
	defer res.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, prefix) && strings.Contains(line, label) {
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			sum += v
		}
	}
	return sum
}

// do sends a JSON request and fails on a status other than want.
func (n *node) do(method, path, body string, want int) ([]byte, error) {
	req, err := http.NewRequest(method, "http://"+n.http+path, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		return b, fmt.Errorf("%s %s on %s: %s: %s", method, path, n.name, res.Status, b)
	}
	return b, nil
}

// stop ends the process with SIGTERM (SIGKILL after 15 s); a second call
// does nothing.
func (n *node) stop() {
	if n.stopped || n.cmd == nil || n.cmd.Process == nil {
		return
	}
	n.stopped = true
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(15 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.done
	}
}

// cpuOf reads every node's CPU time.
func cpuOf(nodes []*node) []time.Duration {
	out := make([]time.Duration, len(nodes))
	for i, n := range nodes {
		out[i] = n.cpu()
	}
	return out
}
