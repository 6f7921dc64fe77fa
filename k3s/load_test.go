package k3s

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// This file is a small kustomize: it loads a kustomization with its
// resources, generators, namespace and image overrides into typed objects the
// checks can cross-reference. kubectl's real kustomize (when installed) is
// compared with it in TestKustomizeBuild.

// repoRoot is the module root seen from this package's directory.
const repoRoot = ".."

// kustomization is the subset of kustomize's file these manifests use;
// unknown keys are an error so a misspelt field does not silently vanish.
type kustomization struct {
	APIVersion         string      `yaml:"apiVersion"`
	Kind               string      `yaml:"kind"`
	Namespace          string      `yaml:"namespace"`
	Resources          []string    `yaml:"resources"`
	ConfigMapGenerator []generator `yaml:"configMapGenerator"`
	SecretGenerator    []generator `yaml:"secretGenerator"`
	Images             []struct {
		Name    string `yaml:"name"`
		NewName string `yaml:"newName"`
		NewTag  string `yaml:"newTag"`
	} `yaml:"images"`
}

type generator struct {
	Name     string   `yaml:"name"`
	Files    []string `yaml:"files"`
	Literals []string `yaml:"literals"`
}

type meta struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// object is one manifest document; kind-specific parts are decoded lazily
// from node.
type object struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   meta   `yaml:"metadata"`
	// Data and StringData of ConfigMaps and Secrets (Secret data is base64).
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`

	file string
	node *yaml.Node
}

func (o *object) String() string { return fmt.Sprintf("%s/%s (%s)", o.Kind, o.Metadata.Name, o.file) }

// decode fills v from the whole document.
func (o *object) decode(t *testing.T, v any) {
	t.Helper()
	if err := o.node.Decode(v); err != nil {
		t.Fatalf("%s: %v", o, err)
	}
}

// value returns key's content of a ConfigMap or Secret.
func (o *object) value(key string) (string, bool) {
	if v, ok := o.StringData[key]; ok {
		return v, true
	}
	v, ok := o.Data[key]
	if ok && o.Kind == "Secret" {
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return "", false
		}
		return string(b), true
	}
	return v, ok
}

// intOrString is a Kubernetes port reference: a number or a port name.
type intOrString struct {
	Str   string
	Int   int
	IsInt bool
}

func (p *intOrString) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a port number or name", n.Line)
	}
	if i, err := strconv.Atoi(n.Value); err == nil && n.Tag != "!!str" {
		p.Int, p.IsInt = i, true
		return nil
	}
	p.Str = n.Value
	return nil
}

func (p intOrString) String() string {
	if p.IsInt {
		return strconv.Itoa(p.Int)
	}
	return p.Str
}

type workload struct {
	Spec struct {
		ServiceName string `yaml:"serviceName"`
		Replicas    *int   `yaml:"replicas"`
		Selector    struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata meta    `yaml:"metadata"`
			Spec     podSpec `yaml:"spec"`
		} `yaml:"template"`
		VolumeClaimTemplates []struct {
			Metadata meta `yaml:"metadata"`
		} `yaml:"volumeClaimTemplates"`
	} `yaml:"spec"`
}

type podSpec struct {
	ServiceAccountName string      `yaml:"serviceAccountName"`
	InitContainers     []container `yaml:"initContainers"`
	Containers         []container `yaml:"containers"`
	Volumes            []struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
		Secret *struct {
			SecretName string `yaml:"secretName"`
		} `yaml:"secret"`
		PersistentVolumeClaim *struct {
			ClaimName string `yaml:"claimName"`
		} `yaml:"persistentVolumeClaim"`
		EmptyDir *yaml.Node `yaml:"emptyDir"`
	} `yaml:"volumes"`
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Ports   []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
		Protocol      string `yaml:"protocol"`
	} `yaml:"ports"`
	Env []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef    *keyRef `yaml:"secretKeyRef"`
			ConfigMapKeyRef *keyRef `yaml:"configMapKeyRef"`
			FieldRef        *struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
	StartupProbe   *probe `yaml:"startupProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
}

type keyRef struct {
	Name string `yaml:"name"`
	Key  string `yaml:"key"`
}

type probe struct {
	HTTPGet *struct {
		Path string      `yaml:"path"`
		Port intOrString `yaml:"port"`
	} `yaml:"httpGet"`
	TCPSocket *struct {
		Port intOrString `yaml:"port"`
	} `yaml:"tcpSocket"`
	GRPC *struct {
		Port    int    `yaml:"port"`
		Service string `yaml:"service"`
	} `yaml:"grpc"`
}

func (c *container) probes() map[string]*probe {
	out := map[string]*probe{}
	for name, p := range map[string]*probe{"startupProbe": c.StartupProbe, "livenessProbe": c.LivenessProbe, "readinessProbe": c.ReadinessProbe} {
		if p != nil {
			out[name] = p
		}
	}
	return out
}

// port resolves a port reference against the container's declared ports.
func (c *container) port(ref intOrString) (num int, protocol string, ok bool) {
	for _, p := range c.Ports {
		if (ref.IsInt && p.ContainerPort == ref.Int) || (!ref.IsInt && p.Name == ref.Str) {
			proto := p.Protocol
			if proto == "" {
				proto = "TCP"
			}
			return p.ContainerPort, proto, true
		}
	}
	return 0, "", false
}

func (c *container) mountPath(volume string) string {
	for _, m := range c.VolumeMounts {
		if m.Name == volume {
			return m.MountPath
		}
	}
	return ""
}

type service struct {
	Spec struct {
		Type                  string            `yaml:"type"`
		ClusterIP             string            `yaml:"clusterIP"`
		ExternalTrafficPolicy string            `yaml:"externalTrafficPolicy"`
		Selector              map[string]string `yaml:"selector"`
		Ports                 []struct {
			Name       string      `yaml:"name"`
			Port       int         `yaml:"port"`
			TargetPort intOrString `yaml:"targetPort"`
			Protocol   string      `yaml:"protocol"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type ingress struct {
	Spec struct {
		Rules []struct {
			HTTP struct {
				Paths []struct {
					Path    string `yaml:"path"`
					Backend struct {
						Service struct {
							Name string `yaml:"name"`
							Port struct {
								Name   string `yaml:"name"`
								Number int    `yaml:"number"`
							} `yaml:"port"`
						} `yaml:"service"`
					} `yaml:"backend"`
				} `yaml:"paths"`
			} `yaml:"http"`
		} `yaml:"rules"`
	} `yaml:"spec"`
}

type roleBinding struct {
	RoleRef struct {
		Kind string `yaml:"kind"`
		Name string `yaml:"name"`
	} `yaml:"roleRef"`
	Subjects []struct {
		Kind      string `yaml:"kind"`
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"subjects"`
}

// bundle is a loaded kustomization.
type bundle struct {
	namespace string
	objects   []*object
	// generated maps a generator's name to the file each key came from.
	generated map[string]map[string]string
}

// clusterScoped kinds get no namespace.
var clusterScoped = map[string]bool{"Namespace": true, "ClusterRole": true, "ClusterRoleBinding": true,
	"PersistentVolume": true, "StorageClass": true, "CustomResourceDefinition": true}

// loadKustomization loads dir's kustomization.yaml and everything it
// reaches, applying namespace and images like kustomize does.
func loadKustomization(t *testing.T, dir string) *bundle {
	t.Helper()
	b := &bundle{generated: map[string]map[string]string{}}
	k := b.load(t, dir)
	b.namespace = k.Namespace
	return b
}

func (b *bundle) load(t *testing.T, dir string) *kustomization {
	t.Helper()
	path := filepath.Join(dir, "kustomization.yaml")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("kustomization: %v", err)
	}
	var k kustomization
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&k); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if k.Kind != "Kustomization" || !strings.HasPrefix(k.APIVersion, "kustomize.config.k8s.io/") {
		t.Errorf("%s: kind %q apiVersion %q, want a kustomize.config.k8s.io Kustomization", path, k.Kind, k.APIVersion)
	}
	first := len(b.objects)
	for _, r := range k.Resources {
		p := filepath.Join(dir, r)
		st, err := os.Stat(p)
		if err != nil {
			t.Errorf("%s: resource %q: %v", path, r, err)
			continue
		}
		if st.IsDir() {
			b.load(t, p)
			continue
		}
		b.objects = append(b.objects, parseManifests(t, p)...)
	}
	for _, g := range k.ConfigMapGenerator {
		b.objects = append(b.objects, b.generate(t, path, dir, "ConfigMap", g))
	}
	for _, g := range k.SecretGenerator {
		b.objects = append(b.objects, b.generate(t, path, dir, "Secret", g))
	}
	// Like kustomize, namespace and images apply to everything this
	// kustomization accumulated, including sub-kustomizations.
	for _, o := range b.objects[first:] {
		if k.Namespace != "" && !clusterScoped[o.Kind] {
			o.Metadata.Namespace = k.Namespace
		}
	}
	for _, img := range k.Images {
		for _, o := range b.objects[first:] {
			rewriteImages(o, img.Name, img.NewName, img.NewTag)
		}
	}
	return &k
}

func (b *bundle) generate(t *testing.T, kpath, dir, kind string, g generator) *object {
	t.Helper()
	o := &object{APIVersion: "v1", Kind: kind, Metadata: meta{Name: g.Name}, Data: map[string]string{}, file: kpath}
	files := map[string]string{}
	for _, f := range g.Files {
		key, rel, ok := strings.Cut(f, "=")
		if !ok {
			key, rel = filepath.Base(f), f
		}
		p := filepath.Join(dir, rel)
		content, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("%s: %s %q: %v", kpath, kind, g.Name, err)
			continue
		}
		o.Data[key] = string(content)
		files[key] = p
	}
	for _, l := range g.Literals {
		key, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Errorf("%s: literal %q: want key=value", kpath, l)
		}
		o.Data[key] = v
	}
	if kind == "Secret" {
		o.StringData, o.Data = o.Data, nil
	}
	b.generated[g.Name] = files
	// A node so that decode works on generated objects too.
	var n yaml.Node
	_ = n.Encode(map[string]any{"apiVersion": "v1", "kind": kind, "metadata": map[string]any{"name": g.Name}})
	o.node = &n
	return o
}

// rewriteImages applies one `images:` entry to every container of o.
func rewriteImages(o *object, name, newName, newTag string) {
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				if k.Value == "image" && v.Kind == yaml.ScalarNode {
					repo, tag, _ := strings.Cut(v.Value, ":")
					if repo == name {
						if newName != "" {
							repo = newName
						}
						if newTag != "" {
							tag = newTag
						}
						v.Value = repo + ":" + tag
					}
					continue
				}
				walk(v)
			}
			return
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(o.node)
}

// parseManifests reads every document of a multi-document YAML file.
func parseManifests(t *testing.T, path string) []*object {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var out []*object
	for i := 0; ; i++ {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Errorf("%s: document %d: %v", path, i, err)
			break
		}
		if len(n.Content) == 0 || n.Content[0].Kind == yaml.ScalarNode && n.Content[0].Tag == "!!null" {
			continue
		}
		o := &object{file: path, node: &n}
		if err := n.Decode(o); err != nil {
			t.Errorf("%s: document %d: %v", path, i, err)
			continue
		}
		if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
			t.Errorf("%s: document %d lacks apiVersion, kind or metadata.name", path, i)
			continue
		}
		out = append(out, o)
	}
	return out
}

func (b *bundle) find(kind, name string) *object {
	for _, o := range b.objects {
		if o.Kind == kind && o.Metadata.Name == name {
			return o
		}
	}
	return nil
}

func (b *bundle) ofKind(kinds ...string) []*object {
	var out []*object
	for _, o := range b.objects {
		for _, k := range kinds {
			if o.Kind == k {
				out = append(out, o)
			}
		}
	}
	return out
}

// pod is a workload's pod template with its owner.
type pod struct {
	owner *object
	w     workload
}

func (b *bundle) pods(t *testing.T) []pod {
	t.Helper()
	var out []pod
	for _, o := range b.ofKind("Deployment", "StatefulSet", "DaemonSet") {
		var w workload
		o.decode(t, &w)
		out = append(out, pod{owner: o, w: w})
	}
	return out
}

// keys returns m's keys sorted, for messages.
func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// containerKeys are the fields of a Kubernetes container (core/v1); a
// misspelt probe or env key would otherwise be ignored by the typed decode.
var containerKeys = map[string]bool{"name": true, "image": true, "command": true, "args": true, "workingDir": true,
	"ports": true, "envFrom": true, "env": true, "resources": true, "resizePolicy": true, "restartPolicy": true,
	"volumeMounts": true, "volumeDevices": true, "livenessProbe": true, "readinessProbe": true, "startupProbe": true,
	"lifecycle": true, "terminationMessagePath": true, "terminationMessagePolicy": true, "imagePullPolicy": true,
	"securityContext": true, "stdin": true, "stdinOnce": true, "tty": true}

var probeKeys = map[string]bool{"exec": true, "httpGet": true, "tcpSocket": true, "grpc": true, "initialDelaySeconds": true,
	"timeoutSeconds": true, "periodSeconds": true, "successThreshold": true, "failureThreshold": true,
	"terminationGracePeriodSeconds": true}

var podSpecKeys = map[string]bool{"volumes": true, "initContainers": true, "containers": true, "ephemeralContainers": true,
	"restartPolicy": true, "terminationGracePeriodSeconds": true, "activeDeadlineSeconds": true, "dnsPolicy": true,
	"nodeSelector": true, "serviceAccountName": true, "serviceAccount": true, "automountServiceAccountToken": true,
	"nodeName": true, "hostNetwork": true, "hostPID": true, "hostIPC": true, "shareProcessNamespace": true,
	"securityContext": true, "imagePullSecrets": true, "hostname": true, "subdomain": true, "affinity": true,
	"schedulerName": true, "tolerations": true, "hostAliases": true, "priorityClassName": true, "priority": true,
	"dnsConfig": true, "readinessGates": true, "runtimeClassName": true, "enableServiceLinks": true,
	"preemptionPolicy": true, "overhead": true, "topologySpreadConstraints": true, "setHostnameAsFQDN": true,
	"os": true, "hostUsers": true, "schedulingGates": true, "resourceClaims": true, "resources": true}

// checkFieldNames walks a document and reports keys unknown to the pod
// spec, container and probe schemas.
func checkFieldNames(t *testing.T, o *object) {
	t.Helper()
	var walk func(n *yaml.Node, parent string)
	walk = func(n *yaml.Node, parent string) {
		switch n.Kind {
		case yaml.DocumentNode, yaml.SequenceNode:
			for _, c := range n.Content {
				walk(c, parent)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i].Value, n.Content[i+1]
				var allowed map[string]bool
				switch parent {
				case "containers", "initContainers":
					allowed = containerKeys
				case "livenessProbe", "readinessProbe", "startupProbe":
					allowed = probeKeys
				case "podSpec":
					allowed = podSpecKeys
				}
				if allowed != nil && !allowed[k] {
					t.Errorf("%s: line %d: unknown field %q in %s", o, n.Content[i].Line, k, parent)
				}
				next := k
				if parent == "template" && k == "spec" {
					next = "podSpec"
				}
				walk(v, next)
			}
		}
	}
	walk(o.node, "")
}
