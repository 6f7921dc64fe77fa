// Package batch runs batch executions: images uploaded over REST go to the
// object store, one work item per file goes on the JOBS work-queue stream,
// workers run each through the pipeline engine and store its result, and
// progress flows on ifc.progress.<execution> to WebSocket and SSE clients.
//
// Durability: the execution record lives in the executions KV bucket and is
// updated with optimistic concurrency (KV revision); a work item is acked
// only after its result is stored and recorded, and results have idempotent
// keys (execution/index), so a process killed at any point redoes at most
// the files it was working on and never records one twice.
package batch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/gofiber/contrib/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/processors"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	"github.com/imageflowcanvas/imageflow/server/blob"
	"github.com/imageflowcanvas/imageflow/server/rest"
)

// Errors of the batch manager: package rest's sentinels, so the one
// mapping of rest gives their HTTP statuses.
var (
	// ErrPipelineNotFound is what Config.Pipelines wraps for an unknown id (404).
	ErrPipelineNotFound = rest.Kind("pipeline not found", rest.ErrNotFound)
	// ErrNotFound: an execution or file that does not exist (404).
	ErrNotFound = rest.ErrNotFound
	// ErrInvalid: bad request input (400).
	ErrInvalid = rest.ErrInvalid
	// ErrTooLarge: a file or file count over a limit (413).
	ErrTooLarge = rest.ErrTooLarge
	// ErrConflict: the execution's state does not allow the request (409).
	ErrConflict = rest.ErrConflict
	// ErrClosed is returned after Close (503).
	ErrClosed = rest.Kind("batch manager closed", rest.ErrUnavailable)
)

// Defaults of Config.
const (
	DefaultWorkers      = 2
	DefaultMaxFileBytes = 32 << 20
	DefaultMaxFiles     = 1000
	// DefaultMaxRequestBytes bounds one upload request; the HTTP server's
	// BodyLimit must be at least MaxRequestBytes().
	DefaultMaxRequestBytes = 256 << 20
	// DefaultAckWait bounds how long the items a killed process held wait
	// before another worker (or the restarted process) gets them.
	DefaultAckWait     = 10 * time.Second
	DefaultMaxAttempts = 5
	DefaultMaxPixels   = 64 << 20
)

// Config configures a Manager. Exported fields are configuration.
type Config struct {
	// Bus provides the connection, JetStream, the executions bucket and subjects.
	Bus *bus.Bus
	// Blobs holds uploads, output images and result JSON.
	Blobs blob.Store
	// Registry validates and builds pipelines.
	Registry *processors.Registry
	// Pipelines looks a stored pipeline up; its error wraps
	// ErrPipelineNotFound for an unknown id.
	Pipelines func(ctx context.Context, id string) (*busv1.Pipeline, error)
	// RemoteFactory builds grpc:// steps; nil leaves them unavailable.
	RemoteFactory func(addr string, params map[string]any) (processors.Processor, error)
	// Workers is how many files run at once in this process (default 2).
	Workers int
	// MaxFileBytes and MaxFiles bound one upload (defaults 32 MiB, 1000).
	MaxFileBytes int64
	MaxFiles     int
	// RequestBytes bounds one upload request (default 256 MiB, at least
	// MaxFileBytes plus form overhead).
	RequestBytes int
	// AckWait is how long a work item may stay unacknowledged before
	// JetStream hands it to another worker (default 10 s); a worker busy on
	// an item tells JetStream it is still working every AckWait/3.
	AckWait time.Duration
	// MaxPixels refuses pictures whose header claims more pixels (default
	// 64 Mi: 8192x8192), before they are decoded.
	MaxPixels int64
	// MaxAttempts bounds retries of a file whose processor call failed
	// transiently (remote unavailable, timeout); default 5.
	MaxAttempts int
	// Retention removes finished executions (record, uploads, outputs and
	// results) this long after they finished, so an edge box's disk does not
	// fill up; 0 keeps them until deleted with DELETE ...?purge=true.
	Retention time.Duration
	// Logger receives the manager's log lines.
	Logger *slog.Logger
	// Registerer registers the manager's metrics (nil: not registered).
	Registerer prometheus.Registerer
}

// Execution states.
const (
	StateQueued    = "queued"
	StateRunning   = "running"
	StateDone      = "done"   // every file finished, at least one succeeded
	StateFailed    = "failed" // every file failed
	StateCancelled = "cancelled"
)

// File states as the API names them.
const (
	FilePending   = "pending"
	FileRunning   = "running"
	FileDone      = "done"
	FileFailed    = "failed"
	FileCancelled = "cancelled"
)

func terminal(state string) bool {
	return state == StateDone || state == StateFailed || state == StateCancelled
}

func fileTerminal(state string) bool {
	return state == FileDone || state == FileFailed || state == FileCancelled
}

// StepTiming is how long one pipeline step took for one file.
type StepTiming struct {
	ID         string  `json:"id"`
	Processor  string  `json:"processor"`
	DurationMS float64 `json:"duration_ms"`
	Error      string  `json:"error,omitempty"`
}

// File is one file of an execution as recorded.
type File struct {
	Index       int    `json:"index"`
	Name        string `json:"name"`
	Size        int64  `json:"size"`
	ContentType string `json:"content_type"`
	State       string `json:"state"`
	Error       string `json:"error,omitempty"`
	Attempts    int    `json:"attempts,omitempty"`
	// Restarts counts how often the file was taken up again after a process
	// that had it died: a file that kills the worker is dead-lettered by
	// this count, which only grows when the file itself runs (not when it
	// merely waited beside another file that crashed the process).
	Restarts   int          `json:"restarts,omitempty"`
	DurationMS float64      `json:"duration_ms,omitempty"`
	Steps      []StepTiming `json:"steps,omitempty"`
	Detections int          `json:"detections,omitempty"`
	// Output is the content type of the output image, "" when none.
	Output     string     `json:"output,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

// Summary is an execution without its per-file detail, as lists show it.
type Summary struct {
	ID         string     `json:"id"`
	Pipeline   string     `json:"pipeline"`
	State      string     `json:"state"`
	Total      int        `json:"total"`
	Done       int        `json:"done"`
	Failed     int        `json:"failed"`
	Cancelled  int        `json:"cancelled"`
	Percent    float64    `json:"percent"`
	CreatedAt  time.Time  `json:"created_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

// Execution is the record of one batch execution (KV bucket executions,
// JSON). Counters are derived from Files on every update.
type Execution struct {
	Summary
	// Spec is the pipeline as it was when the execution started (protojson),
	// so editing or deleting the pipeline does not change a running batch.
	Spec  json.RawMessage `json:"pipeline_spec"`
	Files []File          `json:"files"`
}

// recount derives the counters and, when every file is finished, the final
// state.
func (e *Execution) recount(now time.Time) {
	e.Total = len(e.Files)
	e.Done, e.Failed, e.Cancelled = 0, 0, 0
	for i := range e.Files {
		switch e.Files[i].State {
		case FileDone:
			e.Done++
		case FileFailed:
			e.Failed++
		case FileCancelled:
			e.Cancelled++
		}
	}
	finished := e.Done + e.Failed + e.Cancelled
	if e.Total > 0 {
		e.Percent = float64(finished) * 100 / float64(e.Total)
	}
	e.UpdatedAt = now
	if terminal(e.State) {
		return
	}
	if finished > 0 {
		e.State = StateRunning
	}
	if finished == e.Total {
		if e.Done == 0 && e.Failed > 0 {
			e.State = StateFailed
		} else {
			e.State = StateDone
		}
		e.FinishedAt = &now
	}
}

// Manager owns batch executions: the REST handlers, the workers and the
// progress streams.
type Manager struct {
	cfg     Config
	log     *slog.Logger
	kv      jetstream.KeyValue
	js      jetstream.JetStream
	subj    bus.Subjects
	metrics *metrics

	// inWork holds a marker per started file, written before the file runs
	// and valued with boot, this process's random id: a marker of another
	// boot on a delivered item means a process died with the file in work.
	// (JetStream's delivery count cannot tell: the consumer's state is
	// flushed to disk lazily, and a SIGKILL may take the count with it.)
	inWork jetstream.KeyValue
	boot   []byte

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// updateMu serialises this process's record updates so its own workers
	// do not fight over the KV revision; CAS still guards other nodes.
	updateMu sync.Mutex

	recMu   sync.Mutex
	records map[string]cachedRec // active executions, as last written here

	wsHandler fiber.Handler
	inputs    *inputCache

	mu      sync.Mutex
	running map[string]map[int]context.CancelFunc // execution → index → stop
	started bool
	closed  bool
}

// New checks the configuration and fills defaults; Start runs the workers.
func New(cfg Config) (*Manager, error) {
	if cfg.Bus == nil || cfg.Bus.JetStream() == nil {
		return nil, errors.New("batch: Config.Bus must be a started bus")
	}
	if cfg.Blobs == nil {
		return nil, errors.New("batch: Config.Blobs is required")
	}
	if cfg.Registry == nil {
		return nil, errors.New("batch: Config.Registry is required")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.MaxFileBytes <= 0 {
		cfg.MaxFileBytes = DefaultMaxFileBytes
	}
	if cfg.MaxFiles <= 0 {
		cfg.MaxFiles = DefaultMaxFiles
	}
	if cfg.RequestBytes <= 0 {
		cfg.RequestBytes = DefaultMaxRequestBytes
	}
	if min := int(cfg.MaxFileBytes) + 1<<20; cfg.RequestBytes < min {
		cfg.RequestBytes = min
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = DefaultAckWait
	}
	if cfg.MaxPixels <= 0 {
		cfg.MaxPixels = DefaultMaxPixels
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	kv := cfg.Bus.KV(bus.BucketExecutions)
	if kv == nil {
		return nil, errors.New("batch: bus has no executions bucket")
	}
	inWork := cfg.Bus.KV(bus.BucketInWork)
	if inWork == nil {
		return nil, errors.New("batch: bus has no in-work bucket")
	}
	m := &Manager{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "batch"),
		kv:      kv,
		inWork:  inWork,
		boot:    []byte(newID()),
		js:      cfg.Bus.JetStream(),
		subj:    cfg.Bus.Subjects(),
		metrics: newMetrics(cfg.Registerer),
		running: make(map[string]map[int]context.CancelFunc),
		inputs:  newInputCache(64 << 20),
		records: make(map[string]cachedRec),
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.wsHandler = websocket.New(m.serveWS)
	return m, nil
}

// MaxRequestBytes is the body size the HTTP server must accept for uploads.
func (m *Manager) MaxRequestBytes() int { return m.cfg.RequestBytes }

// Close stops the workers and progress streams and waits for them; work
// items in flight stay unacknowledged and are redone after a restart.
func (m *Manager) Close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
}

// newID returns a time-ordered execution id (valid subject token and key):
// 16 hex digits of Unix nanoseconds, then 8 random hex digits.
func newID() string {
	var r [4]byte
	_, _ = rand.Read(r[:])
	return fmt.Sprintf("%016x%s", time.Now().UnixNano(), hex.EncodeToString(r[:]))
}

var specJSON = protojson.MarshalOptions{UseProtoNames: true}

// load reads an execution record and its revision.
func (m *Manager) load(ctx context.Context, id string) (*Execution, uint64, error) {
	if err := bus.ValidateToken(id); err != nil {
		return nil, 0, fmt.Errorf("%w: execution id %q: %v", ErrInvalid, id, err)
	}
	ent, err := m.kv.Get(ctx, id)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, 0, fmt.Errorf("%w: execution %q", ErrNotFound, id)
		}
		return nil, 0, fmt.Errorf("executions store: %w", err)
	}
	e := &Execution{}
	if err := json.Unmarshal(ent.Value(), e); err != nil {
		return nil, 0, fmt.Errorf("execution %q: corrupt record: %w", id, err)
	}
	return e, ent.Revision(), nil
}

// update applies fn to the current record and writes it back only if nobody
// wrote in between (KV revision), retrying on a conflict. fn returns false
// when it changed nothing, which skips the write (idempotent updates). The
// first try starts from this process's last written copy, saving a read and
// a decode of a record that grows with the files; states only move forward,
// so a stale copy can at worst make the write fail and be retried fresh.
func (m *Manager) update(ctx context.Context, id string, fn func(*Execution) bool) (*Execution, bool, error) {
	m.updateMu.Lock()
	defer m.updateMu.Unlock()
	for attempt := 0; ; attempt++ {
		var e *Execution
		var rev uint64
		if c, r, ok := m.cachedRecord(id); ok && attempt == 0 {
			e, rev = c.clone(), r
		} else {
			var err error
			if e, rev, err = m.load(ctx, id); err != nil {
				return nil, false, err
			}
		}
		if !fn(e) {
			return e, false, nil
		}
		e.recount(time.Now().UTC())
		data, err := json.Marshal(e)
		if err != nil {
			return nil, false, err
		}
		newRev, err := m.kv.Update(ctx, id, data, rev)
		if err == nil {
			m.remember(e, newRev)
			return e, true, nil
		}
		m.forget(id)
		if !errors.Is(err, jetstream.ErrKeyExists) || attempt >= 50 {
			return nil, false, fmt.Errorf("execution %q: update: %w", id, err)
		}
		// Another node wrote first: read again and reapply.
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-time.After(time.Duration(attempt+1) * time.Millisecond):
		}
	}
}

// clone copies what update's functions change: the record and its files.
func (e *Execution) clone() *Execution {
	c := *e
	c.Files = slices.Clone(e.Files)
	return &c
}

type cachedRec struct {
	e   *Execution // never changed once cached
	rev uint64
}

// remember keeps a copy of an active execution's record as written.
func (m *Manager) remember(e *Execution, rev uint64) {
	m.recMu.Lock()
	defer m.recMu.Unlock()
	if terminal(e.State) {
		delete(m.records, e.ID)
		return
	}
	m.records[e.ID] = cachedRec{e: e.clone(), rev: rev}
}

func (m *Manager) forget(id string) {
	m.recMu.Lock()
	defer m.recMu.Unlock()
	delete(m.records, id)
}

// cachedRecord returns the last written copy; callers must not change it.
func (m *Manager) cachedRecord(id string) (*Execution, uint64, bool) {
	m.recMu.Lock()
	defer m.recMu.Unlock()
	c, ok := m.records[id]
	return c.e, c.rev, ok
}

// current returns the execution as this process last wrote it, else as
// stored; read-only.
func (m *Manager) current(ctx context.Context, id string) (*Execution, error) {
	if e, _, ok := m.cachedRecord(id); ok {
		return e, nil
	}
	e, _, err := m.load(ctx, id)
	return e, err
}

// blob keys: idempotent per execution and index, so a redone file
// overwrites its own result instead of adding one.
func inputKey(id string, i int) string { return "executions/" + id + "/inputs/" + strconv.Itoa(i) }
func resultKey(id string, i int) string {
	return "executions/" + id + "/results/" + strconv.Itoa(i) + ".json"
}
func outputKey(id string, i int, ext string) string {
	return "executions/" + id + "/outputs/" + strconv.Itoa(i) + ext
}

func extOf(contentType string) string {
	if contentType == "image/png" {
		return ".png"
	}
	return ".jpg"
}

func writeError(c *fiber.Ctx, err error) error { return rest.WriteError(c, err) }

func invalidf(format string, args ...any) error { return rest.Invalidf(format, args...) }
