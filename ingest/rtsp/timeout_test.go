package rtsp

import (
	"bufio"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
)

// waitClosed reads from c until the server closes it; it fails the test when
// that takes longer than within.
func waitClosed(t *testing.T, c net.Conn, start time.Time, within time.Duration) time.Duration {
	t.Helper()
	_ = c.SetReadDeadline(start.Add(within))
	buf := make([]byte, 4096)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("connection still open %v after it started", within)
		}
		return time.Since(start)
	}
}

// Connections that do not complete a request within ReadTimeout are closed:
// one that sends nothing, one that trickles half a request, one that went
// quiet after a request. Readers and publishers that stream stay.
func TestServerReadTimeout(t *testing.T) {
	const timeout = 700 * time.Millisecond
	e := newEnv(t, publishCams("cam1"), func(s *Server) { s.ReadTimeout = timeout })
	dial := func(t *testing.T) net.Conn {
		c, err := net.Dial("tcp", e.srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	t.Run("silent", func(t *testing.T) {
		start := time.Now()
		c := dial(t)
		if d := waitClosed(t, c, start, timeout+2*time.Second); d < timeout/2 {
			t.Fatalf("closed after %v, before the %v timeout", d, timeout)
		}
	})
	t.Run("half request", func(t *testing.T) {
		start := time.Now()
		c := dial(t)
		if _, err := c.Write([]byte("OPTIONS rtsp://" + e.srv.Addr() + "/cam1 RTSP/1.0\r\nCSeq: 1\r\n")); err != nil {
			t.Fatal(err)
		}
		// A header line every 200 ms: each read makes progress, the
		// request never ends.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					if _, err := c.Write([]byte("X-Pad: 1\r\n")); err != nil {
						return
					}
				}
			}
		}()
		defer func() { close(stop); wg.Wait() }()
		waitClosed(t, c, start, timeout+2*time.Second)
	})
	t.Run("quiet after a request", func(t *testing.T) {
		c := dial(t)
		if _, err := c.Write([]byte("OPTIONS rtsp://" + e.srv.Addr() + "/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "RTSP/1.0 200") {
			t.Fatalf("OPTIONS answer %q, %v", line, err)
		}
		waitClosed(t, c, time.Now(), timeout+2*time.Second)
	})
	t.Run("streaming stays", func(t *testing.T) {
		defer publishAUs(t, e.url("cam1"), 0)()
		tcp := gortsplib.TransportTCP
		r, err := playGo(t, e.url("cam1"), &tcp)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "reader frames", func() bool { return r.aus.Load() > 5 })
		// Three timeouts later the reader, which sends nothing, still
		// gets frames.
		time.Sleep(3 * timeout)
		n := r.aus.Load()
		waitFor(t, 3*time.Second, "reader still playing after 3 timeouts", func() bool { return r.aus.Load() > n+10 })
	})
}

// With the RTSP listener on loopback, a UDP address without a host binds
// loopback too, not every interface.
func TestServerUDPOnRTSPHost(t *testing.T) {
	e := newEnv(t, publishCams("cam1"), func(s *Server) { s.UDPAddress = ":0" })
	host, _, err := net.SplitHostPort(e.srv.UDPAddr())
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("UDP address %q, want it on 127.0.0.1", e.srv.UDPAddr())
	}
	for _, c := range []struct{ udp, rtsp, want string }{
		{":8000", "127.0.0.1:8554", "127.0.0.1:8000"},
		{":8000", ":8554", ":8000"},
		{"0.0.0.0:8000", "127.0.0.1:8554", "0.0.0.0:8000"},
		{":8000", "[::1]:8554", "[::1]:8000"},
	} {
		if got := udpOnRTSPHost(c.udp, c.rtsp); got != c.want {
			t.Errorf("udpOnRTSPHost(%q, %q) = %q, want %q", c.udp, c.rtsp, got, c.want)
		}
	}
}
