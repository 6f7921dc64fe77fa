package remote

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/imageflowcanvas/imageflow/processors"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	pb "github.com/imageflowcanvas/imageflow/proto/processorv1"
)

// slowProc works 100 ms a call whatever its context says, like an OpenCV
// call that cannot be interrupted.
type slowProc struct{ calls atomic.Int32 }

func (s *slowProc) Process(context.Context, *processors.Input, *processors.Output) error {
	s.calls.Add(1)
	time.Sleep(100 * time.Millisecond)
	return nil
}

func (s *slowProc) Close() error { return nil }

// TestServeDropsExpiredCalls: calls queued behind a busy processor whose
// deadline passes while they wait are answered DEADLINE_EXCEEDED without
// running, so they do not delay the calls after them; the health service
// answers SERVING.
func TestServeDropsExpiredCalls(t *testing.T) {
	proc := &slowProc{}
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := lis.Addr().String()
	lis.Close()
	stop := startServe(t, addr, proc)
	defer stop()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", h, err)
	}
	cl := pb.NewProcessorClient(conn)
	req := &pb.ProcessRequest{Image: &pb.Image{Data: &pb.Image_Raw{Raw: &pb.RawImage{
		Format: busv1.PixelFormat_PIXEL_FORMAT_BGR24, Width: 8, Height: 8, Data: make([]byte, 8*8*3)}}}}
	if _, err := cl.Process(ctx, req); err != nil { // connected and warm
		t.Fatal(err)
	}
	proc.calls.Store(0)
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, ccancel := context.WithTimeout(ctx, 50*time.Millisecond)
			defer ccancel()
			if _, err := cl.Process(cctx, req); status.Code(err) != codes.DeadlineExceeded {
				t.Errorf("expired call: %v, want DeadlineExceeded", err)
			}
		}()
	}
	wg.Wait()
	start := time.Now()
	if _, err := cl.Process(ctx, req); err != nil {
		t.Fatal(err)
	}
	// Running them all would take a second; the one that got the processor
	// first may finish, the rest must be dropped.
	if n := proc.calls.Load(); n > 3 {
		t.Fatalf("%d calls ran, want the expired ones dropped", n)
	}
	if d := time.Since(start); d > 600*time.Millisecond {
		t.Fatalf("the call after the expired ones took %v", d)
	}
}
