package rtsp

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair returns both ends of a real loopback TCP connection, the server
// end wrapped like the RTSP server wraps it.
func tcpPair(t testing.TB) (srv *batchConn, cli net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cli, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := batchListener{Listener: ln}.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); cli.Close() })
	return c.(*batchConn), cli
}

func TestBatchConnKeepsOrderAndFlushesOnClose(t *testing.T) {
	srv, cli := tcpPair(t)
	var want bytes.Buffer
	for i := range 3000 {
		p := bytes.Repeat([]byte{byte(i)}, 1+i%1500)
		want.Write(p)
		if n, err := srv.Write(p); err != nil || n != len(p) {
			t.Fatalf("write %d: n=%d err=%v", i, n, err)
		}
	}
	// Close must send what is still queued before closing the socket.
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	_ = cli.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(cli)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("received %d bytes, want %d in order", len(got), want.Len())
	}
	if _, err := srv.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v, want net.ErrClosed", err)
	}
}

func TestBatchConnReadsInOrder(t *testing.T) {
	srv, cli := tcpPair(t)
	var want bytes.Buffer
	for i := range 200 {
		want.Write(bytes.Repeat([]byte{byte(i)}, 700+i))
	}
	go func() {
		_, _ = cli.Write(want.Bytes())
		cli.Close()
	}()
	_ = srv.SetReadDeadline(time.Now().Add(10 * time.Second))
	// Small reads, as gortsplib's 4 kB bufio.Reader does, and one large.
	var got bytes.Buffer
	buf := make([]byte, 4096)
	for got.Len() < want.Len()/2 {
		n, err := srv.Read(buf[:1+got.Len()%4096])
		if err != nil {
			t.Fatal(err)
		}
		got.Write(buf[:n])
	}
	rest, err := io.ReadAll(struct{ io.Reader }{srv})
	if err != nil {
		t.Fatal(err)
	}
	got.Write(rest)
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("read %d bytes, want %d in order", got.Len(), want.Len())
	}
}

func TestBatchConnWriteErrorAfterPeerGone(t *testing.T) {
	srv, cli := tcpPair(t)
	cli.Close()
	p := make([]byte, 64<<10)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_ = srv.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := srv.Write(p); err != nil {
			return // the flusher's error reaches the writer
		}
		if time.Now().After(deadline) {
			t.Fatal("writes to a closed peer kept succeeding")
		}
		time.Sleep(time.Millisecond)
	}
}
