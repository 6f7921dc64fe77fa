package batch_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"github.com/imageflowcanvas/imageflow/processors"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	"github.com/imageflowcanvas/imageflow/server/batch"
)

const crashHelperEnv = "IFC_BATCH_CRASH_HELPER_DIR"

// crashAttempts is the helper's MaxAttempts: how many deliveries (here,
// crashes) a work item gets before it is dead-lettered.
const crashAttempts = 3

// crashWidth is the picture width that kills the helper process: the crash
// processor stands for a decoder or model that aborts the process on one
// particular input, as OpenCV did on a forged BMP.
const crashWidth = 13

type crashProcessor struct{}

func (crashProcessor) Process(_ context.Context, in *processors.Input, _ *processors.Output) error {
	if in.Image.Cols() == crashWidth {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	return nil
}

func (crashProcessor) Close() error { return nil }

// TestCrashHelperProcess is not a test: run by TestDeadLetterAfterCrashes as
// a child process, it serves a Manager whose "crash" pipeline kills the
// process on 13-pixel-wide pictures.
func TestCrashHelperProcess(t *testing.T) {
	dir := os.Getenv(crashHelperEnv)
	if dir == "" {
		t.Skip("helper process for TestDeadLetterAfterCrashes")
	}
	storedPipelines["crash"] = &busv1.Pipeline{Id: "crash", Steps: []*busv1.Step{{Id: "c", Processor: "crash"}}}
	e := startEnv(t, envOpts{dataDir: dir, mod: func(c *batch.Config) {
		c.Workers = 2
		c.AckWait = time.Second
		c.MaxAttempts = crashAttempts
		c.Registry.Register(processors.Spec{Name: "crash", Outputs: []string{"values"},
			New: func(processors.Params) (processors.Processor, error) { return crashProcessor{}, nil }})
		c.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}})
	tmp := filepath.Join(dir, "addr.tmp")
	if err := os.WriteFile(tmp, []byte(e.base), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "addr")); err != nil {
		t.Fatal(err)
	}
	select {}
}

// TestDeadLetterAfterCrashes uploads a picture that kills the server
// process whenever it is processed, restarting the process each time it
// dies, as a supervisor would. Before, the work item came back at every
// start and the server never stayed up; now JetStream stops after
// MaxAttempts deliveries, the file is failed with the reason (visible
// through GET /api/v1/executions/{id}) and the execution completes.
func TestDeadLetterAfterCrashes(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "child.log"))
			t.Logf("child log:\n%s", log)
		}
	})
	crashes := 0
	// A restarted child may die on the resumed item before it serves:
	// that is a crash too.
	start := func() *child {
		for {
			if c, ok := tryStartChild(t, dir, "^TestCrashHelperProcess$", crashHelperEnv); ok {
				return c
			}
			crashes++
			if crashes > crashAttempts+1 {
				t.Fatalf("the server crashed %d times on one work item: it is redelivered without end", crashes)
			}
		}
	}
	c := start()
	e := &env{t: t, base: c.base}
	good := readImage(t, "baboon.jpg")
	bad := gocv.NewMatWithSize(20, crashWidth, gocv.MatTypeCV8UC3)
	buf, err := gocv.IMEncode(gocv.PNGFileExt, bad)
	bad.Close()
	if err != nil {
		t.Fatal(err)
	}
	poison := upFile{name: "poison.png", data: append([]byte(nil), buf.GetBytes()...)}
	buf.Close()
	id := e.mustUpload([]upFile{good, poison}, "crash")

	deadline := time.Now().Add(90 * time.Second)
	var x *batch.Execution
	for {
		if time.Now().After(deadline) {
			t.Fatalf("execution not finished after %d crashes", crashes)
		}
		select {
		case <-c.done:
			crashes++
			if crashes > crashAttempts+1 {
				t.Fatalf("the server crashed %d times on one work item: it is redelivered without end", crashes)
			}
			c = start()
			e.base = c.base
			continue
		case <-time.After(50 * time.Millisecond):
		}
		x = pollExecution(e.base, id)
		if x != nil && finished(x) {
			break
		}
	}
	t.Logf("finished after %d crashes: %+v", crashes, x.Files)
	// JetStream announces the last allowed delivery, which may then be
	// dead-lettered before it runs: at most MaxAttempts crashes.
	if crashes < 1 || crashes > crashAttempts {
		t.Errorf("%d crashes, want 1..%d (MaxAttempts deliveries)", crashes, crashAttempts)
	}
	if x.State != batch.StateDone || x.Done != 1 || x.Failed != 1 {
		t.Fatalf("state %s done %d failed %d, want done with 1 done and 1 failed", x.State, x.Done, x.Failed)
	}
	if f := x.Files[0]; f.State != batch.FileDone {
		t.Errorf("good file: %+v", f)
	}
	if f := x.Files[1]; f.State != batch.FileFailed || !strings.Contains(f.Error, "dead-lettered after") || f.Attempts < crashes {
		t.Errorf("poison file: state %s attempts %d error %q", f.State, f.Attempts, f.Error)
	}
	// The process stays up, and stays up across another start: nothing of
	// the execution is left to redeliver.
	time.Sleep(3 * time.Second) // > AckWait: a leftover item would have come back
	select {
	case <-c.done:
		t.Fatal("the server crashed after the execution finished")
	default:
	}
	c.kill()
	c = start()
	e.base = c.base
	time.Sleep(3 * time.Second)
	select {
	case <-c.done:
		t.Fatal("the server crashed after a restart")
	default:
	}
	if y := e.execution(id); y.Files[1].State != batch.FileFailed || y.Done != 1 {
		t.Fatalf("record changed after restart: %+v", y.Files)
	}
}

// pollExecution gets an execution; nil while the server is not answering.
func pollExecution(base, id string) *batch.Execution {
	resp, err := http.Get(base + "/api/v1/executions/" + id)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return nil
	}
	x := &batch.Execution{}
	if json.Unmarshal(body, x) != nil {
		return nil
	}
	return x
}
