package remote

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imageflowcanvas/imageflow/netpolicy"
	"github.com/imageflowcanvas/imageflow/processors"
)

// countingProc counts the calls that reached the remote processor.
type countingProc struct {
	grayProc
	calls atomic.Int32
}

func (c *countingProc) Process(ctx context.Context, in *processors.Input, out *processors.Output) error {
	c.calls.Add(1)
	return c.grayProc.Process(ctx, in, out)
}

// A grpc:// step dials through the host policy the server passes in: a
// name (localhost) whose resolved address is denied never reaches the
// remote, while the same remote is reached when allowed.
func TestClientDialChecksResolvedAddress(t *testing.T) {
	img := readImage(t)
	defer img.Close()
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(lis.Addr().String())
	addr := lis.Addr().String()
	lis.Close()
	proc := &countingProc{}
	stop := startServe(t, addr, proc)
	defer stop()

	deny, _ := netpolicy.New([]string{"127.0.0.0/8", "::1"})
	c, err := NewClient("localhost:"+port, ClientOptions{Timeout: time.Second, Attempts: 1,
		Dial: func(ctx context.Context, a string) (net.Conn, error) { return deny.DialContext(ctx, "tcp", a) }})
	if err != nil {
		t.Fatal(err)
	}
	var out processors.Output
	err = c.Process(context.Background(), &processors.Input{Image: img}, &out)
	c.Close()
	if err == nil || !strings.Contains(err.Error(), "deny_hosts") {
		t.Fatalf("denied remote: err %v", err)
	}
	if n := proc.calls.Load(); n != 0 {
		t.Fatalf("the denied remote got %d calls", n)
	}

	allow, _ := netpolicy.New(netpolicy.DefaultDeny)
	c, err = NewClient("localhost:"+port, ClientOptions{Timeout: 5 * time.Second,
		Dial: func(ctx context.Context, a string) (net.Conn, error) { return allow.DialContext(ctx, "tcp", a) }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Process(context.Background(), &processors.Input{Image: img}, &out); err != nil {
		t.Fatalf("allowed remote: %v", err)
	}
	out.Image.Close()
	if proc.calls.Load() != 1 || errors.Is(err, netpolicy.ErrDenied) {
		t.Fatalf("calls %d", proc.calls.Load())
	}
}
