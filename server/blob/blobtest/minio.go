// Package blobtest starts a real MinIO server for tests.
package blobtest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/imageflowcanvas/imageflow/server/blob"
)

// MinIOBinary finds the minio server binary: $MINIO_BIN, $GOPATH/bin/minio
// (scripts/setup-test.sh installs it there), or PATH.
func MinIOBinary() string {
	if p := os.Getenv("MINIO_BIN"); p != "" {
		return p
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if home, err := os.UserHomeDir(); err == nil {
			gopath = filepath.Join(home, "go")
		}
	}
	if p := filepath.Join(gopath, "bin", "minio"); fileExists(p) {
		return p
	}
	if p, err := exec.LookPath("minio"); err == nil {
		return p
	}
	return ""
}

func fileExists(p string) bool { st, err := os.Stat(p); return err == nil && !st.IsDir() }

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// StartMinIO runs `minio server` on random loopback ports with a temporary
// data directory until the test ends, and returns a configuration for a
// bucket that does not exist yet. The test is skipped only when the binary
// is absent.
func StartMinIO(t testing.TB) blob.MinIOConfig {
	t.Helper()
	bin := MinIOBinary()
	if bin == "" {
		t.Skip("minio binary not found (run scripts/setup-test.sh, or set MINIO_BIN): skipping the MinIO test")
	}
	var addr string
	var cmd *exec.Cmd
	const user, pass = "imageflow-test", "imageflow-test-secret"
	for attempt := 0; attempt < 3; attempt++ {
		addr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
		console := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		cmd = exec.Command(bin, "server", t.TempDir(), "--address", addr, "--console-address", console, "--quiet")
		cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+user, "MINIO_ROOT_PASSWORD="+pass, "MINIO_BROWSER=off", "MINIO_UPDATE=off")
		if err := cmd.Start(); err != nil {
			t.Fatalf("start minio: %v", err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		if waitReady(addr, done, 30*time.Second) {
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				<-done
			})
			return blob.MinIOConfig{Endpoint: addr, Bucket: "imageflow-test", AccessKey: user, SecretKey: pass, Region: "us-east-1"}
		}
		_ = cmd.Process.Kill()
		<-done
	}
	t.Fatalf("minio did not become ready on %s", addr)
	return blob.MinIOConfig{}
}

func waitReady(addr string, exited <-chan struct{}, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/minio/health/ready", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		select {
		case <-exited:
			return false
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}
