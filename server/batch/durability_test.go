package batch_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/processors"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	"github.com/imageflowcanvas/imageflow/server/batch"
	"github.com/imageflowcanvas/imageflow/server/blob"
)

const helperEnv = "IFC_BATCH_HELPER_DIR"

// TestHelperProcess is not a test: run by TestDurabilityKill9 as a child
// process, it serves a bus and Manager on a data directory until killed.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("helper process for TestDurabilityKill9")
	}
	// A pause step keeps every file in work for a while, so the kill
	// always lands on files being processed, whatever the machine's speed.
	storedPipelines["resize-filter-pause"] = &busv1.Pipeline{Id: "resize-filter-pause",
		Steps: append([]*busv1.Step{{Id: "pause", Processor: "pause"}}, storedPipelines["resize-filter"].Steps...)}
	e := startEnv(t, envOpts{dataDir: dir, mod: func(c *batch.Config) {
		c.Workers = 2
		c.AckWait = 2 * time.Second
		c.Registry.Register(processors.Spec{Name: "pause", Outputs: []string{"values"},
			New: func(processors.Params) (processors.Processor, error) { return pauseProcessor{}, nil }})
		c.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}})
	tmp := filepath.Join(dir, "addr.tmp")
	if err := os.WriteFile(tmp, []byte(e.base), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "addr")); err != nil {
		t.Fatal(err)
	}
	select {} // until SIGKILL
}

// pauseProcessor holds each picture 20 ms and produces nothing.
type pauseProcessor struct{}

func (pauseProcessor) Process(ctx context.Context, _ *processors.Input, _ *processors.Output) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(20 * time.Millisecond):
		return nil
	}
}

func (pauseProcessor) Close() error { return nil }

type child struct {
	cmd  *exec.Cmd
	base string
	done chan struct{}
}

func startChild(t *testing.T, dir string) *child {
	t.Helper()
	return startChildRun(t, dir, "^TestHelperProcess$", helperEnv)
}

// startChildRun runs the helper test named by run in a child process with
// env set to dir, and waits until it serves.
func startChildRun(t *testing.T, dir, run, env string) *child {
	t.Helper()
	c, ok := tryStartChild(t, dir, run, env)
	if !ok {
		log, _ := os.ReadFile(filepath.Join(dir, "child.log"))
		t.Fatalf("child exited before serving:\n%s", log)
	}
	return c
}

// tryStartChild starts a child like startChildRun; false when the child
// exited before it served (a child may die on a work item it resumes).
func tryStartChild(t *testing.T, dir, run, env string) (*child, bool) {
	t.Helper()
	_ = os.Remove(filepath.Join(dir, "addr"))
	logf, err := os.OpenFile(filepath.Join(dir, "child.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(os.Args[0], "-test.run="+run, "-test.count=1")
	cmd.Env = append(os.Environ(), env+"="+dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(c.done) }()
	t.Cleanup(func() { c.kill() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "addr")); err == nil {
			c.base = string(b)
			return c, true
		}
		select {
		case <-c.done:
			return nil, false
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("child did not start within 30s")
		}
	}
}

func (c *child) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

// TestDurabilityKill9 kills the server process with SIGKILL in the middle of
// a 100-image execution, starts it again on the same data directory and
// checks that every file ends with exactly one result, in the record and in
// the store.
func TestDurabilityKill9(t *testing.T) {
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
	c := startChild(t, dir)
	e := &env{t: t, base: c.base}
	img := readImage(t, "baboon.jpg")
	const n = 100
	files := make([]upFile, n)
	for i := range files {
		files[i] = upFile{name: fmt.Sprintf("img%03d.jpg", i), data: img.data}
	}
	id := e.mustUpload(files, "resize-filter-pause")
	// Kill early: on a quiet machine the whole execution takes well under a
	// second, so waiting for many files risks killing a finished run.
	x := e.waitFor(id, 60*time.Second, func(x *batch.Execution) bool { return x.Done >= 3 })
	c.kill()
	t.Logf("killed with %d of %d done", x.Done, n)
	if x.Done >= n {
		t.Fatal("execution finished before the kill: the test proves nothing")
	}

	c = startChild(t, dir)
	e.base = c.base
	x = e.waitFor(id, 90*time.Second, finished)
	if x.State != batch.StateDone || x.Done != n || x.Failed != 0 || len(x.Files) != n {
		t.Fatalf("after restart: state %s done %d failed %d files %d", x.State, x.Done, x.Failed, len(x.Files))
	}
	for i, f := range x.Files {
		if f.Index != i || f.State != batch.FileDone || f.Name != fmt.Sprintf("img%03d.jpg", i) {
			t.Fatalf("file %d: %+v", i, f)
		}
	}
	c.kill()
	// The kill may land between the last record update and its work item's
	// ack; a start clears what a finished execution left in the queue (and
	// must not redo any of it).
	c = startChild(t, dir)
	e.base = c.base
	if y := e.waitFor(id, 10*time.Second, finished); y.Done != n {
		t.Fatalf("another restart changed the record: done %d", y.Done)
	}
	c.kill()

	// The store holds exactly one input, output and result per file, and the
	// queue is empty.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := &bus.Bus{Config: bus.Config{DataDir: dir, Logger: slog.New(slog.DiscardHandler)}}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	infos, err := blob.NewJetStream(b.Objects()).List(ctx, "executions/"+id+"/")
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]map[int]int{}
	for _, in := range infos {
		rest := strings.TrimPrefix(in.Key, "executions/"+id+"/")
		kind, name, _ := strings.Cut(rest, "/")
		idx, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSuffix(name, ".json"), ".jpg"))
		if err != nil {
			t.Fatalf("unexpected key %s", in.Key)
		}
		if count[kind] == nil {
			count[kind] = map[int]int{}
		}
		count[kind][idx]++
	}
	for _, kind := range []string{"inputs", "outputs", "results"} {
		if len(count[kind]) != n {
			t.Fatalf("%s: %d distinct files, want %d", kind, len(count[kind]), n)
		}
		for i, k := range count[kind] {
			if k != 1 {
				t.Fatalf("%s/%d stored %d times", kind, i, k)
			}
		}
	}
	if len(infos) != 3*n {
		t.Fatalf("%d blobs, want %d", len(infos), 3*n)
	}
	// The progress history shows which files were started twice: those in
	// work at the kill, redelivered after the restart.
	started := map[uint32]int{}
	cons, err := b.JetStream().OrderedConsumer(ctx, "PROGRESS", jetstream.OrderedConsumerConfig{FilterSubjects: []string{b.Subjects().Progress(id)}})
	if err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := cons.Next(jetstream.FetchMaxWait(time.Second))
		if err != nil {
			break
		}
		p := &busv1.Progress{}
		if err := proto.Unmarshal(msg.Data(), p); err != nil {
			t.Fatal(err)
		}
		if p.FileState == busv1.FileState_FILE_STATE_RUNNING {
			started[p.Index]++
		}
	}
	redone := 0
	for _, k := range started {
		if k > 1 {
			redone++
		}
	}
	t.Logf("%d files were started again after the kill", redone)
	if redone == 0 {
		t.Fatal("no file was in work at the kill: the redelivery path was not exercised")
	}

	st, err := b.JetStream().Stream(ctx, "JOBS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil || info.State.Msgs != 0 {
		t.Fatalf("JOBS stream still holds %d items (%v)", info.State.Msgs, err)
	}
}
