package k3s

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/imageflowcanvas/imageflow/server"
	"github.com/imageflowcanvas/imageflow/server/blob/blobtest"
)

const dashboardFile = "grafana/imageflow.json"

type dsRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type dashPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *dsRef `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string `json:"refId"`
		Expr       string `json:"expr"`
		Datasource *dsRef `json:"datasource"`
	} `json:"targets"`
	Panels []dashPanel `json:"panels"`
}

type dashVariable struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	Query      any    `json:"query"`
	IncludeAll bool   `json:"includeAll"`
	AllValue   string `json:"allValue"`
	Datasource *dsRef `json:"datasource"`
}

type dashboard struct {
	UID           string `json:"uid"`
	Title         string `json:"title"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []dashVariable `json:"list"`
	} `json:"templating"`
	Panels []dashPanel `json:"panels"`
}

func loadDashboard(t *testing.T) *dashboard {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return &d
}

// allPanels flattens rows (collapsed rows carry their panels inside).
func (d *dashboard) allPanels() []dashPanel {
	var out []dashPanel
	var walk func(ps []dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// query is one panel target's PromQL.
type query struct {
	panel, refID, expr string
}

func (d *dashboard) queries() []query {
	var out []query
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			out = append(out, query{panel: p.Title, refID: tg.RefID, expr: tg.Expr})
		}
	}
	return out
}

var varRe = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]`)

// expand substitutes Grafana variables the way Grafana does with every
// template variable on "All": the variable's allValue, and a fixed window
// for the interval macros.
func (d *dashboard) expand(expr, window string) (string, error) {
	vars := map[string]dashVariable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	var bad error
	out := varRe.ReplaceAllStringFunc(expr, func(m string) string {
		sm := varRe.FindStringSubmatch(m)
		name := sm[1] + sm[2] + sm[3]
		switch name {
		case "__rate_interval", "__interval", "__range":
			return window
		case "__range_s":
			d, _ := time.ParseDuration(window)
			return strconv.Itoa(int(d.Seconds()))
		}
		v, ok := vars[name]
		if !ok {
			bad = fmt.Errorf("variable $%s is not defined in templating", name)
			return m
		}
		if !v.IncludeAll || v.AllValue == "" {
			bad = fmt.Errorf("variable $%s has no All value (includeAll with allValue)", name)
			return m
		}
		return v.AllValue
	})
	return out, bad
}

var (
	quotedRe   = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	matcherRe  = regexp.MustCompile(`\{[^{}]*\}`)
	rangeRe    = regexp.MustCompile(`\[[^\[\]]*\]`)
	groupingRe = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	identRe    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	keywords   = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true,
		"group_right": true, "bool": true, "offset": true, "and": true, "or": true, "unless": true, "inf": true,
		"nan": true, "atan2": true, "start": true, "end": true}
)

// metricNames extracts the metric names a PromQL expression selects. It
// strips strings, label matchers, ranges and grouping clauses; what remains
// as an identifier not followed by "(" (a function or aggregation) and not
// a keyword, number part or $variable is a metric name.
func metricNames(expr string) []string {
	s := quotedRe.ReplaceAllString(expr, `""`)
	s = matcherRe.ReplaceAllString(s, "{}")
	s = rangeRe.ReplaceAllString(s, "")
	s = groupingRe.ReplaceAllString(s, " ")
	seen := map[string]bool{}
	var out []string
	for _, loc := range identRe.FindAllStringIndex(s, -1) {
		name := s[loc[0]:loc[1]]
		if loc[0] > 0 {
			prev := s[loc[0]-1]
			if prev == '$' || prev == '.' || (prev >= '0' && prev <= '9') {
				continue // $variable, or the exponent/unit of a number like 1e3
			}
		}
		if keywords[strings.ToLower(name)] {
			continue
		}
		rest := strings.TrimLeft(s[loc[1]:], " \t\n")
		if strings.HasPrefix(rest, "(") {
			continue
		}
		if !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func TestMetricNames(t *testing.T) {
	for _, c := range []struct {
		expr string
		want []string
	}{
		{`up`, []string{"up"}},
		{`rate(foo_total{a="b", c=~"x|y"}[5m])`, []string{"foo_total"}},
		{`histogram_quantile(0.99, sum by (le, route) (rate(h_seconds_bucket{route!="/x(y)"}[$__rate_interval])))`, []string{"h_seconds_bucket"}},
		{`sum without (instance) (a) / on (job) group_left (x) b`, []string{"a", "b"}},
		{`2 * sum by (camera) (s{state="online"}) + 1e3 - x offset 5m`, []string{"s", "x"}},
		{`a and b or c unless d > bool 3`, []string{"a", "b", "c", "d"}},
		{`sum(rate(x_total[1m])) by (job)`, []string{"x_total"}},
		{`max_over_time(m[10m:1m])`, []string{"m"}},
		{`label_replace(up, "a", "$1", "job", "(.*)")`, []string{"up"}},
		{`go_goroutines{instance=~"$instance"}`, []string{"go_goroutines"}},
		{`vector(1)`, nil},
	} {
		got := metricNames(c.expr)
		if strings.Join(got, ",") != strings.Join(c.want, ",") {
			t.Errorf("metricNames(%q) = %q, want %q", c.expr, got, c.want)
		}
	}
}

// TestDashboardJSON checks the dashboard's structure: schema, datasource
// variable, ids, layout, targets and variables.
func TestDashboardJSON(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Error("dashboard needs a uid and a title")
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d: datasource variables by uid need 36+", d.SchemaVersion)
	}
	hasDS := false
	for _, v := range d.Templating.List {
		if v.Type == "datasource" && v.Query == "prometheus" && v.Name == "datasource" {
			hasDS = true
		}
		if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != "${datasource}") {
			t.Errorf("variable %s does not query the ${datasource} variable", v.Name)
		}
	}
	if !hasDS {
		t.Error("no Prometheus datasource variable named datasource")
	}
	ids := map[int]string{}
	type rect struct {
		title      string
		x, y, w, h int
	}
	var rects []rect
	for _, p := range d.allPanels() {
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", prev, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, g)
		}
		for _, r := range rects {
			if g.X < r.x+r.w && r.x < g.X+g.W && g.Y < r.y+r.h && r.y < g.Y+g.H {
				t.Errorf("panels %q and %q overlap", p.Title, r.title)
			}
		}
		rects = append(rects, rect{p.Title, g.X, g.Y, g.W, g.H})
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not use the ${datasource} variable", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no queries", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if refs[tg.RefID] || tg.RefID == "" {
				t.Errorf("panel %q: refId %q empty or repeated", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q %s: empty expr", p.Title, tg.RefID)
			}
			if _, err := d.expand(tg.Expr, "1m"); err != nil {
				t.Errorf("panel %q %s: %v", p.Title, tg.RefID, err)
			}
			if len(metricNames(tg.Expr)) == 0 {
				t.Errorf("panel %q %s: selects no metric", p.Title, tg.RefID)
			}
		}
	}
}

// recordingRegistry remembers every metric a collector describes, so
// families that have no series yet (a counter vector nobody incremented)
// are still known to exist.
type recordingRegistry struct {
	*prometheus.Registry
	mu    sync.Mutex
	names map[string]bool
}

var fqNameRe = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *recordingRegistry) record(c prometheus.Collector) {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if m := fqNameRe.FindStringSubmatch(d.String()); m != nil {
			r.mu.Lock()
			r.names[m[1]] = true
			r.mu.Unlock()
		}
	}
}

func (r *recordingRegistry) Register(c prometheus.Collector) error {
	r.record(c)
	return r.Registry.Register(c)
}

func (r *recordingRegistry) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		r.record(c)
	}
	r.Registry.MustRegister(cs...)
}

// scrape reads /metrics without a token, as Prometheus does.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("scrape /metrics: %d %s", resp.StatusCode, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

func sumOf(f *dto.MetricFamily) float64 {
	if f == nil {
		return 0
	}
	s := 0.0
	for _, m := range f.GetMetric() {
		switch {
		case m.Counter != nil:
			s += m.Counter.GetValue()
		case m.Gauge != nil:
			s += m.Gauge.GetValue()
		case m.Histogram != nil:
			s += float64(m.Histogram.GetSampleCount())
		}
	}
	return s
}

// family resolves a selected metric name to its family: histograms and
// summaries are selected through their _bucket/_sum/_count series.
func family(name string, fams map[string]*dto.MetricFamily, declared map[string]bool) (base string, scraped bool, err error) {
	if f, ok := fams[name]; ok {
		if f.GetType() == dto.MetricType_HISTOGRAM || f.GetType() == dto.MetricType_SUMMARY {
			return name, true, fmt.Errorf("%s is a %s: select its _bucket, _sum or _count series", name, f.GetType())
		}
		return name, true, nil
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		b, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		if f, ok := fams[b]; ok {
			ty := f.GetType()
			if ty == dto.MetricType_HISTOGRAM || (ty == dto.MetricType_SUMMARY && suffix != "_bucket") {
				return b, true, nil
			}
			return b, true, fmt.Errorf("%s: %s is a %s, it has no %s series", name, b, ty, suffix)
		}
		if declared[b] {
			return b, false, nil
		}
	}
	if declared[name] {
		return name, false, nil
	}
	return "", false, fmt.Errorf("%s is not exported by imageflow serve", name)
}

// podServer is `imageflow serve` started in-process with the deployment's
// configuration.
type podServer struct {
	srv      *server.Server
	base     string
	declared map[string]bool
	minio    string // MinIO address when one runs
}

// startMinIO runs the MinIO container's command line (data path and ports
// moved to a temp dir and loopback) with its environment from the Secret;
// it answers the manifest's probes before it is used.
func startMinIO(t *testing.T, b *bundle) string {
	t.Helper()
	bin := blobtest.MinIOBinary()
	if bin == "" {
		t.Log("minio binary not found (scripts/setup-test.sh builds it): imageflow runs without s3_endpoint")
		return ""
	}
	mc := minioContainer(t, b)
	args := append([]string{}, mc.c.Args...)
	var addr string
	for i := 0; i < len(args); i++ {
		switch {
		case (args[i] == "--address" || args[i] == "--console-address") && i+1 < len(args):
			a := freeAddr(t)
			if args[i] == "--address" {
				addr = a
			}
			args[i+1] = a
			i++
		case mountedAt(mc.c, args[i]):
			args[i] = t.TempDir()
		}
	}
	if addr == "" {
		t.Fatalf("MinIO args %q set no --address", mc.c.Args)
	}
	env := os.Environ()
	for k, v := range podEnv(t, b, mc.c, "127.0.0.1") {
		env = append(env, k+"="+v)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(env, "MINIO_UPDATE=off")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	for name, p := range mc.c.probes() {
		if p.HTTPGet != nil {
			waitHTTP(t, "MinIO "+name, "http://"+addr+p.HTTPGet.Path, 30*time.Second, done)
		}
	}
	return addr
}

// waitHTTP polls url until it answers 200.
func waitHTTP(t *testing.T, what, u string, timeout time.Duration, exited <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			t.Fatalf("%s: process exited", what)
		default:
		}
		resp, err := http.Get(u)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, b)
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: %s did not answer 200 within %s: %s", what, u, timeout, last)
}

func startPodServer(t *testing.T, b *bundle) *podServer {
	t.Helper()
	pc := serveContainer(t, b)
	cfg := loadPodConfig(t, b, pc, "127.0.0.1")
	cfg.DataDir = t.TempDir()
	for _, a := range []*string{&cfg.HTTPAddr, &cfg.RTSPAddr, &cfg.RTSPUDPAddr, &cfg.GRPCAddr, &cfg.WebRTCUDPAddr, &cfg.NATSAddr, &cfg.HTTPSAddr, &cfg.WebRTCTCPAddr} {
		if *a != "" {
			*a = "127.0.0.1:0"
		}
	}
	// One pod alone cannot form the three-pod cluster: it runs unclustered,
	// which exports the same metric families.
	cfg.ClusterName, cfg.ClusterRoutes, cfg.Replicas = "", nil, 0
	ps := &podServer{}
	if cfg.S3Endpoint != "" {
		ps.minio = startMinIO(t, b)
		cfg.S3Endpoint = ps.minio
	}
	if !cfg.Demo {
		t.Log("config has demo off: turning it on so cameras and pipelines export series")
		cfg.Demo = true
	}
	reg := &recordingRegistry{Registry: prometheus.NewRegistry(), names: map[string]bool{}}
	ps.declared = reg.names
	ps.srv = &server.Server{Config: cfg, Registerer: reg, Gatherer: reg.Registry,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))}
	if err := ps.srv.Start(context.Background()); err != nil {
		t.Fatalf("imageflow serve with the deployment's config: %v", err)
	}
	t.Cleanup(func() { _ = ps.srv.Close() })
	ps.base = "http://" + ps.srv.Addrs().HTTP
	// The kubelet's probes, on the paths the manifest names.
	for name, p := range pc.c.probes() {
		if p.HTTPGet != nil {
			waitHTTP(t, "imageflow "+name, ps.base+p.HTTPGet.Path, 30*time.Second, nil)
		}
	}
	return ps
}

// TestDashboardAgainstServer starts `imageflow serve` in-process with the
// ConfigMap's configuration and the Secret's values (and a real MinIO from
// the MinIO manifest), waits for the demo camera's results, and checks that
// every metric the dashboard selects is exported and every imageflow metric
// has a panel. With Prometheus installed, Prometheus runs the ConfigMap's
// scrape configuration (pod discovery replaced by the pods' annotations in
// a file) and evaluates every panel query.
func TestDashboardAgainstServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server, MinIO and Prometheus")
	}
	b := loadKustomization(t, baseDir)
	d := loadDashboard(t)
	ps := startPodServer(t, b)

	// Wait for the demo camera's pipeline to produce results, so camera,
	// decoder and pipeline families have series.
	var fams map[string]*dto.MetricFamily
	deadline := time.Now().Add(45 * time.Second)
	for {
		fams = scrape(t, ps.base)
		if sumOf(fams["imageflow_live_results_total"]) > 0 && sumOf(fams["imageflow_pipeline_step_duration_seconds"]) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no demo results after 45 s (camera state %v)", fams["imageflow_camera_state"])
		}
		time.Sleep(250 * time.Millisecond)
	}

	used := map[string]bool{}
	var pending []string
	allScraped := map[string]bool{} // expr → every family has series
	for _, q := range d.queries() {
		all := true
		for _, name := range metricNames(q.expr) {
			base, scraped, err := family(name, fams, ps.declared)
			if err != nil {
				t.Errorf("panel %q %s: %v", q.panel, q.refID, err)
				all = false
				continue
			}
			used[base] = true
			if !scraped {
				all = false
				pending = append(pending, base)
			}
		}
		allScraped[q.expr] = all
	}
	if len(pending) > 0 {
		sort.Strings(pending)
		t.Logf("declared, no series yet in this run (not evaluated for data): %s", strings.Join(uniq(pending), ", "))
	}
	// Every imageflow metric the server has is on the dashboard.
	exported := map[string]bool{}
	for n := range fams {
		exported[n] = true
	}
	for n := range ps.declared {
		exported[n] = true
	}
	for n := range exported {
		if strings.HasPrefix(n, "imageflow_") && !used[n] {
			t.Errorf("metric %s has no panel on the dashboard", n)
		}
	}
	if t.Failed() {
		return
	}
	promqlAgainstPrometheus(t, b, d, ps, allScraped)
}

func uniq(s []string) []string {
	var out []string
	for i, x := range s {
		if i == 0 || x != s[i-1] {
			out = append(out, x)
		}
	}
	return out
}

// promqlAgainstPrometheus runs Prometheus on the ConfigMap's prometheus.yml
// and evaluates every dashboard query against it.
func promqlAgainstPrometheus(t *testing.T, b *bundle, d *dashboard, ps *podServer, allScraped map[string]bool) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Log("prometheus not installed: PromQL of the dashboard not evaluated")
		return
	}
	var prom *podContainer
	var promCfg *object
	for _, p := range b.pods(t) {
		for _, c := range p.w.Spec.Template.Spec.Containers {
			if strings.HasPrefix(c.Image, "prom/prometheus:") {
				prom = &podContainer{pod: p, c: c}
				for _, v := range p.w.Spec.Template.Spec.Volumes {
					if v.ConfigMap != nil {
						promCfg = b.find("ConfigMap", v.ConfigMap.Name)
					}
				}
			}
		}
	}
	if prom == nil || promCfg == nil {
		t.Fatal("no Prometheus container with a ConfigMap")
	}
	raw, ok := promCfg.value("prometheus.yml")
	if !ok {
		t.Fatalf("ConfigMap %s has no prometheus.yml", promCfg.Metadata.Name)
	}
	dir := t.TempDir()
	targets := filepath.Join(dir, "pods.json")
	writePodTargets(t, b, ps, targets)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, localPromConfig(t, raw, targets), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cmd := exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--web.listen-address="+addr, "--log.level=error")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	promURL := "http://" + addr
	for name, p := range prom.c.probes() {
		if p.HTTPGet != nil {
			waitHTTP(t, "Prometheus "+name, promURL+p.HTTPGet.Path, 30*time.Second, done)
		}
	}

	// The scrape annotations and relabelling find imageflow (and MinIO),
	// and only the annotated pods.
	wantUp := []string{"imageflow"}
	if ps.minio != "" {
		wantUp = append(wantUp, "minio")
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, app := range wantUp {
		for {
			res, err := promQuery(promURL, fmt.Sprintf(`up{app=%q}`, app))
			if err == nil && len(res) == 1 && res[0].value() == "1" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("Prometheus does not scrape %s through the ConfigMap's relabelling: %v %v", app, res, err)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	if res, err := promQuery(promURL, `count by (app) (up)`); err != nil {
		t.Fatal(err)
	} else {
		// Annotated pods this test does not run (the worker) are scraped
		// too, and found down.
		annotated := map[string]bool{}
		for _, p := range b.pods(t) {
			if p.w.Spec.Template.Metadata.Annotations["prometheus.io/scrape"] == "true" {
				annotated[p.w.Spec.Template.Metadata.Labels["app.kubernetes.io/name"]] = true
			}
		}
		for _, r := range res {
			if app := r.Metric["app"]; app != "" && !contains(wantUp, app) && !annotated[app] {
				t.Errorf("Prometheus scrapes %s, which has no scrape annotation", app)
			}
		}
	}

	// Every query parses and evaluates; those whose metrics all have
	// series must return data once a few scrapes are in.
	type state struct {
		q    query
		expr string
		done bool
	}
	var qs []*state
	for _, q := range d.queries() {
		e, err := d.expand(q.expr, "10s")
		if err != nil {
			t.Fatal(err)
		}
		qs = append(qs, &state{q: q, expr: e})
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		left := 0
		for _, s := range qs {
			if s.done {
				continue
			}
			res, err := promQuery(promURL, s.expr)
			if err != nil {
				t.Errorf("panel %q %s: %v\n%s", s.q.panel, s.q.refID, err, s.expr)
				s.done = true
				continue
			}
			if len(res) > 0 || !allScraped[s.q.expr] {
				s.done = true
				continue
			}
			left++
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, s := range qs {
				if !s.done {
					t.Errorf("panel %q %s returns no data although its metrics have series:\n%s", s.q.panel, s.q.refID, s.expr)
				}
			}
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("%d dashboard queries evaluated by Prometheus", len(qs))
}

// localPromConfig is the ConfigMap's prometheus.yml with Kubernetes pod
// discovery replaced by a file of the same pods, and a 1 s scrape interval
// so the test does not wait 15 s per sample.
func localPromConfig(t *testing.T, raw, targets string) []byte {
	t.Helper()
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatalf("prometheus.yml: %v", err)
	}
	global, _ := cfg["global"].(map[string]any)
	if global == nil {
		global = map[string]any{}
		cfg["global"] = global
	}
	global["scrape_interval"], global["evaluation_interval"] = "1s", "1s"
	replaced := 0
	scs, _ := cfg["scrape_configs"].([]any)
	for _, sc := range scs {
		m, _ := sc.(map[string]any)
		sds, ok := m["kubernetes_sd_configs"].([]any)
		if !ok {
			continue
		}
		for _, sd := range sds {
			if role, _ := sd.(map[string]any)["role"].(string); role != "pod" {
				t.Fatalf("scrape config %v: only pod discovery is simulated", m["job_name"])
			}
		}
		delete(m, "kubernetes_sd_configs")
		m["file_sd_configs"] = []any{map[string]any{"files": []any{targets}, "refresh_interval": "1s"}}
		replaced++
	}
	if replaced == 0 {
		t.Fatal("prometheus.yml has no kubernetes pod discovery")
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var labelSanitize = regexp.MustCompile(`[^a-zA-Z0-9_]`)

// writePodTargets writes, for each pod template, the labels Kubernetes pod
// discovery would give the pod (namespace, name, phase, labels,
// annotations), at 127.0.0.1. A prometheus.io/port that a local process
// serves is moved to that process's port.
func writePodTargets(t *testing.T, b *bundle, ps *podServer, file string) {
	t.Helper()
	local := map[string]map[string]string{"imageflow": {}, "minio": {}}
	pc := serveContainer(t, b)
	if n, _, ok := pc.c.port(intOrString{Str: "http"}); ok {
		local[pc.pod.owner.Metadata.Name][strconv.Itoa(n)] = portOf(ps.srv.Addrs().HTTP)
	}
	if ps.minio != "" {
		mc := minioContainer(t, b)
		if n, _, ok := mc.c.port(intOrString{Str: "s3"}); ok {
			local[mc.pod.owner.Metadata.Name] = map[string]string{strconv.Itoa(n): portOf(ps.minio)}
		}
	}
	type group struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels"`
	}
	var groups []group
	for _, p := range b.pods(t) {
		l := map[string]string{
			"__meta_kubernetes_namespace":   b.namespace,
			"__meta_kubernetes_pod_name":    p.owner.Metadata.Name + "-0",
			"__meta_kubernetes_pod_phase":   "Running",
			"__meta_kubernetes_pod_ip":      "127.0.0.1",
			"__meta_kubernetes_pod_ready":   "true",
			"__meta_kubernetes_pod_uid":     "uid-" + p.owner.Metadata.Name,
			"__meta_kubernetes_pod_host_ip": "127.0.0.1",
		}
		for k, v := range p.w.Spec.Template.Metadata.Labels {
			l["__meta_kubernetes_pod_label_"+labelSanitize.ReplaceAllString(k, "_")] = v
			l["__meta_kubernetes_pod_labelpresent_"+labelSanitize.ReplaceAllString(k, "_")] = "true"
		}
		for k, v := range p.w.Spec.Template.Metadata.Annotations {
			if k == "prometheus.io/port" {
				if moved, ok := local[p.owner.Metadata.Name][v]; ok {
					v = moved
				}
			}
			l["__meta_kubernetes_pod_annotation_"+labelSanitize.ReplaceAllString(k, "_")] = v
			l["__meta_kubernetes_pod_annotationpresent_"+labelSanitize.ReplaceAllString(k, "_")] = "true"
		}
		groups = append(groups, group{Targets: []string{"127.0.0.1"}, Labels: l})
	}
	raw, _ := json.Marshal(groups)
	if err := os.WriteFile(file, raw, 0o600); err != nil {
		t.Fatal(err)
	}
}

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  []any             `json:"value"`
}

func (s promSample) value() string {
	if len(s.Value) == 2 {
		v, _ := s.Value[1].(string)
		return v
	}
	return ""
}

// promQuery evaluates an instant query through Prometheus' HTTP API.
func promQuery(base, q string) ([]promSample, error) {
	resp, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Status    string `json:"status"`
		Error     string `json:"error"`
		ErrorType string `json:"errorType"`
		Data      struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, fmt.Errorf("query %q: %v", q, err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%s: %s", r.ErrorType, r.Error)
	}
	if r.Data.ResultType != "vector" {
		return nil, fmt.Errorf("result type %s, want vector", r.Data.ResultType)
	}
	var res []promSample
	if err := json.Unmarshal(r.Data.Result, &res); err != nil {
		return nil, err
	}
	return res, nil
}
