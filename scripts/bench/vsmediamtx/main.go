// Command vsmediamtx runs `imageflow serve` and mediamtx side by side on the
// same clips and clients and prints each figure with its ratio: RSS with no
// camera, the RTSP relay of N 1080p cameras (CPU and RSS), WHEP joins of 50
// pion viewers at once (answer p50/p99, answer to first complete access unit),
// WHEP CPU and RSS per viewer at 10 and 50 viewers, and imageflow's
// detection path (decode, convert, motion, HOG people detection at 5 fps)
// with its breakdown, then -detect-cameras such cameras at once (CPU per
// camera, and whether each still gets 5 frames a second). Figures only: it
// never fails on timing. Run through scripts/bench/vs-mediamtx.sh.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"

	"github.com/imageflowcanvas/imageflow/internal/testkit"
)

type options struct {
	bin, mediamtx string
	relayClip     string
	detectClip    string
	cameras       int
	window        time.Duration
	viewers       int
	skipDetect    bool
	onlyDetect    bool
	// detectCameras is how many cameras the detection path's load round
	// runs at once (0 leaves the round out).
	detectCameras int
	onlyMemory    bool
	// onlyJoin, when > 0, runs only the join of o.viewers, that many
	// rounds of each server alternating.
	onlyJoin int
	// steps runs imageflow at debug level and prints where its answers'
	// time went, step by step.
	steps bool
	// perf, with onlyJoin, records imageflow's CPU with perf(1) during the
	// first round's join into this file.
	perf string
	// onlyRelay runs the relay round alone, relayRounds times, each time
	// imageflow (and baseline) then mediamtx.
	onlyRelay   bool
	relayRounds int
	// baseline is a second imageflow binary (an earlier build) measured in
	// the same alternation as "baseline".
	baseline string
}

// serveEnv is added to imageflow's environment (-env KEY=VALUE, repeated).
type serveEnv []string

func (e *serveEnv) String() string     { return strings.Join(*e, " ") }
func (e *serveEnv) Set(v string) error { *e = append(*e, v); return nil }

var extraEnv serveEnv

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "bin/imageflow", "imageflow binary")
	flag.StringVar(&o.mediamtx, "mediamtx", "", "mediamtx binary")
	flag.StringVar(&o.relayClip, "clip", "", "1080p30 H264 mp4 for the relay and WHEP rounds")
	flag.StringVar(&o.detectClip, "detect-clip", "", "1080p30 H264 mp4 of people for the detection path")
	flag.IntVar(&o.cameras, "cameras", 10, "cameras in the relay round")
	flag.IntVar(&o.viewers, "viewers", 50, "WHEP viewers joining at once")
	flag.DurationVar(&o.window, "window", 10*time.Second, "measured window of each CPU figure")
	flag.BoolVar(&o.skipDetect, "skip-detect", false, "leave out the detection path")
	flag.BoolVar(&o.onlyDetect, "only-detect", false, "run the detection path only")
	flag.IntVar(&o.detectCameras, "detect-cameras", 8, "cameras with the detection pipeline at once in the detection path's load round (0: none)")
	flag.BoolVar(&o.onlyMemory, "only-memory", false, "run only the idle and relay rounds (RSS, relay CPU)")
	flag.IntVar(&o.onlyJoin, "only-join", 0, "run only the join of -viewers viewers, this many rounds per server, alternating")
	flag.StringVar(&o.perf, "perf", "", "with -only-join: perf record -g imageflow during the first round's join into this file")
	flag.BoolVar(&o.steps, "steps", false, "with -only-join: imageflow logs at debug level and each answer step's p50/p99 is printed")
	flag.BoolVar(&o.onlyRelay, "only-relay", false, "run the RTSP relay round only (-relay-rounds times)")
	flag.IntVar(&o.relayRounds, "relay-rounds", 3, "relay rounds with -only-relay, each printing its ratio")
	flag.StringVar(&o.baseline, "baseline", "", "another imageflow binary (an earlier build) measured in the same relay or join rounds")
	flag.Var(&extraEnv, "env", "KEY=VALUE added to imageflow's environment (repeatable)")
	flag.Parse()
	if o.mediamtx == "" || o.relayClip == "" || o.detectClip == "" {
		fmt.Fprintln(os.Stderr, "vsmediamtx: -mediamtx, -clip and -detect-clip are required")
		os.Exit(2)
	}
	// The servers run in their own directories.
	for _, p := range []*string{&o.bin, &o.mediamtx, &o.relayClip, &o.detectClip, &o.baseline} {
		if *p == "" {
			continue
		}
		if abs, err := filepath.Abs(*p); err == nil {
			*p = abs
		}
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "vsmediamtx:", err)
		os.Exit(1)
	}
}

// server is one of the two servers under test.
type server struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	rtsp string
	// http is imageflow's API address or mediamtx's WebRTC address.
	http string
	dir  string
	log  *bytes.Buffer
	mu   sync.Mutex
}

func (s *server) pid() int { return s.cmd.Process.Pid }

func (s *server) close() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

func (s *server) whepURL(cam string) string {
	if s.name != "mediamtx" {
		return "http://" + s.http + "/api/v1/cameras/" + cam + "/whep"
	}
	return "http://" + s.http + "/" + cam + "/whep"
}

// addCamera makes cam publishable (imageflow needs the camera to exist,
// optionally with a pipeline; mediamtx accepts any path).
func (s *server) addCamera(cam, pipeline string) error {
	if s.name == "mediamtx" {
		return nil
	}
	body := fmt.Sprintf(`{"id":%q,"source":"publish","pipeline":%q}`, cam, pipeline)
	return s.post("/api/v1/cameras", body)
}

func (s *server) post(path, body string) error {
	res, err := http.Post("http://"+s.http+path, "application/json", strings.NewReader(body))
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %s: %s", path, res.Status, b)
	}
	return nil
}

func freeAddr(network string) string {
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		defer c.Close()
		return c.LocalAddr().String()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func start(name string, cmd *exec.Cmd, dir string) *server {
	s := &server{name: name, cmd: cmd, done: make(chan struct{}), dir: dir, log: &bytes.Buffer{}}
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = s.log, s.log
	return s
}

func startImageflow(bin, dir, logLevel string) (*server, error) {
	data := filepath.Join(dir, "data")
	cmd := exec.Command(bin, "serve", "--data", data, "--http", "127.0.0.1:0", "--rtsp", "127.0.0.1:0", "--rtsp-udp", "",
		"--grpc", "", "--webrtc-udp", freeAddr("udp"), "--demo=false", "--log-level", logLevel)
	cmd.Env = append(os.Environ(), "IFC_WEBRTC_MAX_PENDING=1000", "IFC_WEBRTC_MAX_PENDING_PER_CLIENT=1000", "IFC_RATE_LIMIT=0")
	cmd.Env = append(cmd.Env, extraEnv...)
	s := start("imageflow", cmd, dir)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var l struct{ HTTP, RTSP string }
		if b, err := os.ReadFile(filepath.Join(data, "listen.json")); err == nil && json.Unmarshal(b, &l) == nil && l.HTTP != "" {
			s.http, s.rtsp = l.HTTP, l.RTSP
			return s, nil
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("imageflow exited: %s", s.log.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	s.close()
	return nil, errors.New("imageflow: no listen.json after 30 s")
}

func startMediaMTX(bin, dir string) (*server, error) {
	rtsp, web, udp := freeAddr("tcp"), freeAddr("tcp"), freeAddr("udp")
	conf := testkit.MediaMTXConfig("warn", rtsp, web, udp, "")
	if err := os.WriteFile(filepath.Join(dir, "mediamtx.yml"), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	s := start("mediamtx", exec.Command(bin, "mediamtx.yml"), dir)
	s.rtsp, s.http = rtsp, web
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", web); err == nil {
			c.Close()
			return s, nil
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("mediamtx exited: %s", s.log.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	s.close()
	return nil, errors.New("mediamtx: not listening after 20 s")
}

// cpuTime is the process's user+system CPU time.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100)
}

// rssMiB is the process's resident memory.
func rssMiB(pid int) float64 { return statusMiB(pid, "VmRSS") }

// statusMiB is one memory line of /proc/PID/status (VmRSS, RssAnon:
// the heaps, stacks and libraries' relocated pages; RssFile: the mapped
// pages of the binary and shared libraries).
func statusMiB(pid int, field string) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1024
		}
	}
	return 0
}

// recordRSS stores the process's RSS and its anonymous and file parts
// under key.
func recordRSS(r results, key string, pid int) {
	r[key] = rssMiB(pid)
	r[key+"_anon"] = statusMiB(pid, "RssAnon")
	r[key+"_file"] = statusMiB(pid, "RssFile")
}

// cpuPercent is the server's CPU over a window, in % of one core.
func cpuPercent(s *server, window time.Duration) float64 {
	c0, t0 := cpuTime(s.pid()), time.Now()
	time.Sleep(window)
	return 100 * float64(cpuTime(s.pid())-c0) / float64(time.Since(t0))
}

// publisher pushes clip to the server's RTSP path cam in a loop, in real
// time, until ctx ends.
func publisher(ctx context.Context, s *server, cam, clip string) *exec.Cmd {
	return publisherFrom(ctx, s, cam, clip, 0)
}

// publisherFrom is publisher starting the clip at offset.
func publisherFrom(ctx context.Context, s *server, cam, clip string, offset time.Duration) *exec.Cmd {
	args := []string{"-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1"}
	if offset > 0 {
		args = append(args, "-ss", strconv.FormatFloat(offset.Seconds(), 'f', 3, 64))
	}
	args = append(args, "-i", clip, "-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp", "rtsp://"+s.rtsp+"/"+cam)
	cmd := exec.CommandContext(ctx, "ffmpeg", args...)
	_ = cmd.Start()
	return cmd
}

func reader(ctx context.Context, s *server, cam string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-rtsp_transport", "tcp",
		"-i", "rtsp://"+s.rtsp+"/"+cam, "-c", "copy", "-f", "null", "-")
	_ = cmd.Start()
	return cmd
}

func waitAll(cmds []*exec.Cmd) {
	for _, c := range cmds {
		if c.Process != nil {
			_ = c.Wait()
		}
	}
}

// results holds one server's figures by name.
type results map[string]float64

// startServer starts a fresh server of the given name in a new directory;
// stop ends it and removes the directory.
func startServer(o options, name string) (s *server, stop func(), err error) {
	dir, err := os.MkdirTemp("", "vsmediamtx-")
	if err != nil {
		return nil, nil, err
	}
	switch name {
	case "imageflow":
		s, err = startImageflow(o.bin, dir, "warn")
	case "baseline":
		s, err = startImageflow(o.baseline, dir, "warn")
		if s != nil {
			s.name = "baseline"
		}
	default:
		s, err = startMediaMTX(o.mediamtx, dir)
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return s, func() { s.close(); os.RemoveAll(dir) }, nil
}

// relayRounds alternates the relay round between the servers and prints
// each round's CPU per camera and ratios, then the medians.
func relayRounds(o options) error {
	names := []string{"imageflow"}
	if o.baseline != "" {
		names = append(names, "baseline")
	}
	names = append(names, "mediamtx")
	cpu, rss := map[string][]float64{}, map[string][]float64{}
	var ratios, baseRatios []float64
	for i := range o.relayRounds {
		r := map[string]results{}
		// The order turns every round, so none always runs first.
		turn := append(slices.Clone(names[i%len(names):]), names[:i%len(names)]...)
		for _, name := range turn {
			s, stop, err := startServer(o, name)
			if err != nil {
				return err
			}
			r[name] = results{}
			err = relayRound(s, r[name], o)
			stop()
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			cpu[name] = append(cpu[name], r[name]["relay_cpu"])
			rss[name] = append(rss[name], r[name]["relay_rss"])
		}
		m := r["mediamtx"]["relay_cpu"]
		line := fmt.Sprintf("relay round %d, CPU per camera: imageflow %.2f %%, mediamtx %.2f %%, ratio %.2f×",
			i+1, r["imageflow"]["relay_cpu"], m, r["imageflow"]["relay_cpu"]/m)
		ratios = append(ratios, r["imageflow"]["relay_cpu"]/m)
		if o.baseline != "" {
			b := r["baseline"]["relay_cpu"]
			line += fmt.Sprintf("; baseline %.2f %%, ratio %.2f×", b, b/m)
			baseRatios = append(baseRatios, b/m)
		}
		line += fmt.Sprintf("; RSS imageflow %.0f MB, mediamtx %.0f MB", r["imageflow"]["relay_rss"], r["mediamtx"]["relay_rss"])
		if o.baseline != "" {
			line += fmt.Sprintf(", baseline %.0f MB", r["baseline"]["relay_rss"])
		}
		fmt.Println(line)
	}
	med := func(v []float64) float64 {
		s := slices.Clone(v)
		slices.Sort(s)
		return s[len(s)/2]
	}
	fmt.Printf("median of %d relay rounds (%d cameras, 1 reader each), CPU per camera: imageflow %.2f %%, mediamtx %.2f %%, ratio %.2f×",
		o.relayRounds, o.cameras, med(cpu["imageflow"]), med(cpu["mediamtx"]), med(ratios))
	if o.baseline != "" {
		fmt.Printf("; baseline %.2f %%, ratio %.2f×", med(cpu["baseline"]), med(baseRatios))
	}
	fmt.Printf("; RSS imageflow %.0f MB, mediamtx %.0f MB", med(rss["imageflow"]), med(rss["mediamtx"]))
	if o.baseline != "" {
		fmt.Printf(", baseline %.0f MB", med(rss["baseline"]))
	}
	fmt.Println()
	return nil
}

func run(o options) error {
	if o.onlyJoin > 0 {
		return joinRounds(o)
	}
	if o.onlyRelay {
		if o.relayRounds < 1 {
			o.relayRounds = 1
		}
		return relayRounds(o)
	}
	figures := map[string]results{"imageflow": {}, "mediamtx": {}}
	rounds := []func(*server, results) error{
		func(s *server, r results) error { return idleRound(s, r) },
		func(s *server, r results) error { return relayRound(s, r, o) },
		func(s *server, r results) error { return whepRound(s, r, o, 10) },
		func(s *server, r results) error { return whepRound(s, r, o, o.viewers) },
	}
	if o.onlyDetect {
		rounds = nil
	}
	if o.onlyMemory {
		rounds = rounds[:2]
		o.skipDetect = true
	}
	for _, round := range rounds {
		for _, name := range []string{"imageflow", "mediamtx"} {
			dir, err := os.MkdirTemp("", "vsmediamtx-")
			if err != nil {
				return err
			}
			var s *server
			if name == "imageflow" {
				s, err = startImageflow(o.bin, dir, "warn")
			} else {
				s, err = startMediaMTX(o.mediamtx, dir)
			}
			if err != nil {
				os.RemoveAll(dir)
				return err
			}
			err = round(s, figures[name])
			s.close()
			os.RemoveAll(dir)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	if !o.onlyDetect {
		printTable(os.Stdout, figures, o)
	}
	if o.skipDetect {
		return nil
	}
	dir, err := os.MkdirTemp("", "vsmediamtx-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	s, err := startImageflow(o.bin, dir, "warn")
	if err != nil {
		return err
	}
	defer s.close()
	return detectRound(s, o)
}

// idleSettle is how long after start the idle figure is read: past
// start-up (imageflow gives back what only start-up touched after 5 s), so
// both servers are measured as they sit idle.
const idleSettle = 10 * time.Second

func idleRound(s *server, r results) error {
	time.Sleep(idleSettle)
	recordRSS(r, "idle_rss", s.pid())
	return nil
}

func relayRound(s *server, r results, o options) error {
	ctx, cancel := context.WithCancel(context.Background())
	var cmds []*exec.Cmd
	defer func() { cancel(); waitAll(cmds) }()
	for i := range o.cameras {
		cam := fmt.Sprintf("cam%02d", i+1)
		if err := s.addCamera(cam, ""); err != nil {
			return err
		}
		cmds = append(cmds, publisher(ctx, s, cam, o.relayClip))
	}
	time.Sleep(4 * time.Second)
	for i := range o.cameras {
		cmds = append(cmds, reader(ctx, s, fmt.Sprintf("cam%02d", i+1)))
	}
	time.Sleep(3 * time.Second)
	r["relay_cpu"] = cpuPercent(s, o.window) / float64(o.cameras)
	recordRSS(r, "relay_rss", s.pid())
	return nil
}

// viewer is a pion WHEP client.
type viewer struct {
	pc       *webrtc.PeerConnection
	offer    string
	answered time.Time
	// connected, wrote and firstByte trace the POST (httptrace).
	connected, wrote, firstByte time.Time
	firstAU                     atomic.Int64
	session                     string
}

func clientAPI() *webrtc.API {
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	me := &webrtc.MediaEngine{}
	_ = me.RegisterDefaultCodecs()
	ir := &interceptor.Registry{}
	_ = webrtc.RegisterDefaultInterceptors(me, ir)
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se))
}

func newViewer(api *webrtc.API) (*viewer, error) {
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, err
	}
	v := &viewer{pc: pc}
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		return nil, err
	}
	pc.OnTrack(func(track *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		for {
			p, _, err := track.ReadRTP()
			if err != nil {
				return
			}
			if p.Marker && v.firstAU.Load() == 0 {
				v.firstAU.Store(time.Now().UnixNano())
			}
		}
	})
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return nil, err
	}
	g := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		return nil, err
	}
	<-g
	v.offer = pc.LocalDescription().SDP
	return v, nil
}

func (v *viewer) join(url string) error {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(v.offer))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/sdp")
	// When the connection was up, the offer sent and the answer's first
	// byte came: how much of an answer's time is the client's and the
	// connection's.
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotConn:              func(httptrace.GotConnInfo) { v.connected = time.Now() },
		WroteRequest:         func(httptrace.WroteRequestInfo) { v.wrote = time.Now() },
		GotFirstResponseByte: func() { v.firstByte = time.Now() },
	}))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	v.answered = time.Now()
	if res.StatusCode != http.StatusCreated {
		return fmt.Errorf("WHEP POST: %s: %s", res.Status, body)
	}
	return v.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)})
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(p*float64(len(s)-1))]
}

// whepRound joins n pion viewers at once to one camera and measures the
// answers, the first access units, and the CPU and RSS the viewers add.
// Each n runs on a fresh server (RSS does not shrink when viewers leave).
func whepRound(s *server, r results, o options, n int) error {
	ctx, cancel := context.WithCancel(context.Background())
	var cmds []*exec.Cmd
	defer func() { cancel(); waitAll(cmds) }()
	if err := s.addCamera("live", ""); err != nil {
		return err
	}
	cmds = append(cmds, publisher(ctx, s, "live", o.relayClip))
	time.Sleep(4 * time.Second)
	var baseCPU, baseRSS float64
	if o.onlyJoin == 0 {
		baseCPU, baseRSS = cpuPercent(s, o.window), rssMiB(s.pid())
	}

	api := clientAPI()
	viewers := make([]*viewer, n)
	for i := range viewers {
		v, err := newViewer(api)
		if err != nil {
			return err
		}
		defer v.pc.Close()
		viewers[i] = v
	}
	if o.perf != "" && s.name == "imageflow" {
		// From just before the join until the first access units are in.
		rec := exec.Command("perf", "record", "-g", "-F", "999", "-o", o.perf, "-p", strconv.Itoa(s.pid()))
		if err := rec.Start(); err == nil {
			defer func() { _ = rec.Process.Signal(os.Interrupt); _ = rec.Wait() }()
			time.Sleep(300 * time.Millisecond)
		}
	}
	// All at once, mid-GOP.
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	cpu0, wait0 := schedStat(s.pid())
	start := time.Now()
	r["join_start_unix_us"] = float64(start.UnixMicro())
	errs := make(chan error, len(viewers))
	var wg sync.WaitGroup
	for _, v := range viewers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := v.join(s.whepURL("live")); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	answeredAll := time.Since(start)
	cpu1, wait1 := schedStat(s.pid())
	r["join_server_cpu_ms"], r["join_server_wait_ms"] = ms(cpu1-cpu0), ms(wait1-wait0)
	r["join_wall_ms"] = ms(answeredAll)
	close(errs)
	for err := range errs {
		return err
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		n := 0
		for _, v := range viewers {
			if v.firstAU.Load() != 0 {
				n++
			}
		}
		if n == len(viewers) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	answers, firsts := make([]time.Duration, 0, len(viewers)), make([]time.Duration, 0, len(viewers))
	// From the join's start to the first access unit: what a viewer waits
	// in all, answer and connection together.
	joinFirsts := make([]time.Duration, 0, len(viewers))
	for _, v := range viewers {
		answers = append(answers, v.answered.Sub(start))
		if f := v.firstAU.Load(); f != 0 {
			firsts = append(firsts, time.Unix(0, f).Sub(v.answered))
			joinFirsts = append(joinFirsts, time.Unix(0, f).Sub(start))
		} else {
			firsts = append(firsts, 20*time.Second)
			joinFirsts = append(joinFirsts, 20*time.Second)
		}
	}
	if n == o.viewers && o.steps {
		var conn, wrote, byte1 []time.Duration
		for _, v := range viewers {
			conn = append(conn, v.connected.Sub(start))
			wrote = append(wrote, v.wrote.Sub(v.connected))
			byte1 = append(byte1, v.firstByte.Sub(v.wrote))
		}
		for _, c := range []struct {
			name string
			d    []time.Duration
		}{{"client_connected", conn}, {"client_offer_written", wrote}, {"client_answer_first_byte", byte1}} {
			r[c.name+"_p50"], r[c.name+"_p99"] = ms(percentile(c.d, 0.5)), ms(percentile(c.d, 0.99))
		}
	}
	if n == o.viewers {
		r["join_p50"], r["join_p99"] = ms(percentile(answers, 0.5)), ms(percentile(answers, 0.99))
		r["first_p50"], r["first_p99"] = ms(percentile(firsts, 0.5)), ms(percentile(firsts, 0.99))
		r["join_first_p50"], r["join_first_p99"] = ms(percentile(joinFirsts, 0.5)), ms(percentile(joinFirsts, 0.99))
	}
	if o.onlyJoin > 0 {
		return nil
	}
	time.Sleep(2 * time.Second)
	cpu, rss := cpuPercent(s, o.window), rssMiB(s.pid())
	r[fmt.Sprintf("whep_cpu_%d", n)] = (cpu - baseCPU) / float64(n)
	r[fmt.Sprintf("whep_rss_%d", n)] = (rss - baseRSS) / float64(n)
	fmt.Fprintf(os.Stderr, "%s, %d WHEP viewers: CPU %.1f%% -> %.1f%% of one core, RSS %.1f -> %.1f MiB\n",
		s.name, n, baseCPU, cpu, baseRSS, rss)
	return nil
}

func printTable(w io.Writer, f map[string]results, o options) {
	rows := []struct{ key, what, unit string }{
		{"idle_rss", "RSS, no camera", "MiB"},
		{"idle_rss_anon", "  of which anonymous (RssAnon)", "MiB"},
		{"idle_rss_file", "  of which mapped files (RssFile)", "MiB"},
		{"relay_cpu", fmt.Sprintf("RTSP relay CPU per camera (%d cameras, 1 reader each)", o.cameras), "% core"},
		{"relay_rss", fmt.Sprintf("RTSP relay RSS (%d cameras)", o.cameras), "MiB"},
		{"relay_rss_anon", "  of which anonymous (RssAnon)", "MiB"},
		{"relay_rss_file", "  of which mapped files (RssFile)", "MiB"},
		{"join_p50", fmt.Sprintf("WHEP answer p50 (%d viewers at once)", o.viewers), "ms"},
		{"join_p99", fmt.Sprintf("WHEP answer p99 (%d viewers at once)", o.viewers), "ms"},
		{"first_p50", "answer to first complete access unit p50", "ms"},
		{"first_p99", "answer to first complete access unit p99", "ms"},
		{"whep_cpu_10", "WHEP CPU per viewer at 10", "% core"},
		{fmt.Sprintf("whep_cpu_%d", o.viewers), fmt.Sprintf("WHEP CPU per viewer at %d", o.viewers), "% core"},
		{"whep_rss_10", "WHEP RSS per viewer at 10", "MiB"},
		{fmt.Sprintf("whep_rss_%d", o.viewers), fmt.Sprintf("WHEP RSS per viewer at %d", o.viewers), "MiB"},
	}
	fmt.Fprintf(w, "\n%-58s %12s %12s %8s\n", "figure (one run, shared machine: compare ratios)", "imageflow", "mediamtx", "ratio")
	for _, r := range rows {
		a, b := f["imageflow"][r.key], f["mediamtx"][r.key]
		ratio := "-"
		if b != 0 {
			ratio = fmt.Sprintf("%.2f×", a/b)
		}
		fmt.Fprintf(w, "%-58s %9.2f %-2s %9.2f %-2s %8s\n", r.what, a, short(r.unit), b, short(r.unit), ratio)
	}
}

func short(unit string) string {
	switch unit {
	case "% core":
		return "%"
	case "MiB":
		return "MB"
	}
	return unit
}

// metric sums a Prometheus counter's samples whose labels contain all of
// the given label pairs.
func metric(s *server, name string, labels ...string) float64 {
	res, err := http.Get("http://" + s.http + "/metrics")
	if err != nil {
		return 0
	}
	defer res.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(line, l) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			v, _ := strconv.ParseFloat(line[i+1:], 64)
			sum += v
		}
	}
	return sum
}

// detectRound measures one 1080p30 camera through imageflow's detection
// path, one stage added per phase, each phase on a fresh camera: relay
// only; decode and convert (a pipeline whose one step costs next to
// nothing); plus motion; plus HOG people detection gated by motion (the demo
// pipeline). A stage's cost is the difference to the phase before. Decode
// alone is ffmpeg's single-thread decode of the same clip without
// deblocking, as the frame source decodes it, times the share of access
// units the frame source decoded (it leaves out what no sample needs).
func detectRound(s *server, o options) error {
	pipelines := map[string]string{
		"convert": `{"id":"convert","steps":[{"id":"tiny","processor":"resize","params":{"width":16}}]}`,
		"motion":  `{"id":"motion","steps":[{"id":"motion","processor":"motion","params":{"min_area":300,"work_width":320,"kernel_size":3}}]}`,
		"people": `{"id":"people","steps":[{"id":"motion","processor":"motion","params":{"min_area":300,"work_width":320,"kernel_size":3}},
			{"id":"people","processor":"detect","inputs":["motion"],"params":{"backend":"hog","gate":"only_if_motion","regions":"motion",
			"region_sizing":"motion_height","tight_boxes":true,"keep_input_detections":false,"win_stride":8,"scale":1.15,"padding":0}}]}`,
	}
	for _, p := range []string{"convert", "motion", "people"} {
		if err := s.post("/api/v1/pipelines", pipelines[p]); err != nil {
			return err
		}
	}
	phases := []string{"", "convert", "motion", "people"}
	cpu := map[string]float64{}
	var published, skipped, seconds float64
	// The frame source's counters over the convert phase: the share of
	// access units it decoded.
	decoderCount := func(cam, event string) float64 {
		return metric(s, "imageflow_decoder_frames_total", `camera="`+cam+`"`, `event="`+event+`"`)
	}
	var decodedShare float64
	// Wall time per frame of the people pipeline's steps, from
	// imageflow_pipeline_step_duration_seconds over the window.
	stepSum := func(step string) (sum, count float64) {
		l := []string{`pipeline="people"`, `step="` + step + `"`}
		return metric(s, "imageflow_pipeline_step_duration_seconds_sum", l...), metric(s, "imageflow_pipeline_step_duration_seconds_count", l...)
	}
	var motionS0, motionN0, detectS0, detectN0, motionS, motionN, detectS, detectN float64
	for i, p := range phases {
		cam := fmt.Sprintf("det%d", i)
		if err := s.addCamera(cam, p); err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(context.Background())
		pub := publisher(ctx, s, cam, o.detectClip)
		time.Sleep(5 * time.Second)
		pub0 := metric(s, "imageflow_decoder_frames_total", `camera="`+cam+`"`, `event="published"`)
		if p == "people" {
			motionS0, motionN0 = stepSum("motion")
			detectS0, detectN0 = stepSum("people")
		}
		t0 := time.Now()
		dec0, pub0c, skip0 := decoderCount(cam, "decoded"), decoderCount(cam, "published"), decoderCount(cam, "skipped")
		cpu[p] = cpuPercent(s, o.window)
		if p == "convert" {
			dec, pub, skip := decoderCount(cam, "decoded")-dec0, decoderCount(cam, "published")-pub0c, decoderCount(cam, "skipped")-skip0
			// skipped counts access units left undecoded and decoded
			// pictures not due for sampling (decoded - published).
			if undecoded := skip - (dec - pub); dec+undecoded > 0 {
				decodedShare = dec / (dec + undecoded)
			}
		}
		if p == "people" {
			published = metric(s, "imageflow_decoder_frames_total", `camera="`+cam+`"`, `event="published"`) - pub0
			seconds = time.Since(t0).Seconds()
			skipped = metric(s, "imageflow_live_frames_skipped_total", `camera="`+cam+`"`)
			motionS, motionN = stepSum("motion")
			detectS, detectN = stepSum("people")
		}
		cancel()
		_ = pub.Wait()
		time.Sleep(2 * time.Second)
	}
	ffmpegDecode := ffmpegDecodeCPU(o.detectClip)
	decode := ffmpegDecode * decodedShare
	convert := cpu["convert"] - cpu[""] - decode
	fmt.Printf("\ndetection path, one 1080p30 H264 RTSP camera (%s), HOG people where motion is, 5 fps (imageflow only):\n", filepath.Base(o.detectClip))
	fmt.Printf("  relay only (ingest, bus):             %6.1f %% of one core\n", cpu[""])
	fmt.Printf("  decode (no deblocking, ffmpeg -threads 1 on the clip: %.1f %%, x %.0f %% of the access units decoded): %6.1f %%\n",
		ffmpegDecode, 100*decodedShare, decode)
	fmt.Printf("  convert (scale to 640 BGR, frames to the pipeline; and what decoding live costs over ffmpeg's flat-out run): %6.1f %%\n", convert)
	fmt.Printf("  motion (MOG2, morphology, contours):  %6.1f %%\n", cpu["motion"]-cpu["convert"])
	fmt.Printf("  detect (HOG in motion regions):       %6.1f %%\n", cpu["people"]-cpu["motion"])
	fmt.Printf("  whole camera:                         %6.1f %% of one core -> %.0f such cameras on 2 cores\n",
		cpu["people"], 200/cpu["people"])
	fmt.Printf("  frames published to the pipeline: %.1f per second; pipeline frames skipped: %.0f\n", published/seconds, skipped)
	perFrame := func(sum, n float64) float64 {
		if n <= 0 {
			return 0
		}
		return 1000 * sum / n
	}
	fmt.Printf("  step wall time per frame in the people phase: motion %.1f ms, detect %.1f ms (x 5 fps = %.1f %% and %.1f %% of one core if not preempted)\n",
		perFrame(motionS-motionS0, motionN-motionN0), perFrame(detectS-detectS0, detectN-detectN0),
		0.5*perFrame(motionS-motionS0, motionN-motionN0), 0.5*perFrame(detectS-detectS0, detectN-detectN0))
	fmt.Println("  (stage CPU figures are differences between phases run one after another: on a busy machine run a longer -window)")
	return detectLoad(s, o)
}

// detectLoad runs o.detectCameras such cameras at once, each clip started
// at another point, as a machine full of cameras runs them: the CPU per
// camera with the cores kept busy (a lone camera's core idles between
// pictures, and each picture after a pause costs more), and whether every
// camera still gets its 5 frames a second with none skipped or dropped:
// how many cameras the machine holds, measured instead of divided out.
func detectLoad(s *server, o options) error {
	if o.detectCameras <= 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cams := make([]string, o.detectCameras)
	var pubs []*exec.Cmd
	for i := range cams {
		cams[i] = fmt.Sprintf("load%d", i)
		if err := s.addCamera(cams[i], "people"); err != nil {
			return err
		}
		pubs = append(pubs, publisherFrom(ctx, s, cams[i], o.detectClip, time.Duration(i)*7*time.Second))
	}
	time.Sleep(8 * time.Second)
	published := func() []float64 {
		out := make([]float64, len(cams))
		for i, cam := range cams {
			out[i] = metric(s, "imageflow_decoder_frames_total", `camera="`+cam+`"`, `event="published"`)
		}
		return out
	}
	pub0 := published()
	skip0 := metric(s, "imageflow_live_frames_skipped_total", `camera="load`)
	drop0 := metric(s, "imageflow_live_dropped_total", `camera="load`)
	t0 := time.Now()
	cpu := cpuPercent(s, o.window)
	seconds := time.Since(t0).Seconds()
	pub1 := published()
	skipped := metric(s, "imageflow_live_frames_skipped_total", `camera="load`) - skip0
	dropped := metric(s, "imageflow_live_dropped_total", `camera="load`) - drop0
	cancel()
	for _, p := range pubs {
		_ = p.Wait()
	}
	slowest := math.Inf(1)
	for i := range cams {
		slowest = min(slowest, (pub1[i]-pub0[i])/seconds)
	}
	fmt.Printf("  %d such cameras at once: %.1f %% of a core in all, %.1f %% per camera; frames to the pipelines %.1f per second for the slowest camera; pipeline frames skipped %.0f, access units dropped %.0f\n",
		len(cams), cpu, cpu/float64(len(cams)), slowest, skipped, dropped)
	return nil
}

// ffmpegDecodeCPU is the CPU, in % of one core, of decoding clip in real time
// on one thread without the loop filter.
func ffmpegDecodeCPU(clip string) float64 {
	out, err := exec.Command("ffmpeg", "-hide_banner", "-nostats", "-benchmark", "-threads", "1", "-skip_loop_filter", "all",
		"-i", clip, "-f", "null", "-").CombinedOutput()
	if err != nil {
		return 0
	}
	var ut, st float64
	for _, l := range strings.Split(string(out), "\n") {
		if i := strings.Index(l, "bench: utime="); i >= 0 {
			fmt.Sscanf(l[i:], "bench: utime=%fs stime=%fs", &ut, &st)
		}
	}
	probe, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", clip).Output()
	if err != nil {
		return 0
	}
	dur, _ := strconv.ParseFloat(strings.TrimSpace(string(probe)), 64)
	if dur == 0 {
		return 0
	}
	return 100 * (ut + st) / dur
}

// joinRounds runs only the join of o.viewers viewers, o.onlyJoin rounds of
// each server (and o.baseline's) alternating, each on a fresh server, and
// prints every round's answer and first-access-unit percentiles, their
// medians over the rounds, and with o.steps where imageflow's answers spent
// their time.
func joinRounds(o options) error {
	type round struct{ join50, join99, first50, first99, joinFirst50, joinFirst99 float64 }
	all := map[string][]round{}
	steps := map[string][]float64{}
	var order []string
	names := []string{"imageflow"}
	if o.baseline != "" {
		names = append(names, "baseline")
	}
	names = append(names, "mediamtx")
	for i := range o.onlyJoin {
		// The order turns every round, so none always runs first.
		turn := append(slices.Clone(names[i%len(names):]), names[:i%len(names)]...)
		for _, name := range turn {
			dir, err := os.MkdirTemp("", "vsmediamtx-")
			if err != nil {
				return err
			}
			var s *server
			switch name {
			case "imageflow", "baseline":
				level := "warn"
				if o.steps && name == "imageflow" {
					level = "debug"
				}
				bin := o.bin
				if name == "baseline" {
					bin = o.baseline
				}
				s, err = startImageflow(bin, dir, level)
				if s != nil {
					s.name = name
				}
			default:
				s, err = startMediaMTX(o.mediamtx, dir)
			}
			if err != nil {
				os.RemoveAll(dir)
				return err
			}
			r := results{}
			ro := o
			if i > 0 {
				ro.perf = ""
			}
			err = whepRound(s, r, ro, o.viewers)
			s.close()
			if name == "imageflow" && o.steps {
				order = answerSteps(s.log.String(), int64(r["join_start_unix_us"]), steps, order)
			}
			os.RemoveAll(dir)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			all[name] = append(all[name], round{r["join_p50"], r["join_p99"], r["first_p50"], r["first_p99"], r["join_first_p50"], r["join_first_p99"]})
			fmt.Printf("round %d %-9s answer p50 %6.0f ms p99 %6.0f ms; answer to first access unit p50 %6.0f ms p99 %6.0f ms; join to first access unit p50 %6.0f ms p99 %6.0f ms\n",
				i+1, name, r["join_p50"], r["join_p99"], r["first_p50"], r["first_p99"], r["join_first_p50"], r["join_first_p99"])
			if o.steps {
				fmt.Printf("          server, from the start until the last answer (%.0f ms): %.0f ms on CPU, %.0f ms runnable but waiting for a CPU (all threads)\n",
					r["join_wall_ms"], r["join_server_cpu_ms"], r["join_server_wait_ms"])
				fmt.Printf("          client: connected p50/p99 %.0f/%.0f ms after the start, offer written %.0f/%.0f ms later, answer's first byte %.0f/%.0f ms after that\n",
					r["client_connected_p50"], r["client_connected_p99"], r["client_offer_written_p50"], r["client_offer_written_p99"],
					r["client_answer_first_byte_p50"], r["client_answer_first_byte_p99"])
			}
		}
	}
	median := func(rs []round, f func(round) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	fmt.Printf("\nmedian of %d rounds, %d viewers at once  %12s %12s %8s", o.onlyJoin, o.viewers, "imageflow", "mediamtx", "ratio")
	if o.baseline != "" {
		fmt.Printf(" %12s %8s", "baseline", "ratio")
	}
	fmt.Println()
	for _, f := range []struct {
		what string
		get  func(round) float64
	}{
		{"WHEP answer p50", func(r round) float64 { return r.join50 }},
		{"WHEP answer p99", func(r round) float64 { return r.join99 }},
		{"answer to first access unit p50", func(r round) float64 { return r.first50 }},
		{"answer to first access unit p99", func(r round) float64 { return r.first99 }},
		{"join to first access unit p50", func(r round) float64 { return r.joinFirst50 }},
		{"join to first access unit p99", func(r round) float64 { return r.joinFirst99 }},
	} {
		a, b := median(all["imageflow"], f.get), median(all["mediamtx"], f.get)
		fmt.Printf("%-40s %9.0f ms %9.0f ms %7.2f×", f.what, a, b, a/b)
		if o.baseline != "" {
			c := median(all["baseline"], f.get)
			fmt.Printf(" %9.0f ms %7.2f×", c, c/b)
		}
		fmt.Println()
	}
	if o.steps {
		fmt.Printf("\nimageflow's answers step by step (%d answers, ms; handler: the HTTP handler around the engine's steps)    p50      p99\n", len(steps["total"]))
		for _, name := range order {
			d := steps[name]
			slices.Sort(d)
			fmt.Printf("  %-48s %7.1f  %7.1f\n", name, d[len(d)/2], d[int(0.99*float64(len(d)-1))])
		}
	}
	return nil
}

// answerSteps adds the step durations of imageflow's "whep answer steps"
// and "whep offer" debug lines in log to steps, keeping the steps'
// first-seen order; joinStart is when the join began, in Unix µs.
func answerSteps(log string, joinStart int64, steps map[string][]float64, order []string) []string {
	for _, line := range strings.Split(log, "\n") {
		prefix := ""
		switch {
		case strings.Contains(line, `msg="whep answer steps"`):
		case strings.Contains(line, `msg="whep offer"`):
			prefix = "handler: "
		default:
			continue
		}
		for _, f := range strings.Fields(line) {
			k, v, ok := strings.Cut(f, "=")
			if at, isTime := strings.CutSuffix(k, "_unix_us"); ok && isTime && joinStart != 0 {
				// When the handler started and ended, since the join.
				if us, err := strconv.ParseInt(v, 10, 64); err == nil {
					k, v = at+"_since_join_ms", strconv.FormatFloat(float64(us-joinStart)/1000, 'f', 3, 64)
				}
			}
			name, isStep := strings.CutSuffix(k, "_ms")
			if !ok || !isStep {
				continue
			}
			d, err := strconv.ParseFloat(v, 64)
			if err != nil {
				continue
			}
			name = prefix + name
			if _, seen := steps[name]; !seen {
				order = append(order, name)
			}
			steps[name] = append(steps[name], d)
		}
	}
	return order
}

// schedStat sums the CPU time and the run-queue wait (runnable, waiting for
// a CPU) of all of a process's threads (/proc/PID/task/*/schedstat).
func schedStat(pid int) (cpu, wait time.Duration) {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			continue
		}
		c, _ := strconv.ParseInt(f[0], 10, 64)
		w, _ := strconv.ParseInt(f[1], 10, 64)
		cpu += time.Duration(c)
		wait += time.Duration(w)
	}
	return cpu, wait
}
