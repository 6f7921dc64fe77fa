package batch_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/processors/builtin"
	"github.com/imageflowcanvas/imageflow/processors/remote"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	"github.com/imageflowcanvas/imageflow/server/batch"
)

// TestRemoteDownThenUp runs a pipeline whose step is a gRPC processor that
// is not running yet: the direct call fails, the file goes back on the queue
// with backoff, and once the processor serves, the retry succeeds.
func TestRemoteDownThenUp(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there until later

	e := startEnv(t, envOpts{mod: func(c *batch.Config) {
		c.MaxAttempts = 20
		c.RemoteFactory = func(addr string, params map[string]any) (processors.Processor, error) {
			return remote.NewClient(addr, remote.ClientOptions{Params: params, Timeout: time.Second, Attempts: 1})
		}
	}})
	ch := make(chan *nats.Msg, 64)
	sub, err := e.bus.Conn().ChanSubscribe(e.bus.Subjects().Progress("*"), ch)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	pipeline := fmt.Sprintf(`{"id":"remote-resize","steps":[{"id":"r","processor":"grpc://%s","params":{"width":160}}]}`, addr)
	st, body := e.upload([]upFile{readImage(t, "fruits.jpg")}, map[string]string{"pipeline_json": pipeline})
	if st != 202 {
		t.Fatalf("upload: %d %s", st, body)
	}
	var created struct{ ID string }
	_ = json.Unmarshal(body, &created)

	// Wait for the failed attempt to be put back on the queue.
	deadline := time.After(20 * time.Second)
	for retried := false; !retried; {
		select {
		case msg := <-ch:
			p := &busv1.Progress{}
			_ = proto.Unmarshal(msg.Data, p)
			if p.FileState == busv1.FileState_FILE_STATE_DONE || p.FileState == busv1.FileState_FILE_STATE_FAILED {
				t.Fatalf("file finished while the processor was down: %v", p)
			}
			retried = p.FileState == busv1.FileState_FILE_STATE_PENDING && strings.Contains(p.Error, "Unavailable")
		case <-deadline:
			t.Fatal("no retry announced")
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	reg := processors.NewRegistry()
	builtin.Register(reg)
	served := make(chan error, 1)
	go func() {
		served <- remote.RunProcessorServer(ctx, addr, "resize", reg, slog.New(slog.DiscardHandler))
	}()
	defer func() {
		cancel()
		if err := <-served; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("processor server: %v", err)
		}
	}()

	x := e.waitFor(created.ID, 30*time.Second, finished)
	f := x.Files[0]
	if x.State != batch.StateDone || f.State != batch.FileDone || f.Attempts < 2 {
		t.Fatalf("after the processor came up: %s %+v", x.State, f)
	}
	_, img, _ := e.get("/api/v1/executions/" + created.ID + "/files/0/image")
	if w, _ := decodeSize(t, img); w != 160 {
		t.Fatalf("output width %d, want 160", w)
	}
}
