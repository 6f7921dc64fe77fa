package bus

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// SourcedSeqs reads a hub's copy of a leaf stream and counts how often each
// of the leaf's sequences is there (from the Nats-Stream-Source header
// JetStream puts on every sourced message).
func sourcedSeqs(ctx context.Context, t *testing.T, js jetstream.JetStream, stream string) map[uint64]int {
	t.Helper()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64]int{}
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("%s seq %d: %v", stream, seq, err)
		}
		f := strings.Fields(m.Header.Get("Nats-Stream-Source"))
		if len(f) < 2 {
			t.Fatalf("%s seq %d without a source header: %v", stream, seq, m.Header)
		}
		n, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			t.Fatalf("source header %q", m.Header.Get("Nats-Stream-Source"))
		}
		out[n]++
	}
	return out
}

// TestLeafBuffersWhileHubIsDown: a leaf's progress reaches its hub by
// sourcing, not by the uplink's plain subjects (the hub's own PROGRESS stays
// empty); while the hub is down the leaf keeps working; after the hub
// returns every message is on the hub once. The binary acceptance test
// (cmd/imageflow TestLeafNodeSurvivesUplinkLoss) does this with a camera
// and a batch for 30 s.
func TestLeafBuffersWhileHubIsDown(t *testing.T) {
	ports := freePorts(t, 1)
	hubCfg := Config{DataDir: t.TempDir(), Cluster: ClusterConfig{Node: "hub"}, Leaf: LeafConfig{
		Listen: fmt.Sprintf("127.0.0.1:%d", ports[0]), User: "leaf", Password: "leaf-secret", Sources: []string{"edge1"}}}
	hub := start(t, hubCfg)
	leafCfg := Config{DataDir: t.TempDir(), Cluster: ClusterConfig{Node: "edge1"}, Leaf: LeafConfig{
		Remotes: []string{fmt.Sprintf("nats-leaf://127.0.0.1:%d", ports[0])}, User: "leaf", Password: "leaf-secret"}}
	leaf := start(t, leafCfg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	waitFor(t, 20*time.Second, "leaf connected", func() bool { return leaf.LeafConnections() == 1 && hub.LeafConnections() == 1 })

	publish := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if _, err := leaf.JetStream().Publish(ctx, leaf.Subjects().Progress("x1"), []byte(strconv.Itoa(i))); err != nil {
				t.Fatalf("publish %d on the leaf: %v", i, err)
			}
		}
	}
	publish(0, 50)
	// The hub's own PROGRESS stream must not see the leaf's messages, and
	// the hub's batch jobs must not land on the leaf.
	if _, err := hub.JetStream().Publish(ctx, hub.Subjects().Jobs("hubjob"), []byte("job")); err != nil {
		t.Fatal(err)
	}
	hubJS := hub.JetStream()
	copied := func(js jetstream.JetStream, n int) func() bool {
		return func() bool {
			st, err := js.Stream(ctx, LeafStreamName("PROGRESS", "edge1"))
			return err == nil && st.CachedInfo().State.Msgs >= uint64(n)
		}
	}
	waitFor(t, 60*time.Second, "50 messages copied", copied(hubJS, 50), func() string { return copyState(ctx, hubJS, leaf.JetStream()) })

	// Hub down: the leaf keeps storing.
	hub.Close()
	down := time.Now()
	waitFor(t, 10*time.Second, "uplink down", func() bool { return leaf.LeafConnections() == 0 })
	publish(50, 120)
	hub = start(t, hubCfg)
	back := time.Now()
	hubJS = hub.JetStream()
	waitFor(t, 90*time.Second, "120 messages copied after the outage", copied(hubJS, 120), func() string {
		return copyState(ctx, hubJS, leaf.JetStream())
	})
	t.Logf("hub back after %.1fs down; all 120 copied %.1fs after it returned", back.Sub(down).Seconds(), time.Since(back).Seconds())

	// The edge restarts (a reboot in the field): its streams and the
	// sequences the hub resumes from go on where they were.
	leaf.Close()
	leaf = start(t, leafCfg)
	restarted := time.Now()
	publish(120, 150)
	if _, err := leaf.JetStream().Publish(ctx, leaf.Subjects().Results("cam"), []byte("r")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, "150 messages copied after the edge's restart", copied(hubJS, 150), func() string { return copyState(ctx, hubJS, leaf.JetStream()) })
	t.Logf("edge restarted; 30 more copied %.1fs later", time.Since(restarted).Seconds())

	seqs := sourcedSeqs(ctx, t, hubJS, LeafStreamName("PROGRESS", "edge1"))
	for seq := uint64(1); seq <= 150; seq++ {
		if seqs[seq] != 1 {
			t.Fatalf("leaf sequence %d is on the hub %d times", seq, seqs[seq])
		}
	}
	if len(seqs) != 150 {
		t.Fatalf("hub copy holds %d sequences, want 150", len(seqs))
	}
	for _, s := range []struct {
		b    *Bus
		name string
		want uint64
	}{{hub, "PROGRESS", 0}, {hub, "JOBS", 1}, {leaf, "JOBS", 0}, {leaf, "PROGRESS", 150}, {leaf, "RESULTS", 1}} {
		st, err := s.b.JetStream().Stream(ctx, s.name)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.CachedInfo().State.Msgs; got != s.want {
			t.Errorf("%s %s holds %d messages, want %d", s.b.ServerName(), s.name, got, s.want)
		}
	}
	// The leaf's buckets are its own: the domains keep $KV apart.
	if _, err := leaf.KV(BucketCameras).Put(ctx, "edgecam", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if _, err := hub.KV(BucketCameras).Get(ctx, "edgecam"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("the leaf's camera is in the hub's bucket: %v", err)
	}
}

// TestLeafWrongPasswordRefused: a leaf with the wrong password never
// connects, and its hub logs the refusal.
func TestLeafWrongPasswordRefused(t *testing.T) {
	ports := freePorts(t, 1)
	logs := &lockedLog{}
	hub := start(t, Config{DataDir: t.TempDir(), Logger: logs.logger(), Cluster: ClusterConfig{Node: "hub"}, Leaf: LeafConfig{
		Listen: fmt.Sprintf("127.0.0.1:%d", ports[0]), User: "leaf", Password: "right-secret"}})
	leaf := start(t, Config{DataDir: t.TempDir(), Cluster: ClusterConfig{Node: "edge1"}, Leaf: LeafConfig{
		Remotes: []string{fmt.Sprintf("nats-leaf://127.0.0.1:%d", ports[0])}, User: "leaf", Password: "wrong-secret"}})
	waitFor(t, 20*time.Second, "the hub logs the refused leaf", func() bool { return strings.Contains(strings.ToLower(logs.String()), "authentication error") })
	if hub.LeafConnections() != 0 || leaf.LeafConnections() != 0 {
		t.Fatalf("leaf with a wrong password connected: hub %d leaf %d", hub.LeafConnections(), leaf.LeafConnections())
	}
}

func TestLeafConfigErrors(t *testing.T) {
	ca := newTestCA(t, "ca")
	for _, c := range []LeafConfig{
		{Listen: "nonsense"},
		{Remotes: []string{"::"}},
		{Sources: []string{"a.b"}},
		{Listen: "127.0.0.1:0", TLS: TLSFiles{Cert: ca.certFile}},
	} {
		err := (&Bus{Config: Config{DataDir: t.TempDir(), Cluster: ClusterConfig{Node: "n"}, Leaf: c}}).Start(context.Background())
		if !errors.Is(err, ErrLeaf) {
			t.Errorf("%+v: %v", c, err)
		}
	}
	// A worker (no store) cannot be a leaf: it would have neither jobs nor
	// JetStream across the link.
	worker := &Bus{Config: Config{DataDir: t.TempDir(), NoStore: true, Cluster: ClusterConfig{Node: "w"}, Leaf: LeafConfig{Remotes: []string{"nats-leaf://127.0.0.1:7422"}}}}
	if err := worker.Start(context.Background()); !errors.Is(err, ErrLeaf) {
		worker.Close()
		t.Errorf("worker as a leaf: %v", err)
	}
}

// TestClusterOverTLS: two nodes whose certificates come from the cluster's
// CA form a cluster over TLS routes; a third whose certificate another CA
// signed is refused (its TLS handshake fails both ways) and finds no
// JetStream leader.
func TestClusterOverTLS(t *testing.T) {
	ca := newTestCA(t, "site-ca")
	cfgs := clusterConfigs(t, 2, "route-secret")
	for i := range cfgs {
		cfgs[i].Cluster.Replicas = 1
		cfgs[i].Cluster.TLS = ca.issue(t, cfgs[i].Cluster.Node)
	}
	// The intruder knows the routes and the password; only its
	// certificate comes from another CA.
	intruder := cfgs[1]
	intruder.DataDir = t.TempDir()
	intruder.Cluster.Node = "n3"
	intruder.Cluster.Listen = fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0])
	intruder.Cluster.Routes = append(append([]string(nil), cfgs[1].Cluster.Routes...), "nats-route://"+intruder.Cluster.Listen)
	other := newTestCA(t, "other-ca")
	intruder.Cluster.TLS = other.issue(t, "n3")
	intruder.Cluster.TLS.CA = ca.certFile // it trusts the site, the site does not trust it
	intruder.Cluster.FormTimeout = 5 * time.Second
	siteLog := &lockedLog{}
	for i := range cfgs {
		cfgs[i].Logger = siteLog.logger()
	}
	buses := startCluster(t, cfgs)
	for _, b := range buses {
		if b.MetaLeader() == "" || b.Routes() < 1 {
			t.Fatalf("%s: leader %q routes %d", b.ServerName(), b.MetaLeader(), b.Routes())
		}
		// The route port speaks TLS and wants the site's certificates.
		tlsCfg, err := cfgs[0].Cluster.TLS.config()
		if err != nil {
			t.Fatal(err)
		}
		tlsCfg.ServerName = "127.0.0.1"
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", b.ClusterAddr(), tlsCfg)
		if err != nil {
			t.Fatalf("%s: TLS handshake with the route port: %v", b.ServerName(), err)
		}
		conn.Close()
	}
	logs := &lockedLog{}
	intruder.Logger = logs.logger()
	bad := &Bus{Config: intruder}
	err := bad.Start(context.Background())
	bad.Close()
	// A node that joined would learn the leader the two elected: it must not.
	if !errors.Is(err, ErrNoMetaLeader) {
		t.Fatalf("node with a certificate from another CA: %v", err)
	}
	for _, b := range buses {
		for name := range b.RoutedNodes() {
			if name == "n3" {
				t.Fatalf("%s has a route to the intruder", b.ServerName())
			}
		}
	}
	if !strings.Contains(siteLog.String(), "TLS route handshake error") {
		t.Fatalf("the site did not log the refused route; intruder log:\n%s", logs.String())
	}
}

// TestLeafOverTLS: a leaf with a certificate from the hub's CA connects
// over TLS; one whose certificate another CA signed is refused.
func TestLeafOverTLS(t *testing.T) {
	ca, other := newTestCA(t, "site-ca"), newTestCA(t, "other-ca")
	addr := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0])
	hubLog := &lockedLog{}
	hub := start(t, Config{DataDir: t.TempDir(), Logger: hubLog.logger(), Cluster: ClusterConfig{Node: "hub"}, Leaf: LeafConfig{
		Listen: addr, User: "leaf", Password: "leaf-secret", TLS: ca.issue(t, "hub")}})
	leafCfg := func(node string, files TLSFiles) Config {
		return Config{DataDir: t.TempDir(), Cluster: ClusterConfig{Node: node}, Leaf: LeafConfig{
			Remotes: []string{"tls://" + addr}, User: "leaf", Password: "leaf-secret", TLS: files}}
	}
	intruderFiles := other.issue(t, "intruder")
	intruderFiles.CA = ca.certFile
	intruder := start(t, leafCfg("intruder", intruderFiles))
	waitFor(t, 20*time.Second, "the hub logs the refused TLS handshake", func() bool {
		return strings.Contains(hubLog.String(), "TLS leafnode handshake error") || strings.Contains(hubLog.String(), "handshake error")
	})
	if intruder.LeafConnections() != 0 {
		t.Fatal("a leaf with a certificate from another CA connected")
	}
	leaf := start(t, leafCfg("edge1", ca.issue(t, "edge1")))
	waitFor(t, 20*time.Second, "leaf connected over TLS", func() bool { return leaf.LeafConnections() == 1 })
	lz, err := hub.ns.Leafz(nil)
	if err != nil || len(lz.Leafs) != 1 || lz.Leafs[0].Name != "edge1" {
		t.Fatalf("hub's leaves: %+v %v", lz, err)
	}
}

// testCA is a throwaway certificate authority for TLS tests.
type testCA struct {
	dir, certFile string
	cert          *x509.Certificate
	key           *ecdsa.PrivateKey
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{dir: t.TempDir(), cert: cert, key: key}
	ca.certFile = filepath.Join(ca.dir, "ca.pem")
	writePEM(t, ca.certFile, "CERTIFICATE", der)
	return ca
}

// issue signs a certificate for a node on loopback, usable as server and
// as client (routes and leaf links dial and accept).
func (ca *testCA) issue(t *testing.T, node string) TLSFiles {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: node},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	f := TLSFiles{Cert: filepath.Join(ca.dir, node+".pem"), Key: filepath.Join(ca.dir, node+"-key.pem"), CA: ca.certFile}
	writePEM(t, f.Cert, "CERTIFICATE", der)
	writePEM(t, f.Key, "EC PRIVATE KEY", keyDER)
	return f
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// copyState describes a hub's PROGRESS copy and the edge consumer it reads
// through, for a failure message.
func copyState(ctx context.Context, hubJS, leafJS jetstream.JetStream) string {
	var out []string
	if st, err := hubJS.Stream(ctx, LeafStreamName("PROGRESS", "edge1")); err == nil {
		i := st.CachedInfo()
		out = append(out, fmt.Sprintf("hub copy: %d msgs, last %d", i.State.Msgs, i.State.LastSeq))
		for _, src := range i.Sources {
			out = append(out, fmt.Sprintf("source %s lag %d active %s error %v", src.Name, src.Lag, src.Active, src.Error))
		}
	}
	if st, err := leafJS.Stream(ctx, "PROGRESS"); err == nil {
		i := st.CachedInfo()
		out = append(out, fmt.Sprintf("edge PROGRESS: %d msgs, last %d, %d consumers", i.State.Msgs, i.State.LastSeq, i.State.Consumers))
	}
	return strings.Join(out, "; ")
}

func waitFor(t *testing.T, within time.Duration, what string, ok func() bool, state ...func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			for _, f := range state {
				what += " (" + f() + ")"
			}
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lockedLog collects a bus's log lines for assertions.
type lockedLog struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *lockedLog) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// TestLeafUpgradesDataDir: a box's existing data directory becomes a leaf's
// (RESULTS and METRICS move to disk) and back, keeping its other streams.
func TestLeafUpgradesDataDir(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	plain := start(t, Config{DataDir: dir})
	if _, err := plain.JetStream().Publish(ctx, plain.Subjects().Progress("x"), []byte("kept")); err != nil {
		t.Fatal(err)
	}
	plain.Close()
	storage := func(b *Bus, name string) jetstream.StorageType {
		st, err := b.JetStream().Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().Config.Storage
	}
	hubAddr := fmt.Sprintf("nats-leaf://127.0.0.1:%d", freePorts(t, 1)[0]) // no hub: the leaf works alone
	leaf := start(t, Config{DataDir: dir, Cluster: ClusterConfig{Node: "edge1"}, Leaf: LeafConfig{Remotes: []string{hubAddr}}})
	if storage(leaf, "RESULTS") != jetstream.FileStorage || storage(leaf, "METRICS") != jetstream.FileStorage {
		t.Fatal("a leaf's RESULTS and METRICS are not on disk")
	}
	if n := streamMsgsOf(t, leaf, "PROGRESS"); n != 1 {
		t.Fatalf("PROGRESS after becoming a leaf: %d messages", n)
	}
	leaf.Close()
	again := start(t, Config{DataDir: dir})
	if storage(again, "RESULTS") != jetstream.MemoryStorage {
		t.Fatal("RESULTS stayed on disk after the box stopped being a leaf")
	}
}

func streamMsgsOf(t *testing.T, b *Bus, name string) uint64 {
	t.Helper()
	st, err := b.JetStream().Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().State.Msgs
}
