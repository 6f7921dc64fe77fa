package k3s

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/processors/builtin"
	"github.com/imageflowcanvas/imageflow/server"
)

const baseDir = "base"

// imageflowImage is the repository of the image the Dockerfile builds.
const imageflowImage = "imageflowcanvas/imageflow"

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// imageflowBinary is $IFC_BIN when set (scripts/test.sh builds it), else the
// binary built once for this run.
func imageflowBinary(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("IFC_BIN"); b != "" {
		if _, err := os.Stat(b); err == nil {
			return b
		}
	}
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "k3s-test-bin")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "imageflow")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/imageflow")
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/imageflow: %v: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// TestManifestsCrossReference checks what kubectl apply would only find out
// on a cluster: selectors match pods, Services and probes name declared
// ports, env/volume references resolve, secrets are marked placeholders.
func TestManifestsCrossReference(t *testing.T) {
	b := loadKustomization(t, baseDir)
	if b.namespace == "" {
		t.Fatal("base kustomization sets no namespace")
	}
	if ns := b.find("Namespace", b.namespace); ns == nil {
		t.Errorf("no Namespace %q among the resources", b.namespace)
	}
	seen := map[string]bool{}
	for _, o := range b.objects {
		id := o.Kind + "/" + o.Metadata.Name
		if seen[id] {
			t.Errorf("%s defined twice", id)
		}
		seen[id] = true
		if !clusterScoped[o.Kind] && o.Metadata.Namespace != b.namespace {
			t.Errorf("%s: namespace %q, want %q", o, o.Metadata.Namespace, b.namespace)
		}
		checkFieldNames(t, o)
	}

	pods := b.pods(t)
	if len(pods) == 0 {
		t.Fatal("no workloads")
	}
	for _, p := range pods {
		checkPod(t, b, p)
	}
	for _, o := range b.ofKind("Service") {
		checkService(t, o, pods)
	}
	for _, o := range b.ofKind("Ingress") {
		var in ingress
		o.decode(t, &in)
		for _, r := range in.Spec.Rules {
			for _, p := range r.HTTP.Paths {
				checkServiceRef(t, b, o.String(), p.Backend.Service.Name, p.Backend.Service.Port.Name, p.Backend.Service.Port.Number)
			}
		}
	}
	for _, o := range b.ofKind("RoleBinding", "ClusterRoleBinding") {
		var rb roleBinding
		o.decode(t, &rb)
		if b.find(rb.RoleRef.Kind, rb.RoleRef.Name) == nil {
			t.Errorf("%s: roleRef %s/%s not found", o, rb.RoleRef.Kind, rb.RoleRef.Name)
		}
		for _, s := range rb.Subjects {
			if s.Kind == "ServiceAccount" && b.find("ServiceAccount", s.Name) == nil {
				t.Errorf("%s: subject ServiceAccount %q not found", o, s.Name)
			}
		}
	}
	// Committed secrets must be visibly fake, so nobody mistakes them for
	// real credentials or ships them unchanged.
	for _, o := range b.ofKind("Secret") {
		for _, k := range append(keys(o.StringData), keys(o.Data)...) {
			v, _ := o.value(k)
			l := strings.ToLower(k)
			if strings.Contains(l, "password") || strings.Contains(l, "secret") || strings.Contains(l, "token") || strings.Contains(l, "key") {
				if !strings.Contains(v, "CHANGE-ME") {
					t.Errorf("%s: %s is not marked as a placeholder (CHANGE-ME)", o, k)
				}
			}
		}
	}
	// The components the deployment is for.
	for _, want := range []string{"StatefulSet/imageflow", "Deployment/processor-detect", "Deployment/infer",
		"StatefulSet/minio", "Deployment/prometheus", "Deployment/grafana"} {
		if !seen[want] {
			t.Errorf("no %s", want)
		}
	}
}

func checkPod(t *testing.T, b *bundle, p pod) {
	t.Helper()
	o, spec := p.owner, p.w.Spec
	if len(spec.Selector.MatchLabels) == 0 {
		t.Errorf("%s: empty selector", o)
	}
	for k, v := range spec.Selector.MatchLabels {
		if spec.Template.Metadata.Labels[k] != v {
			t.Errorf("%s: selector %s=%s does not match the pod template's labels %v", o, k, v, spec.Template.Metadata.Labels)
		}
	}
	if o.Kind == "StatefulSet" {
		if svc := b.find("Service", spec.ServiceName); svc == nil {
			t.Errorf("%s: serviceName %q is not a Service", o, spec.ServiceName)
		}
	}
	ps := spec.Template.Spec
	if sa := ps.ServiceAccountName; sa != "" && b.find("ServiceAccount", sa) == nil {
		t.Errorf("%s: serviceAccountName %q not found", o, sa)
	}
	volumes := map[string]bool{}
	for _, v := range ps.Volumes {
		volumes[v.Name] = true
		switch {
		case v.ConfigMap != nil:
			if b.find("ConfigMap", v.ConfigMap.Name) == nil {
				t.Errorf("%s: volume %s: ConfigMap %q not found", o, v.Name, v.ConfigMap.Name)
			}
		case v.Secret != nil:
			if b.find("Secret", v.Secret.SecretName) == nil {
				t.Errorf("%s: volume %s: Secret %q not found", o, v.Name, v.Secret.SecretName)
			}
		case v.PersistentVolumeClaim != nil:
			if b.find("PersistentVolumeClaim", v.PersistentVolumeClaim.ClaimName) == nil {
				t.Errorf("%s: volume %s: PersistentVolumeClaim %q not found", o, v.Name, v.PersistentVolumeClaim.ClaimName)
			}
		}
	}
	for _, vct := range spec.VolumeClaimTemplates {
		volumes[vct.Metadata.Name] = true
	}
	if ann := spec.Template.Metadata.Annotations; ann["prometheus.io/scrape"] == "true" {
		port, _ := strconv.Atoi(ann["prometheus.io/port"])
		found := false
		for _, c := range ps.Containers {
			if _, _, ok := c.port(intOrString{Int: port, IsInt: true}); ok {
				found = true
			}
		}
		if !found || !strings.HasPrefix(ann["prometheus.io/path"], "/") {
			t.Errorf("%s: scrape annotations port %q path %q name no declared port and path", o, ann["prometheus.io/port"], ann["prometheus.io/path"])
		}
	}
	for _, c := range append(append([]container{}, ps.InitContainers...), ps.Containers...) {
		where := fmt.Sprintf("%s container %s", o, c.Name)
		repo, tag, _ := strings.Cut(c.Image, ":")
		if repo == "" || tag == "" || tag == "latest" {
			t.Errorf("%s: image %q needs a pinned tag", where, c.Image)
		}
		for _, r := range []string{"cpu", "memory"} {
			if c.Resources.Requests[r] == "" || c.Resources.Limits[r] == "" {
				t.Errorf("%s: no %s request and limit", where, r)
			}
		}
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				t.Errorf("%s: volumeMount %q has no volume", where, m.Name)
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom == nil {
				continue
			}
			if r := e.ValueFrom.SecretKeyRef; r != nil {
				if s := b.find("Secret", r.Name); s == nil {
					t.Errorf("%s: env %s: Secret %q not found", where, e.Name, r.Name)
				} else if _, ok := s.value(r.Key); !ok {
					t.Errorf("%s: env %s: Secret %q has no key %q", where, e.Name, r.Name, r.Key)
				}
			}
			if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
				if cm := b.find("ConfigMap", r.Name); cm == nil {
					t.Errorf("%s: env %s: ConfigMap %q not found", where, e.Name, r.Name)
				} else if _, ok := cm.value(r.Key); !ok {
					t.Errorf("%s: env %s: ConfigMap %q has no key %q", where, e.Name, r.Name, r.Key)
				}
			}
		}
		for name, pr := range c.probes() {
			switch {
			case pr.HTTPGet != nil:
				if _, _, ok := c.port(pr.HTTPGet.Port); !ok {
					t.Errorf("%s: %s port %s is not a declared container port", where, name, pr.HTTPGet.Port)
				}
				if !strings.HasPrefix(pr.HTTPGet.Path, "/") {
					t.Errorf("%s: %s path %q", where, name, pr.HTTPGet.Path)
				}
			case pr.TCPSocket != nil:
				if _, _, ok := c.port(pr.TCPSocket.Port); !ok {
					t.Errorf("%s: %s port %s is not a declared container port", where, name, pr.TCPSocket.Port)
				}
			case pr.GRPC != nil: // the kubelet calls grpc.health.v1.Health/Check
				if _, _, ok := c.port(intOrString{Int: pr.GRPC.Port, IsInt: true}); !ok {
					t.Errorf("%s: %s gRPC port %d is not a declared container port", where, name, pr.GRPC.Port)
				}
			}
		}
	}
	for _, c := range ps.Containers {
		if c.LivenessProbe == nil || c.ReadinessProbe == nil {
			t.Errorf("%s container %s: needs liveness and readiness probes", o, c.Name)
		}
	}
}

// checkService: the selector picks at least one pod template and every
// targetPort is a port of those pods with the same protocol.
func checkService(t *testing.T, o *object, pods []pod) {
	t.Helper()
	var s service
	o.decode(t, &s)
	var matched []pod
	for _, p := range pods {
		ok := len(s.Spec.Selector) > 0
		for k, v := range s.Spec.Selector {
			if p.w.Spec.Template.Metadata.Labels[k] != v {
				ok = false
			}
		}
		if ok {
			matched = append(matched, p)
		}
	}
	if len(matched) == 0 {
		t.Errorf("%s: selector %v matches no pod template", o, s.Spec.Selector)
		return
	}
	for _, sp := range s.Spec.Ports {
		want := sp.Protocol
		if want == "" {
			want = "TCP"
		}
		target := sp.TargetPort
		if target.Str == "" && !target.IsInt {
			target = intOrString{Int: sp.Port, IsInt: true}
		}
		for _, p := range matched {
			found := false
			for _, c := range p.w.Spec.Template.Spec.Containers {
				if _, proto, ok := c.port(target); ok {
					found = true
					if proto != want {
						t.Errorf("%s: port %s is %s but %s's container port is %s", o, sp.Name, want, p.owner, proto)
					}
				}
			}
			if !found {
				t.Errorf("%s: targetPort %s is not a container port of %s", o, target, p.owner)
			}
		}
	}
}

// checkServiceRef: a Service named svc exists with the port (by name or number).
func checkServiceRef(t *testing.T, b *bundle, where, svc, portName string, portNum int) {
	t.Helper()
	o := b.find("Service", svc)
	if o == nil {
		t.Errorf("%s: Service %q not found", where, svc)
		return
	}
	var s service
	o.decode(t, &s)
	for _, p := range s.Spec.Ports {
		if (portName != "" && p.Name == portName) || (portName == "" && p.Port == portNum) {
			return
		}
	}
	t.Errorf("%s: Service %q has no port %q/%d", where, svc, portName, portNum)
}

// imageflowContainers are the containers that run the imageflow image.
func imageflowContainers(t *testing.T, b *bundle) []podContainer {
	var out []podContainer
	for _, p := range b.pods(t) {
		for _, c := range p.w.Spec.Template.Spec.Containers {
			if repo, _, _ := strings.Cut(c.Image, ":"); repo == imageflowImage {
				out = append(out, podContainer{pod: p, c: c})
			}
		}
	}
	return out
}

type podContainer struct {
	pod pod
	c   container
}

// flagInfo is one flag of a subcommand as its -h output lists it.
type flagInfo struct{ isBool bool }

var usageFlagRe = regexp.MustCompile(`^\s+-([A-Za-z0-9-]+)(?:\s+(\S+))?`)

// subcommandFlags runs `imageflow <sub...> -h` and parses the flags it lists.
func subcommandFlags(t *testing.T, bin string, sub []string) map[string]flagInfo {
	t.Helper()
	cmd := exec.Command(bin, append(append([]string{}, sub...), "-h")...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("imageflow %s -h: %v\n%s", strings.Join(sub, " "), err, out)
	}
	if !bytes.Contains(out, []byte("Usage of "+strings.Join(sub, " "))) {
		t.Fatalf("imageflow %s -h printed no usage:\n%s", strings.Join(sub, " "), out)
	}
	flags := map[string]flagInfo{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if m := usageFlagRe.FindStringSubmatch(sc.Text()); m != nil {
			flags[m[1]] = flagInfo{isBool: m[2] == ""}
		}
	}
	if len(flags) == 0 {
		t.Fatalf("imageflow %s -h lists no flags:\n%s", strings.Join(sub, " "), out)
	}
	return flags
}

// parsedArgs is a container's imageflow command line taken apart.
type parsedArgs struct {
	sub         []string
	flags       map[string]string
	positionals []string
}

// parseArgs splits args like Go's flag package does: flags until the first
// non-flag argument.
func parseArgs(t *testing.T, where string, args []string, known map[string]flagInfo, nsub int) parsedArgs {
	t.Helper()
	pa := parsedArgs{sub: args[:nsub], flags: map[string]string{}}
	rest := args[nsub:]
	for len(rest) > 0 {
		a := rest[0]
		if a == "--" {
			rest = rest[1:]
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			break
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		fi, ok := known[name]
		if !ok {
			t.Errorf("%s: imageflow %s has no flag -%s", where, strings.Join(pa.sub, " "), name)
		}
		rest = rest[1:]
		if !hasVal && !fi.isBool {
			if len(rest) == 0 {
				t.Errorf("%s: flag -%s needs a value", where, name)
				break
			}
			val, rest = rest[0], rest[1:]
		}
		pa.flags[name] = val
	}
	pa.positionals = rest
	return pa
}

// TestImageflowCommandLines runs the real binary's -h for every subcommand a
// container uses and checks flags, values and positionals; the processor
// container's exact command line is then started for real.
func TestImageflowCommandLines(t *testing.T) {
	b := loadKustomization(t, baseDir)
	bin := imageflowBinary(t)
	entry := dockerEntrypoint(t)
	pcs := imageflowContainers(t, b)
	subs := map[string]bool{}
	for _, pc := range pcs {
		c := pc.c
		where := fmt.Sprintf("%s container %s", pc.pod.owner, c.Name)
		if len(c.Command) > 0 && !reflect.DeepEqual(c.Command, entry) {
			t.Errorf("%s: command %q, but the image's ENTRYPOINT is %q", where, c.Command, entry)
		}
		if len(c.Args) == 0 {
			t.Errorf("%s: no args (the image would run its default CMD)", where)
			continue
		}
		nsub := 1
		if c.Args[0] == "processor" || c.Args[0] == "infer" {
			nsub = 2
		}
		if len(c.Args) < nsub {
			t.Errorf("%s: args %q name no subcommand", where, c.Args)
			continue
		}
		known := subcommandFlags(t, bin, c.Args[:nsub])
		pa := parseArgs(t, where, c.Args, known, nsub)
		subs[strings.Join(pa.sub, " ")] = true
		// Every listen address must be a declared container port.
		for name, v := range pa.flags {
			if _, port, err := net.SplitHostPort(v); err == nil {
				n, _ := strconv.Atoi(port)
				if _, _, ok := c.port(intOrString{Int: n, IsInt: true}); !ok {
					t.Errorf("%s: -%s %s: port %d is not a declared container port", where, name, v, n)
				}
			}
		}
		switch strings.Join(pa.sub, " ") {
		case "serve":
			if len(pa.positionals) != 0 {
				t.Errorf("%s: serve takes no arguments, got %q", where, pa.positionals)
			}
			if pa.flags["config"] == "" {
				t.Errorf("%s: serve without --config", where)
			}
		case "worker":
			if len(pa.positionals) != 0 || pa.flags["config"] == "" {
				t.Errorf("%s: worker wants --config and no arguments, got %q", where, c.Args)
			}
		case "processor serve":
			reg := processors.NewRegistry()
			builtin.Register(reg)
			if len(pa.positionals) != 1 {
				t.Errorf("%s: processor serve wants one processor name, got %q", where, pa.positionals)
			} else if _, ok := reg.Lookup(pa.positionals[0]); !ok {
				t.Errorf("%s: %q is not a built-in processor", where, pa.positionals[0])
			}
			runProcessorServe(t, bin, where, c.Args)
		case "infer serve":
			if len(pa.positionals) != 0 {
				t.Errorf("%s: infer serve takes no arguments, got %q", where, pa.positionals)
			}
			if m := pa.flags["models"]; m == "" || !mountedAt(c, m) {
				t.Errorf("%s: --models %q is not a mounted volume", where, m)
			}
		default:
			t.Errorf("%s: unexpected subcommand %q", where, pa.sub)
		}
	}
	for _, want := range []string{"serve", "worker", "processor serve", "infer serve"} {
		if !subs[want] {
			t.Errorf("no container runs imageflow %s", want)
		}
	}
}

func mountedAt(c container, p string) bool {
	for _, m := range c.VolumeMounts {
		if path.Clean(m.MountPath) == path.Clean(p) {
			return true
		}
	}
	return false
}

// runProcessorServe starts the container's exact command line with only the
// listen port moved to a free loopback port, and waits until it accepts
// connections: a wrong processor name or flag makes it exit instead.
func runProcessorServe(t *testing.T, bin, where string, args []string) {
	t.Helper()
	addr := freeAddr(t)
	run := append([]string{}, args...)
	for i := range run {
		if (run[i] == "--listen" || run[i] == "-listen") && i+1 < len(run) {
			run[i+1] = addr
		}
	}
	var out bytes.Buffer
	cmd := exec.Command(bin, run...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		<-exited
	}()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			exited <- err
			t.Errorf("%s: imageflow %s exited: %v\n%s", where, strings.Join(run, " "), err, out.String())
			return
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("%s: imageflow %s not listening after 20 s\n%s", where, strings.Join(run, " "), out.String())
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// serveContainer is the container running `imageflow serve`.
func serveContainer(t *testing.T, b *bundle) podContainer {
	t.Helper()
	for _, pc := range imageflowContainers(t, b) {
		if len(pc.c.Args) > 0 && pc.c.Args[0] == "serve" {
			return pc
		}
	}
	t.Fatal("no container runs imageflow serve")
	return podContainer{}
}

// configFile returns the content of the file serve's --config names, read
// from the ConfigMap volume mounted over it.
func configFile(t *testing.T, b *bundle, pc podContainer) (string, string) {
	t.Helper()
	var cfgPath string
	for i, a := range pc.c.Args {
		if (a == "--config" || a == "-config") && i+1 < len(pc.c.Args) {
			cfgPath = pc.c.Args[i+1]
		} else if v, ok := strings.CutPrefix(a, "--config="); ok {
			cfgPath = v
		}
	}
	if cfgPath == "" {
		t.Fatalf("%s: serve without --config", pc.pod.owner)
	}
	for _, v := range pc.pod.w.Spec.Template.Spec.Volumes {
		mp := pc.c.mountPath(v.Name)
		if v.ConfigMap == nil || mp == "" {
			continue
		}
		rel, err := filepath.Rel(mp, cfgPath)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		cm := b.find("ConfigMap", v.ConfigMap.Name)
		if cm == nil {
			t.Fatalf("ConfigMap %q not found", v.ConfigMap.Name)
		}
		content, ok := cm.value(rel)
		if !ok {
			t.Fatalf("--config %s: ConfigMap %q mounted at %s has no key %q (keys %v)", cfgPath, cm.Metadata.Name, mp, rel, keys(cm.Data))
		}
		return cfgPath, content
	}
	t.Fatalf("--config %s is not inside a mounted ConfigMap", cfgPath)
	return "", ""
}

// podEnv resolves a container's environment as the kubelet would; fieldRef
// values are those of a pod on a node at hostIP.
func podEnv(t *testing.T, b *bundle, c container, hostIP string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			if s := b.find("Secret", e.ValueFrom.SecretKeyRef.Name); s != nil {
				env[e.Name], _ = s.value(e.ValueFrom.SecretKeyRef.Key)
			}
		case e.ValueFrom.ConfigMapKeyRef != nil:
			if cm := b.find("ConfigMap", e.ValueFrom.ConfigMapKeyRef.Name); cm != nil {
				env[e.Name], _ = cm.value(e.ValueFrom.ConfigMapKeyRef.Key)
			}
		case e.ValueFrom.FieldRef != nil:
			switch e.ValueFrom.FieldRef.FieldPath {
			case "status.hostIP", "status.podIP":
				env[e.Name] = hostIP
			case "metadata.namespace":
				env[e.Name] = b.namespace
			case "metadata.name":
				// A StatefulSet's first pod.
				env[e.Name] = "imageflow-0"
			default:
				t.Errorf("env %s: fieldRef %s not simulated", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		}
	}
	return env
}

// configKeys are server.Config's YAML keys.
func configKeys() map[string]bool {
	out := map[string]bool{}
	rt := reflect.TypeOf(server.Config{})
	for i := 0; i < rt.NumField(); i++ {
		if k := strings.Split(rt.Field(i).Tag.Get("yaml"), ",")[0]; k != "" && k != "-" {
			out[k] = true
		}
	}
	return out
}

// loadPodConfig runs serve's configuration pipeline on the ConfigMap's file
// and the pod's environment, as the container would (no flags besides
// --config).
func loadPodConfig(t *testing.T, b *bundle, pc podContainer, hostIP string) server.Config {
	t.Helper()
	_, content := configFile(t, b, pc)
	tmp := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := server.Defaults()
	if err := cfg.LoadFile(tmp); err != nil {
		t.Fatalf("ConfigMap config: %v", err)
	}
	env := podEnv(t, b, pc.c, hostIP)
	if err := cfg.LoadEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatalf("pod environment: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("ConfigMap config + pod environment: %v", err)
	}
	return cfg
}

// TestServeConfig loads the ConfigMap's config file with the real loader and
// the pod's environment (secrets, node IP), validates it, and checks that
// its addresses are the container's ports and its endpoints real Services.
func TestServeConfig(t *testing.T) {
	b := loadKustomization(t, baseDir)
	pc := serveContainer(t, b)
	_, content := configFile(t, b, pc)

	// Secrets come from the Secret, never from the ConfigMap.
	var raw map[string]any
	if err := yaml.Unmarshal([]byte(content), &raw); err != nil {
		t.Fatal(err)
	}
	for k := range raw {
		if strings.Contains(k, "password") || strings.Contains(k, "secret") || strings.Contains(k, "token") || strings.HasSuffix(k, "_key") {
			t.Errorf("config.yaml sets %s: secrets belong in the Secret (IFC_%s)", k, strings.ToUpper(k))
		}
	}
	// IFC_* variables the loader would silently ignore are mistakes.
	ck := configKeys()
	for _, e := range pc.c.Env {
		if k, ok := strings.CutPrefix(e.Name, "IFC_"); ok && !ck[strings.ToLower(k)] {
			t.Errorf("env %s names no configuration key", e.Name)
		}
	}

	cfg := loadPodConfig(t, b, pc, "10.0.0.7")
	if len(cfg.APITokens) == 0 || cfg.NATSPassword == "" || cfg.S3SecretKey == "" {
		t.Errorf("secrets did not reach the config: tokens %d, nats password set %v, s3 secret set %v",
			len(cfg.APITokens), cfg.NATSPassword != "", cfg.S3SecretKey != "")
	}
	if len(cfg.WebRTCHosts) != 1 || cfg.WebRTCHosts[0] != "10.0.0.7" {
		t.Errorf("webrtc_hosts = %v, want the node IP from the environment", cfg.WebRTCHosts)
	}
	if cfg.HealthAuth {
		t.Error("health_auth is on: kubelet probes carry no token and would fail")
	}
	ann := pc.pod.w.Spec.Template.Metadata.Annotations
	if cfg.MetricsAuth && ann["prometheus.io/scrape"] == "true" {
		t.Error("metrics_auth is on but Prometheus scrapes without a token")
	}

	// Each address's port is the container port of that name and protocol.
	for _, a := range []struct{ key, value, port, proto string }{
		{"http", cfg.HTTPAddr, "http", "TCP"}, {"rtsp", cfg.RTSPAddr, "rtsp", "TCP"}, {"grpc", cfg.GRPCAddr, "grpc", "TCP"},
		{"webrtc_udp", cfg.WebRTCUDPAddr, "webrtc", "UDP"}, {"nats", cfg.NATSAddr, "nats", "TCP"},
	} {
		if a.value == "" {
			continue
		}
		_, ps, _ := net.SplitHostPort(a.value)
		n, _ := strconv.Atoi(ps)
		num, proto, ok := pc.c.port(intOrString{Str: a.port})
		if !ok || num != n || proto != a.proto {
			t.Errorf("config %s %q: container port %q is %d/%s", a.key, a.value, a.port, num, proto)
		}
	}
	if ann["prometheus.io/port"] != portOf(cfg.HTTPAddr) {
		t.Errorf("prometheus.io/port %q, but http listens on %q", ann["prometheus.io/port"], cfg.HTTPAddr)
	}
	// The data directory is on a persistent volume.
	onPVC := false
	for _, vct := range pc.pod.w.Spec.VolumeClaimTemplates {
		if mp := pc.c.mountPath(vct.Metadata.Name); mp != "" && path.Clean(mp) == path.Clean(cfg.DataDir) {
			onPVC = true
		}
	}
	if !onPVC {
		t.Errorf("data %q is not a persistent volume mount", cfg.DataDir)
	}
	// MinIO is reachable under s3_endpoint with the same credentials.
	if cfg.S3Endpoint != "" {
		host, port, _ := net.SplitHostPort(cfg.S3Endpoint)
		n, _ := strconv.Atoi(port)
		checkServiceRef(t, b, "config s3_endpoint", host, "", n)
		mc := minioContainer(t, b)
		menv := podEnv(t, b, mc.c, "10.0.0.7")
		if menv["MINIO_ROOT_USER"] != cfg.S3AccessKey || menv["MINIO_ROOT_PASSWORD"] != cfg.S3SecretKey {
			t.Error("imageflow's S3 keys differ from MinIO's root credentials")
		}
		// The init container waits on MinIO's own readiness path there.
		if mc.c.ReadinessProbe == nil || mc.c.ReadinessProbe.HTTPGet == nil {
			t.Fatal("MinIO has no HTTP readiness probe")
		}
		wait := "http://" + cfg.S3Endpoint + mc.c.ReadinessProbe.HTTPGet.Path
		found := false
		for _, ic := range pc.pod.w.Spec.Template.Spec.InitContainers {
			if strings.Contains(strings.Join(append(ic.Command, ic.Args...), " "), wait) {
				found = true
			}
		}
		if !found {
			t.Errorf("no init container of %s waits for %s", pc.pod.owner, wait)
		}
	}
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func minioContainer(t *testing.T, b *bundle) podContainer {
	t.Helper()
	for _, p := range b.pods(t) {
		for _, c := range p.w.Spec.Template.Spec.Containers {
			if strings.Contains(c.Image, "/minio/minio:") {
				return podContainer{pod: p, c: c}
			}
		}
	}
	t.Fatal("no MinIO container")
	return podContainer{}
}

// TestGrafanaProvisioning: the datasource points at the Prometheus Service,
// the dashboard provider reads the directory the dashboards ConfigMap is
// mounted at, and every dashboard JSON of k3s/grafana is in that ConfigMap.
func TestGrafanaProvisioning(t *testing.T) {
	b := loadKustomization(t, baseDir)
	var ds struct {
		Datasources []struct {
			Name, Type, URL, UID string
		} `yaml:"datasources"`
	}
	var prov struct {
		Providers []struct {
			Name    string `yaml:"name"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	var dashCM, dsCM, provCM *object
	var grafana *podContainer
	for _, p := range b.pods(t) {
		for _, c := range p.w.Spec.Template.Spec.Containers {
			if !strings.HasPrefix(c.Image, "grafana/grafana:") {
				continue
			}
			grafana = &podContainer{pod: p, c: c}
			for _, v := range p.w.Spec.Template.Spec.Volumes {
				if v.ConfigMap == nil {
					continue
				}
				cm := b.find("ConfigMap", v.ConfigMap.Name)
				switch c.mountPath(v.Name) {
				case "/etc/grafana/provisioning/datasources":
					dsCM = cm
				case "/etc/grafana/provisioning/dashboards":
					provCM = cm
				default:
					dashCM = cm
				}
			}
		}
	}
	if grafana == nil || dashCM == nil || dsCM == nil || provCM == nil {
		t.Fatalf("grafana container %v, dashboards %v, datasources %v, providers %v", grafana != nil, dashCM, dsCM, provCM)
	}
	for _, k := range keys(dsCM.Data) {
		if err := yaml.Unmarshal([]byte(dsCM.Data[k]), &ds); err != nil {
			t.Fatalf("datasources %s: %v", k, err)
		}
	}
	if len(ds.Datasources) == 0 {
		t.Fatal("no datasource provisioned")
	}
	for _, d := range ds.Datasources {
		host, port, err := net.SplitHostPort(strings.TrimPrefix(d.URL, "http://"))
		n, _ := strconv.Atoi(port)
		if d.Type != "prometheus" || err != nil {
			t.Errorf("datasource %s: type %s url %s", d.Name, d.Type, d.URL)
			continue
		}
		checkServiceRef(t, b, "grafana datasource", host, "", n)
	}
	for _, k := range keys(provCM.Data) {
		if err := yaml.Unmarshal([]byte(provCM.Data[k]), &prov); err != nil {
			t.Fatalf("dashboard providers %s: %v", k, err)
		}
	}
	dashPath := ""
	for _, v := range grafana.pod.w.Spec.Template.Spec.Volumes {
		if v.ConfigMap != nil && v.ConfigMap.Name == dashCM.Metadata.Name {
			dashPath = grafana.c.mountPath(v.Name)
		}
	}
	if len(prov.Providers) == 0 || path.Clean(prov.Providers[0].Options.Path) != path.Clean(dashPath) {
		t.Errorf("dashboard provider reads %v, dashboards are mounted at %q", prov.Providers, dashPath)
	}
	jsons, _ := filepath.Glob("grafana/*.json")
	if len(jsons) == 0 {
		t.Fatal("no dashboards in k3s/grafana")
	}
	for _, j := range jsons {
		if _, ok := dashCM.Data[filepath.Base(j)]; !ok {
			t.Errorf("%s is not in the %s ConfigMap", j, dashCM.Metadata.Name)
		}
	}
}

// TestKustomizeBuild renders base with kubectl's kustomize (when kubectl is
// installed) and checks it produces the objects this package's loader sees,
// with generated names substituted in the pods that mount them.
func TestKustomizeBuild(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not installed: kustomize rendering not checked")
	}
	out, err := exec.Command(kubectl, "kustomize", baseDir).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", baseDir, err, out)
	}
	dir := t.TempDir()
	rendered := filepath.Join(dir, "all.yaml")
	if err := os.WriteFile(rendered, out, 0o600); err != nil {
		t.Fatal(err)
	}
	got := parseManifests(t, rendered)
	b := loadKustomization(t, baseDir)
	var want, have []string
	hashed := map[string]string{} // generator name → rendered name
	for _, o := range b.objects {
		want = append(want, o.Kind+"/"+o.Metadata.Name+"@"+o.Metadata.Namespace)
	}
	for _, o := range got {
		name := o.Metadata.Name
		if _, gen := b.generated[trimHash(name)]; gen && (o.Kind == "ConfigMap" || o.Kind == "Secret") {
			hashed[trimHash(name)] = name
			name = trimHash(name)
		}
		have = append(have, o.Kind+"/"+name+"@"+o.Metadata.Namespace)
	}
	sort.Strings(want)
	sort.Strings(have)
	if !reflect.DeepEqual(want, have) {
		t.Errorf("kubectl kustomize renders\n%s\nthe loader sees\n%s", strings.Join(have, "\n"), strings.Join(want, "\n"))
	}
	for gen, name := range hashed {
		if name == gen {
			continue
		}
		if !bytes.Contains(out, []byte("name: "+name+"\n")) || bytes.Count(out, []byte(name)) < 2 {
			t.Errorf("generated %s is not referenced by its hashed name %s", gen, name)
		}
	}
	for _, o := range got {
		if o.Kind == "ConfigMap" || o.Kind == "Secret" {
			continue
		}
		var w workload
		if err := o.node.Decode(&w); err != nil {
			continue
		}
		for _, v := range w.Spec.Template.Spec.Volumes {
			if v.ConfigMap != nil && hashed[v.ConfigMap.Name] != "" && hashed[v.ConfigMap.Name] != v.ConfigMap.Name {
				t.Errorf("%s mounts ConfigMap %q without its generated hash", o, v.ConfigMap.Name)
			}
		}
	}
}

var hashSuffix = regexp.MustCompile(`-[a-z0-9]{10}$`)

func trimHash(name string) string { return hashSuffix.ReplaceAllString(name, "") }
