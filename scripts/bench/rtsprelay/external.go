package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// external runs the real `imageflow serve` binary and measures it through
// /proc/<pid> and its /metrics.
type external struct {
	cmd    *exec.Cmd
	pid    int
	http   string
	rtsp   string
	logf   string
	done   chan error
	hist0  histogram
	hist1  histogram
	drops0 float64
	drops1 float64
	// rec0/rec1: recorded bytes, fragments written and their total write
	// seconds at the window's ends (-record).
	rec0, rec1 recordCounters
	record     bool
}

// recordCounters are the recorder's counters in one scrape.
type recordCounters struct{ bytes, writes, writeSeconds float64 }

func startExternal(bin, dir string, ids []string, window string, record bool) (*external, error) {
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	t := &external{logf: filepath.Join(dir, "serve.log"), done: make(chan error, 1), record: record}
	logf, err := os.Create(t.logf)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	t.cmd = exec.Command(bin, "serve", "--data", data, "--http", "127.0.0.1:0", "--rtsp", "127.0.0.1:0", "--rtsp-udp", "",
		"--grpc", "", "--webrtc-udp", "", "--demo=false", "--log-level", "warn")
	t.cmd.Env = os.Environ()
	if window != "" {
		t.cmd.Env = append(t.cmd.Env, "IFC_VIDEO_WINDOW="+window)
	}
	t.cmd.Stdout, t.cmd.Stderr = logf, logf
	if err := t.cmd.Start(); err != nil {
		return nil, err
	}
	t.pid = t.cmd.Process.Pid
	go func() { t.done <- t.cmd.Wait() }()

	deadline := time.Now().Add(20 * time.Second)
	for {
		var l struct{ HTTP, RTSP string }
		if b, err := os.ReadFile(filepath.Join(data, "listen.json")); err == nil && json.Unmarshal(b, &l) == nil && l.HTTP != "" {
			t.http, t.rtsp = l.HTTP, l.RTSP
			break
		}
		select {
		case err := <-t.done:
			return nil, fmt.Errorf("imageflow serve exited: %v: %s", err, t.logTail())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.close()
			return nil, errors.New("no listen.json after 20s: " + t.logTail())
		}
	}
	for _, id := range ids {
		res, err := http.Post("http://"+t.http+"/api/v1/cameras", "application/json",
			strings.NewReader(`{"id":"`+id+`","source":"publish","record":`+strconv.FormatBool(record)+`}`))
		if err != nil {
			t.close()
			return nil, err
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusCreated {
			t.close()
			return nil, fmt.Errorf("create camera %s: %s: %s", id, res.Status, body)
		}
	}
	return t, nil
}

func (t *external) logTail() string {
	b, _ := os.ReadFile(t.logf)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func (t *external) rtspAddr() string { return t.rtsp }

func (t *external) online(id string) (int, error) {
	res, err := http.Get("http://" + t.http + "/api/v1/cameras/" + id)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	var c struct{ State string }
	if err := json.NewDecoder(res.Body).Decode(&c); err != nil {
		return 0, err
	}
	if c.State == "online" {
		return 1, nil
	}
	return 0, nil
}

// cpu is utime+stime of the server process from /proc/<pid>/stat.
func (t *external) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", t.pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which may hold spaces: ") S ppid ...";
	// utime and stime are fields 14 and 15 of the whole line.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	// USER_HZ is 100 on Linux for every architecture Go runs on here.
	return time.Duration(u+s) * (time.Second / 100)
}

func (t *external) mem() (rss, hwm int) { return memKB(fmt.Sprintf("/proc/%d/status", t.pid)) }

func (t *external) window(on bool) {
	h, d, rc, err := t.scrape()
	if err != nil {
		fmt.Fprintln(os.Stderr, "rtsprelay: scrape /metrics:", err)
	}
	if on {
		t.hist0, t.drops0, t.rec0 = h, d, rc
	} else {
		t.hist1, t.drops1, t.rec1 = h, d, rc
	}
}

// histogram is one scrape of a Prometheus histogram: cumulative counts by
// upper bound.
type histogram struct {
	le    []float64
	count []float64
}

func (t *external) scrape() (histogram, float64, recordCounters, error) {
	var rc recordCounters
	res, err := http.Get("http://" + t.http + "/metrics")
	if err != nil {
		return histogram{}, 0, rc, err
	}
	defer res.Body.Close()
	var h histogram
	drops := 0.0
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "imageflow_rtsp_egress_latency_seconds_bucket{"):
			i := strings.Index(line, `le="`)
			j := strings.Index(line[i+4:], `"`)
			le, err := strconv.ParseFloat(line[i+4:i+4+j], 64)
			if err != nil {
				le = math.Inf(1)
			}
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			h.le, h.count = append(h.le, le), append(h.count, v)
		case strings.HasPrefix(line, "imageflow_live_dropped_total"):
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			drops += v
		case strings.HasPrefix(line, "imageflow_record_bytes_total"):
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			rc.bytes += v
		case strings.HasPrefix(line, "imageflow_record_write_seconds_count"):
			rc.writes, _ = strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		case strings.HasPrefix(line, "imageflow_record_write_seconds_sum"):
			rc.writeSeconds, _ = strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		}
	}
	return h, drops, rc, sc.Err()
}

// quantile interpolates linearly inside the bucket, like PromQL's
// histogram_quantile, over the counts between two scrapes.
func quantile(h0, h1 histogram, q float64) (float64, float64) {
	if len(h1.le) == 0 || len(h0.le) != len(h1.le) {
		return math.NaN(), 0
	}
	d := make([]float64, len(h1.le))
	for i := range d {
		d[i] = h1.count[i] - h0.count[i]
	}
	total := d[len(d)-1]
	if total == 0 {
		return math.NaN(), 0
	}
	rank := q * total
	i := sort.Search(len(d), func(i int) bool { return d[i] >= rank })
	if i >= len(d)-1 && math.IsInf(h1.le[len(d)-1], 1) {
		return h1.le[len(d)-2], total
	}
	lo, below := 0.0, 0.0
	if i > 0 {
		lo, below = h1.le[i-1], d[i-1]
	}
	if d[i] == below {
		return h1.le[i], total
	}
	return lo + (h1.le[i]-lo)*(rank-below)/(d[i]-below), total
}

func (t *external) report(w io.Writer) {
	p50, n := quantile(t.hist0, t.hist1, .5)
	p99, _ := quantile(t.hist0, t.hist1, .99)
	fmt.Fprintf(w, "added latency:  p50 %.2f ms  p99 %.2f ms  (%d access units; /metrics imageflow_rtsp_egress_latency_seconds, access unit complete (last packet in) -> queued to readers, bucket-interpolated)\n",
		p50*1000, p99*1000, int(n))
	fmt.Fprintf(w, "hub drops:      %d (imageflow_live_dropped_total in the window)\n", int(t.drops1-t.drops0))
	if t.record {
		b, n, sec := t.rec1.bytes-t.rec0.bytes, t.rec1.writes-t.rec0.writes, t.rec1.writeSeconds-t.rec0.writeSeconds
		fmt.Fprintf(w, "recording:      %.2f MB written (%d blobs, mean write %.2f ms; imageflow_record_* in the window)\n",
			b/1e6, int(n), 1000*sec/math.Max(n, 1))
	}
}

func (t *external) close() {
	if t.cmd.Process != nil {
		_ = t.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-t.done:
		case <-time.After(15 * time.Second):
			_ = t.cmd.Process.Kill()
			<-t.done
		}
	}
}
