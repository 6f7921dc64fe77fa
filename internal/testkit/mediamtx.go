package testkit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// MediaMTX is a running mediamtx (github.com/bluenviron/mediamtx), the most
// deployed RTSP/WebRTC server, as the other side of interop tests; every
// address is on loopback.
type MediaMTX struct {
	// RTSP is host:port of its RTSP server (TCP only).
	RTSP string
	// HTTP is host:port of its WebRTC HTTP server: WHEP at
	// http://HTTP/<path>/whep, WHIP at http://HTTP/<path>/whip.
	HTTP string
	// Log is its output so far.
	Log func() string
}

// mediamtxPeer is the source snapshot's folder relative to the repository
// root: CI checks out shared/ beside the clone.
var mediamtxPeer = filepath.Join("..", "shared", "peers", "mediamtx")

// MediaMTXBinary builds mediamtx from the source snapshot in
// ../shared/peers/mediamtx (beside the repository's clone) once per snapshot
// and returns the cached binary's path. Without the snapshot or a working
// build the test is skipped on a developer machine and fails in CI.
func MediaMTXBinary(t testing.TB) string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	peer := filepath.Join(root, mediamtxPeer)
	tarballs, _ := filepath.Glob(filepath.Join(peer, "mediamtx-*.tar.gz"))
	script := filepath.Join(peer, "build.sh")
	if len(tarballs) != 1 {
		Need(t, fmt.Sprintf("mediamtx source snapshot not found in %s", peer))
	}
	key, err := hashFiles(tarballs[0], script)
	if err != nil {
		Need(t, fmt.Sprintf("mediamtx snapshot unreadable: %v", err))
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "imageflow-test", "mediamtx-"+key)
	bin := filepath.Join(dir, "mediamtx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Test binaries of several packages may run at once: one builds.
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	t.Logf("building mediamtx into %s (once per snapshot)", dir)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	tmp := bin + ".tmp"
	out, err := exec.CommandContext(ctx, "bash", script, tmp).CombinedOutput()
	if err != nil {
		Need(t, fmt.Sprintf("building mediamtx failed: %v: %s", err, tail(out, 2000)))
	}
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// MediaMTXConfig is a mediamtx.yml for loopback use: RTSP over TCP on rtsp,
// WebRTC (WHEP/WHIP) on web with its media on the UDP address udp, every
// other protocol and API off. paths is the body of its `paths:` section,
// indented by two spaces; every other path accepts publishers.
func MediaMTXConfig(logLevel, rtsp, web, udp, paths string) string {
	return fmt.Sprintf(`logLevel: %s
rtspAddress: %s
rtspTransports: [tcp]
webrtcAddress: %s
webrtcLocalUDPAddress: %s
webrtcLocalTCPAddress: ""
webrtcIPsFromInterfaces: false
webrtcAdditionalHosts: [127.0.0.1]
rtmp: no
hls: no
srt: no
moq: no
api: no
metrics: no
pprof: no
playback: no
paths:
%s  all_others:
`, logLevel, rtsp, web, udp, paths)
}

// StartMediaMTX runs mediamtx on free loopback ports until the test ends.
// paths is the body of its `paths:` section, indented by two spaces (e.g.
// "  cam:\n    source: rtsp://127.0.0.1:8554/cam\n"); every other path accepts
// publishers.
func StartMediaMTX(t testing.TB, paths string) *MediaMTX {
	t.Helper()
	bin := MediaMTXBinary(t)
	m := &MediaMTX{RTSP: FreeAddr(t, "tcp"), HTTP: FreeAddr(t, "tcp")}
	udp := FreeAddr(t, "udp")
	conf := MediaMTXConfig("debug", m.RTSP, m.HTTP, udp, paths)
	// It writes files into its working directory: give it its own.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "mediamtx.yml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startIn(t, dir, bin, "mediamtx.yml")
	m.Log = p.Output
	WaitFor(t, 20*time.Second, "mediamtx to listen", func() bool {
		if p.Exited() {
			t.Fatalf("mediamtx exited: %s", p.Output())
		}
		return dialable(m.RTSP) && dialable(m.HTTP)
	})
	return m
}

// FreeAddr returns a loopback host:port that was free a moment ago, for
// peers that cannot be told to pick their own port.
func FreeAddr(t testing.TB, network string) string {
	t.Helper()
	switch network {
	case "udp":
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().String()
	default:
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}
}

func dialable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

// repoRoot is the folder of the module's go.mod, found upward from the
// test's working directory (its package folder).
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/imageflowcanvas/imageflow\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("testkit: no go.mod of github.com/imageflowcanvas/imageflow above the working directory")
		}
		dir = parent
	}
}

func hashFiles(paths ...string) (string, error) {
	h := sha256.New()
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return "", err
		}
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

// LockedBuffer collects a process's output while tests read it.
type LockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Process is a peer program running until the test ends.
type Process struct {
	cmd    *exec.Cmd
	out    LockedBuffer
	exited chan struct{}
}

// StartProcess runs a program (ffmpeg publishing, say) in the background;
// it is stopped when the test ends, and its output is logged if the test
// failed.
func StartProcess(t testing.TB, name string, args ...string) *Process {
	t.Helper()
	NeedCommand(t, name)
	return startIn(t, t.TempDir(), name, args...)
}

func startIn(t testing.TB, dir, name string, args ...string) *Process {
	t.Helper()
	p := &Process{cmd: exec.Command(name, args...), exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	p.cmd.Dir = dir
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(name), tail([]byte(p.out.String()), 20000))
		}
	})
	return p
}

// Output is what the program wrote so far.
func (p *Process) Output() string { return p.out.String() }

// Exited reports whether the program ended.
func (p *Process) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// Stop ends the program (SIGTERM, then SIGKILL after 10 s) and waits for
// it; a second call does nothing.
func (p *Process) Stop() {
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}
