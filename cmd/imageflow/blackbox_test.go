package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binary returns the imageflow binary: $IFC_BIN when set (scripts/test.sh
// builds it), else one built once for this test run.
func binary(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("IFC_BIN"); b != "" {
		if _, err := os.Stat(b); err == nil {
			return b
		}
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "imageflow-test-bin")
		if err != nil {
			buildErr = err
			return
		}
		builtBinary = filepath.Join(dir, "imageflow")
		cmd := exec.Command("go", "build", "-o", builtBinary, ".")
		cmd.Stderr = os.Stderr
		buildErr = cmd.Run()
	})
	if buildErr != nil {
		t.Fatalf("build: %v", buildErr)
	}
	return builtBinary
}

var (
	buildOnce   sync.Once
	builtBinary string
	buildErr    error
)

// listenInfo mirrors server.Listen without importing it: the test reads the
// file as a script would.
type listenInfo struct {
	HTTP string `json:"http"`
	GRPC string `json:"grpc"`
	RTSP string `json:"rtsp"`
	PID  int    `json:"pid"`
}

// startBinary runs `imageflow serve` on random ports and waits for readiness
// through listen.json and /api/v1/ready.
func startBinary(t *testing.T, dataDir string, extra ...string) (*exec.Cmd, listenInfo, *strings.Builder) {
	t.Helper()
	args := append([]string{"serve", "--data", dataDir, "--http", "127.0.0.1:0", "--rtsp", "127.0.0.1:0", "--rtsp-udp", "127.0.0.1:0",
		"--grpc", "127.0.0.1:0", "--webrtc-udp", "127.0.0.1:0", "--demo=false"}, extra...)
	cmd := exec.Command(binary(t), args...)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var li listenInfo
		if b, err := os.ReadFile(filepath.Join(dataDir, "listen.json")); err == nil && json.Unmarshal(b, &li) == nil && li.PID == cmd.Process.Pid {
			if resp, err := http.Get("http://" + li.HTTP + "/api/v1/ready"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					return cmd, li, &logs
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("server not ready within 30s; logs:\n%s", logs.String())
	return nil, listenInfo{}, nil
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestPrometheusScrapes runs the binary and a real Prometheus that scrapes
// it, then asks Prometheus whether the target is up and the bus counters
// arrived.
func TestPrometheusScrapes(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus not installed (scripts/setup-test.sh installs it)")
	}
	_, li, _ := startBinary(t, t.TempDir())

	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
scrape_configs:
  - job_name: imageflow
    static_configs:
      - targets: ['%s']
`, li.HTTP)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	promAddr := freePort(t)
	prom := exec.Command(promBin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "tsdb"), "--web.listen-address="+promAddr)
	var promLog strings.Builder
	prom.Stdout, prom.Stderr = &promLog, &promLog
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = prom.Process.Signal(syscall.SIGTERM); _ = prom.Wait() }()

	query := func(q string) (string, error) {
		resp, err := http.Get("http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var r struct {
			Status string
			Data   struct {
				Result []struct {
					Value []any
				}
			}
		}
		if err := json.Unmarshal(b, &r); err != nil || r.Status != "success" || len(r.Data.Result) == 0 {
			return "", fmt.Errorf("no result for %s: %s", q, b)
		}
		return fmt.Sprint(r.Data.Result[0].Value[1]), nil
	}
	deadline := time.Now().Add(45 * time.Second)
	var lastErr error
	for time.Now().Before(deadline) {
		up, err := query(`up{job="imageflow"}`)
		if err == nil && up == "1" {
			in, err1 := query(`imageflow_bus_messages_total{direction="in"}`)
			bytes, err2 := query(`imageflow_bus_bytes_total{direction="out"}`)
			if err1 == nil && err2 == nil && in != "0" && bytes != "0" {
				if _, err := query(`imageflow_http_requests_total`); err != nil {
					t.Fatalf("HTTP metrics not scraped: %v", err)
				}
				return
			}
			lastErr = fmt.Errorf("bus counters: %v %v (%s, %s)", err1, err2, in, bytes)
		} else {
			lastErr = fmt.Errorf("up=%q: %v", up, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("prometheus never saw the target up with bus counters: %v\n%s", lastErr, promLog.String())
}

// TestSignalShutdown checks SIGTERM stops the server within 5 s, cleanly, and
// that a restart on the same data directory finds the state.
func TestSignalShutdown(t *testing.T) {
	data := t.TempDir()
	cmd, li, logs := startBinary(t, data)
	body := strings.NewReader(`{"id":"kept","source":"publish"}`)
	resp, err := http.Post("http://"+li.HTTP+"/api/v1/cameras", "application/json", body)
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("create camera: %v %v", err, resp)
	}
	resp.Body.Close()
	start := time.Now()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, logs.String())
		}
	case <-time.After(6 * time.Second):
		t.Fatalf("not stopped 6s after SIGTERM\n%s", logs.String())
	}
	t.Logf("shutdown took %v", time.Since(start))
	if time.Since(start) > 5*time.Second {
		t.Fatalf("shutdown took %v", time.Since(start))
	}
	_, li2, _ := startBinary(t, data)
	resp, err = http.Get("http://" + li2.HTTP + "/api/v1/cameras/kept")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("camera after restart: %v %v", err, resp)
	}
	resp.Body.Close()
}
