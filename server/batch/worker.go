package batch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"gocv.io/x/gocv"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/media/imagedecode"
	"github.com/imageflowcanvas/imageflow/processors"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	"github.com/imageflowcanvas/imageflow/server/blob"
)

// consumerName is the durable JetStream consumer the workers of every node
// share; the JOBS stream is a work queue, so each item goes to one of them.
const consumerName = "batch-workers"

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// Start creates the shared consumer, resumes unfinished executions and runs
// the workers. ctx is the manager's lifetime: when it ends, workers stop and
// progress streams end (so an HTTP server shutting down is not held open by
// them), as with Close, which still waits for the goroutines.
func (m *Manager) Start(ctx context.Context) error {
	m.mu.Lock()
	if m.started || m.closed {
		m.mu.Unlock()
		return errors.New("batch: Start called twice or after Close")
	}
	m.started = true
	m.mu.Unlock()
	// Listen for items JetStream gives up on before the consumer exists,
	// so no advisory is missed.
	dead := make(chan *nats.Msg, 64)
	sub, err := m.cfg.Bus.Conn().ChanQueueSubscribe(maxDeliveriesAdvisory+"JOBS."+consumerName, "batch-dead-letters", dead)
	if err != nil {
		return fmt.Errorf("batch: max-deliveries advisory: %w", err)
	}
	m.wg.Add(1)
	go m.deadLetters(sub, dead)
	// Every delivery is an attempt: a transient failure naks (until
	// MaxAttempts, then the file is recorded failed), a crash or kill just
	// never acks. After MaxAttempts deliveries JetStream stops and sends the
	// advisory, and the file is dead-lettered instead of crashing the
	// process at every restart.
	cons, err := m.js.CreateOrUpdateConsumer(ctx, "JOBS", jetstream.ConsumerConfig{
		Durable:       consumerName,
		FilterSubject: m.subj.Jobs("*"),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       m.cfg.AckWait,
		// A backstop: files that crash the worker are dead-lettered by
		// their own restarts (see handle); a file delivered beside one may
		// be redelivered once per crash without ever running.
		MaxDeliver:    4 * m.cfg.MaxAttempts,
		MaxAckPending: 4096,
	})
	if err != nil {
		return fmt.Errorf("batch: jobs consumer: %w", err)
	}
	if err := m.resume(ctx); err != nil {
		return err
	}
	g := &deliveryGate{}
	for i := 0; i < m.cfg.Workers; i++ {
		m.wg.Add(1)
		go m.worker(cons, g)
	}
	if m.cfg.Retention > 0 {
		m.wg.Add(1)
		go m.janitor()
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		select {
		case <-ctx.Done():
			m.cancel()
		case <-m.ctx.Done():
		}
	}()
	return nil
}

// resume finishes what a previous process left: executions whose files are
// all done get their final state, and files whose work item is gone (a crash
// between storing the record and queueing) are queued again. Items still in
// the stream are picked up by the consumer as they are.
func (m *Manager) resume(ctx context.Context) error {
	keys, err := m.kv.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("batch: list executions: %w", err)
	}
	var ids []string
	for k := range keys.Keys() {
		ids = append(ids, k)
	}
	resumed := 0
	for _, id := range ids {
		e, _, err := m.load(ctx, id)
		if err != nil || terminal(e.State) {
			continue
		}
		// Finalise executions whose last file was recorded just before a crash.
		e, _, err = m.update(ctx, id, func(x *Execution) bool {
			for i := range x.Files {
				if !fileTerminal(x.Files[i].State) {
					return false
				}
			}
			return true
		})
		if err != nil || terminal(e.State) {
			continue
		}
		var open []int
		for i := range e.Files {
			if !fileTerminal(e.Files[i].State) {
				open = append(open, i)
			}
		}
		queued, err := m.queued(ctx, id)
		if err != nil {
			return err
		}
		if queued < uint64(len(open)) {
			if err := m.enqueue(ctx, e, open); err != nil {
				return fmt.Errorf("batch: requeue %s: %w", id, err)
			}
		}
		resumed++
		m.log.Info("execution resumed", "execution", id, "open_files", len(open), "queued", queued)
	}
	m.cleanupQueue(ctx)
	if resumed > 0 {
		m.log.Info("resumed unfinished executions", "count", resumed)
	}
	return nil
}

// purgeJobs drops what is left in the queue for a finished execution: after
// a crash, JetStream may bring back an item that was acked (its removal not
// yet on disk) below the consumer's ack floor, where no worker would ever
// take it. Every file of the execution is recorded, so nothing left is work,
// and its in-work markers go too.
func (m *Manager) purgeJobs(ctx context.Context, id string) {
	m.purgeInWork(ctx, id)
	st, err := m.js.Stream(ctx, "JOBS")
	if err == nil {
		err = st.Purge(ctx, jetstream.WithPurgeSubject(m.subj.Jobs(id)))
	}
	if err != nil {
		m.log.Warn("purge finished execution's jobs", "execution", id, "error", err)
	}
}

// cleanupQueue purges the items of executions that are finished or gone,
// in one pass over the queue's subjects.
func (m *Manager) cleanupQueue(ctx context.Context) {
	st, err := m.js.Stream(ctx, "JOBS")
	if err != nil {
		return
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(m.subj.Jobs("*")))
	if err != nil {
		return
	}
	prefix := m.subj.Jobs("")
	for subject := range info.State.Subjects {
		id := strings.TrimPrefix(subject, prefix)
		e, _, err := m.load(ctx, id)
		if err == nil && !terminal(e.State) {
			continue
		}
		if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrInvalid) {
			continue
		}
		m.purgeJobs(ctx, id)
	}
}

// queued counts the work items of an execution still in the stream (acked
// ones are gone from a work queue; delivered but unacked ones remain).
func (m *Manager) queued(ctx context.Context, id string) (uint64, error) {
	st, err := m.js.Stream(ctx, "JOBS")
	if err != nil {
		return 0, fmt.Errorf("batch: jobs stream: %w", err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(m.subj.Jobs(id)))
	if err != nil {
		return 0, fmt.Errorf("batch: jobs stream info: %w", err)
	}
	return info.State.Subjects[m.subj.Jobs(id)], nil
}

// worker holds its own compiled pipelines: a Pipeline runs one image at a
// time, so each worker compiles the executions it meets.
type worker struct {
	m         *Manager
	gate      *deliveryGate
	pipelines map[string]*compiled
	order     []string
}

// compiled is an execution's pipeline built for one worker.
type compiled struct {
	pl    *processors.Pipeline
	roots []sizer // non-nil: JPEGs may be decoded at reduced scale
}

const maxCachedPipelines = 4

// deliveryGate lets the workers of a process run items side by side, and a
// suspect item (see Manager.suspect) alone.
type deliveryGate struct {
	sync.RWMutex
}

func (m *Manager) worker(cons jetstream.Consumer, g *deliveryGate) {
	defer m.wg.Done()
	w := &worker{m: m, gate: g, pipelines: make(map[string]*compiled)}
	defer w.closeAll()
	for m.ctx.Err() == nil {
		// Fetch under the shared side of the gate, so no new item is taken
		// while a suspect runs alone.
		g.RLock()
		fctx, cancel := context.WithTimeout(m.ctx, 2*time.Second)
		msg, err := cons.Next(jetstream.FetchContext(fctx))
		cancel()
		if err != nil {
			g.RUnlock()
			if m.ctx.Err() != nil {
				return
			}
			if !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
				m.log.Warn("fetch job", "error", err)
				select {
				case <-m.ctx.Done():
					return
				case <-time.After(time.Second):
				}
			}
			continue
		}
		if m.suspect(msg) {
			g.RUnlock()
			// Waiting for the others to finish must not count as a lost
			// delivery: keep telling JetStream the item is in work.
			stop := make(chan struct{})
			go func() {
				t := time.NewTicker(m.cfg.AckWait / 3)
				defer t.Stop()
				for {
					select {
					case <-stop:
						return
					case <-t.C:
						_ = msg.InProgress()
					}
				}
			}()
			g.Lock()
			close(stop)
			w.handle(msg, true)
			g.Unlock()
			continue
		}
		w.handle(msg, false)
		g.RUnlock()
	}
}

// suspect reports an item whose file another process started and never
// finished: that process died or stopped while working on it, perhaps
// because of it. A suspect runs with no other item in work, so if it kills
// the process again only its own file's restarts grow and the files that
// happened to run beside it are not dead-lettered with it.
func (m *Manager) suspect(msg jetstream.Msg) bool {
	item := &busv1.JobItem{}
	if err := proto.Unmarshal(msg.Data(), item); err != nil || item.Execution == "" {
		return false // handle drops it
	}
	ent, err := m.inWork.Get(m.ctx, inWorkKey(item.Execution, int(item.Index)))
	if err != nil {
		return false // never started (or the bucket is unreadable: run it as usual)
	}
	return !bytes.Equal(ent.Value(), m.boot)
}

// inWorkKey names a file's in-work marker; executions' markers share a
// prefix, so they go with one purge.
func inWorkKey(id string, idx int) string { return id + "." + strconv.Itoa(idx) }

// markInWork records that this process starts the file; it must be durable
// before the file runs, or a crash on it would go unnoticed.
func (m *Manager) markInWork(ctx context.Context, id string, idx int) error {
	_, err := m.inWork.Put(ctx, inWorkKey(id, idx), m.boot)
	return err
}

// purgeInWork drops the markers of a finished or deleted execution.
func (m *Manager) purgeInWork(ctx context.Context, id string) {
	st, err := m.js.Stream(ctx, "KV_"+bus.BucketInWork)
	if err == nil {
		err = st.Purge(ctx, jetstream.WithPurgeSubject("$KV."+bus.BucketInWork+"."+id+".>"))
	}
	if err != nil {
		m.log.Warn("purge finished execution's in-work markers", "execution", id, "error", err)
	}
}

func (w *worker) closeAll() {
	for _, p := range w.pipelines {
		p.pl.Close()
	}
	w.pipelines = nil
}

func (w *worker) pipeline(e *Execution) (*compiled, error) {
	if p, ok := w.pipelines[e.ID]; ok {
		return p, nil
	}
	spec := &busv1.Pipeline{}
	if err := protojson.Unmarshal(e.Spec, spec); err != nil {
		return nil, fmt.Errorf("execution's pipeline: %w", err)
	}
	var opts []processors.Option
	if f := w.m.cfg.RemoteFactory; f != nil {
		opts = append(opts, processors.WithRemote(processors.RemoteFactory(f)))
	}
	pl, err := processors.Compile(w.m.cfg.Registry, spec, opts...)
	if err != nil {
		return nil, err
	}
	p := &compiled{pl: pl, roots: rootSizers(w.m.cfg.Registry, spec)}
	if len(w.order) >= maxCachedPipelines {
		old := w.order[0]
		w.order = w.order[1:]
		if op := w.pipelines[old]; op != nil {
			op.pl.Close()
			delete(w.pipelines, old)
		}
	}
	w.pipelines[e.ID] = p
	w.order = append(w.order, e.ID)
	return p, nil
}

func (w *worker) drop(id string) {
	if p, ok := w.pipelines[id]; ok {
		p.pl.Close()
		delete(w.pipelines, id)
		for i, o := range w.order {
			if o == id {
				w.order = append(w.order[:i], w.order[i+1:]...)
				break
			}
		}
	}
}

// outcome is how one attempt at a file ended.
type outcome struct {
	file  File
	retry bool // transient failure: put back on the queue
}

// handle processes one work item and acks it only after its result and the
// record are stored.
// handle runs one work item. A suspect item (see suspect) runs alone and
// counts as a restart of its file; the restart that would pass MaxAttempts
// runs are dead-lettered instead.
func (w *worker) handle(msg jetstream.Msg, suspect bool) {
	m := w.m
	ctx := m.ctx
	item := &busv1.JobItem{}
	if err := proto.Unmarshal(msg.Data(), item); err != nil || item.Execution == "" {
		m.log.Warn("dropping malformed job item", "subject", msg.Subject(), "error", err)
		_ = msg.Term()
		return
	}
	idx := int(item.Index)
	e, err := m.current(ctx, item.Execution)
	if err != nil {
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalid) {
			_ = msg.Term() // execution deleted
			return
		}
		_ = msg.NakWithDelay(time.Second)
		return
	}
	if idx >= len(e.Files) || terminal(e.State) || fileTerminal(e.Files[idx].State) {
		// Done before (a redelivery after a crash), or cancelled: nothing to redo.
		_ = msg.DoubleAck(ctx)
		if terminal(e.State) {
			w.drop(e.ID)
		}
		return
	}
	attempt := 1
	if md, err := msg.Metadata(); err == nil {
		attempt = int(md.NumDelivered)
	}
	if suspect {
		// The first run plus the restarts so far: one more would pass
		// MaxAttempts runs of a file that kills the process.
		runs := 1 + e.Files[idx].Restarts
		if runs >= m.cfg.MaxAttempts {
			m.deadLetterFile(ctx, e.ID, idx, runs)
			_ = msg.Term()
			return
		}
		if _, _, err := m.update(ctx, e.ID, func(x *Execution) bool {
			if idx >= len(x.Files) || fileTerminal(x.Files[idx].State) {
				return false
			}
			x.Files[idx].Restarts++
			return true
		}); err != nil {
			_ = msg.NakWithDelay(time.Second)
			return
		}
	}
	if err := m.markInWork(ctx, e.ID, idx); err != nil {
		m.log.Warn("mark file in work", "execution", e.ID, "index", idx, "error", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	fctx, stop := context.WithCancel(ctx)
	if !m.markRunning(e.ID, idx, stop) {
		stop()
		_ = msg.DoubleAck(ctx)
		return
	}
	m.metrics.running.Inc()
	m.publishFile(e, idx, busv1.FileState_FILE_STATE_RUNNING, "", 0)

	// Tell JetStream the item is in work while the pipeline runs, so a slow
	// file is not handed to another worker; after a crash the pings stop and
	// the item comes back after AckWait.
	pingDone := make(chan struct{})
	go func() {
		t := time.NewTicker(m.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-pingDone:
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	start := time.Now()
	out := w.process(fctx, e, idx, attempt)
	close(pingDone)
	cancelled := fctx.Err() != nil && ctx.Err() == nil
	stop()
	m.unmarkRunning(e.ID, idx)
	m.metrics.running.Dec()

	if ctx.Err() != nil {
		return // shutting down: the item stays unacked and is redone
	}
	if cancelled && out.file.State != FileDone {
		out = outcome{file: File{State: FileCancelled, Error: "execution cancelled"}}
	}
	if out.retry && attempt < m.cfg.MaxAttempts {
		m.metrics.retries.Inc()
		delay := time.Duration(1<<min(attempt-1, 6)) * 200 * time.Millisecond
		m.log.Warn("file failed, retrying", "execution", e.ID, "index", idx, "attempt", attempt, "delay", delay, "error", out.file.Error)
		_ = msg.NakWithDelay(delay)
		m.publishFile(e, idx, busv1.FileState_FILE_STATE_PENDING, out.file.Error, 0)
		return
	}
	out.file.Attempts = attempt
	rec, changed, err := m.finishFile(ctx, e.ID, idx, out.file, time.Since(start))
	if err != nil {
		m.log.Error("record result", "execution", e.ID, "index", idx, "error", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	if err := msg.DoubleAck(ctx); err != nil {
		// The item comes back; the record already says done, so the
		// redelivery is acked without work.
		m.log.Warn("ack job", "execution", e.ID, "index", idx, "error", err)
	}
	if terminal(rec.State) {
		w.drop(rec.ID)
		if changed {
			m.purgeJobs(ctx, rec.ID)
		}
	}
}

// finishFile records a file's final outcome (unless it already has one),
// counts it and tells the progress stream, and the execution's end when it
// was the last file. changed is false when the record already had an outcome.
func (m *Manager) finishFile(ctx context.Context, id string, idx int, file File, took time.Duration) (*Execution, bool, error) {
	now := time.Now().UTC()
	file.FinishedAt = &now
	rec, changed, err := m.update(ctx, id, func(x *Execution) bool {
		if idx >= len(x.Files) || fileTerminal(x.Files[idx].State) {
			return false
		}
		if x.State == StateCancelled && file.State != FileDone {
			file.State, file.Error = FileCancelled, "execution cancelled"
		}
		f := &x.Files[idx]
		f.State, f.Error, f.Attempts, f.DurationMS = file.State, file.Error, file.Attempts, file.DurationMS
		f.Steps, f.Detections, f.Output, f.FinishedAt = file.Steps, file.Detections, file.Output, file.FinishedAt
		return true
	})
	if err != nil || !changed {
		return rec, changed, err
	}
	m.metrics.files.WithLabelValues(file.State).Inc()
	if took > 0 {
		m.metrics.fileDur.Observe(took.Seconds())
	}
	fs := fileStateProto(rec.Files[idx].State)
	m.publishFile(rec, idx, fs, rec.Files[idx].Error, time.Duration(rec.Files[idx].DurationMS*float64(time.Millisecond)))
	if terminal(rec.State) && rec.State != StateCancelled {
		m.metrics.executions.WithLabelValues(rec.State).Inc()
		m.publishOverall(rec)
		m.log.Info("execution finished", "execution", rec.ID, "state", rec.State, "done", rec.Done, "failed", rec.Failed)
	}
	return rec, true, nil
}

// maxDeliveriesAdvisory is the subject prefix of JetStream's advisory that a
// consumer stopped delivering a message after MaxDeliver attempts; the
// stream and consumer names follow.
const maxDeliveriesAdvisory = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES."

// maxDeliveries is the part of the advisory the manager reads.
type maxDeliveries struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries int    `json:"deliveries"`
}

// deadLetters records the items JetStream gave up on until the manager stops.
func (m *Manager) deadLetters(sub *nats.Subscription, in <-chan *nats.Msg) {
	defer m.wg.Done()
	defer func() { _ = sub.Unsubscribe() }()
	for {
		select {
		case <-m.ctx.Done():
			return
		case msg := <-in:
			var adv maxDeliveries
			if err := json.Unmarshal(msg.Data, &adv); err != nil || adv.StreamSeq == 0 {
				m.log.Warn("malformed max-deliveries advisory", "error", err)
				continue
			}
			m.deadLetter(m.ctx, adv.StreamSeq, adv.Deliveries)
		}
	}
}

// deadLetter marks the file of the work item at seq failed with the reason
// and removes the item, so its execution completes: an item that crashed
// the process (or failed) on every delivery is not tried again.
func (m *Manager) deadLetter(ctx context.Context, seq uint64, deliveries int) {
	st, err := m.js.Stream(ctx, "JOBS")
	if err != nil {
		m.log.Error("dead-letter: jobs stream", "seq", seq, "error", err)
		return
	}
	raw, err := st.GetMsg(ctx, seq)
	if err != nil {
		// Gone already: another node handled it, or its execution ended.
		return
	}
	item := &busv1.JobItem{}
	if err := proto.Unmarshal(raw.Data, item); err != nil || item.Execution == "" {
		_ = st.DeleteMsg(ctx, seq)
		return
	}
	if !m.deadLetterFile(ctx, item.Execution, int(item.Index), deliveries) {
		// Kept in the stream: the next start's resume finds the file open
		// and the item queued; a later advisory may come again.
		return
	}
	if err := st.DeleteMsg(ctx, seq); err != nil {
		m.log.Warn("dead-letter: remove item", "seq", seq, "error", err)
	}
}

// deadLetterFile records a file failed because running it never gave a
// result in runs tries (the process died each time), so its execution
// completes; false when the record could not be written.
func (m *Manager) deadLetterFile(ctx context.Context, id string, idx, runs int) bool {
	reason := fmt.Sprintf("dead-lettered after %d runs without a result: processing this file crashed or stopped the worker every time", runs)
	m.log.Warn("work item dead-lettered", "execution", id, "index", idx, "runs", runs)
	rec, changed, err := m.finishFile(ctx, id, idx, File{State: FileFailed, Error: reason, Attempts: runs}, 0)
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrInvalid) {
		m.log.Error("dead-letter: record", "execution", id, "index", idx, "error", err)
		return false
	}
	if changed {
		m.metrics.dead.Inc()
	}
	if changed && terminal(rec.State) {
		m.purgeJobs(ctx, rec.ID)
	}
	return true
}

// process runs one file: fetch, decode, pipeline, encode, store. Its
// File carries the outcome; errors a retry may cure set retry.
func (w *worker) process(ctx context.Context, e *Execution, idx int, attempt int) outcome {
	m := w.m
	start := time.Now()
	fail := func(retry bool, format string, args ...any) outcome {
		return outcome{file: File{State: FileFailed, Error: fmt.Sprintf(format, args...), DurationMS: ms(time.Since(start))}, retry: retry}
	}
	data, ok := m.inputs.take(inputKey(e.ID, idx))
	if !ok {
		r, _, err := m.cfg.Blobs.Get(ctx, inputKey(e.ID, idx))
		if err != nil {
			return fail(!errors.Is(err, blob.ErrNotFound), "read upload: %v", err)
		}
		data, err = io.ReadAll(io.LimitReader(r, m.cfg.MaxFileBytes+1))
		r.Close()
		if err != nil {
			return fail(true, "read upload: %v", err)
		}
	}
	// The header says the format and the size: a few compressed bytes can
	// claim a gigapixel, refused here before OpenCV allocates it.
	hdr, err := imagedecode.Check(data, imagedecode.Options{MaxPixels: m.cfg.MaxPixels})
	if err != nil {
		return fail(false, "%v", err)
	}
	ct := hdr.ContentType()
	cp, err := w.pipeline(e)
	if err != nil {
		return fail(transient(err), "pipeline: %v", err)
	}
	reduce := 1
	if hdr.Format == imagedecode.JPEG {
		_, reduce = reducedDecode(cp.roots, hdr.Width, hdr.Height)
	}
	img, _, err := imagedecode.Decode(data, imagedecode.Options{MaxPixels: m.cfg.MaxPixels, Reduce: reduce})
	if err != nil {
		return fail(false, "%v", err)
	}
	defer img.Close()
	// Detections are reported in pixels of the uploaded picture.
	srcW, srcH := hdr.Width, hdr.Height
	if reduce == 1 {
		srcW, srcH = img.Cols(), img.Rows()
	}
	res, runErr := cp.pl.Run(ctx, img)
	if res == nil {
		return fail(transient(runErr), "pipeline: %v", runErr)
	}
	steps := make([]StepTiming, len(res.Steps))
	for i, s := range res.Steps {
		steps[i] = StepTiming{ID: s.ID, Processor: s.Processor, DurationMS: ms(s.Duration)}
		if s.Err != nil {
			steps[i].Error = s.Err.Error()
		}
	}
	if runErr != nil {
		o := fail(transient(runErr), "pipeline: %v", runErr)
		o.file.Steps = steps
		return o
	}
	outCT := ""
	if res.Image != nil && !res.Image.Empty() {
		outCT = "image/jpeg"
		if ct == "image/png" {
			outCT = "image/png"
		}
		buf, err := gocv.IMEncode(gocv.FileExt(extOf(outCT)), *res.Image)
		if err != nil {
			return fail(false, "encode output: %v", err)
		}
		b := buf.GetBytes()
		err = m.cfg.Blobs.Put(ctx, outputKey(e.ID, idx, extOf(outCT)), bytesReader(b), int64(len(b)), outCT)
		buf.Close()
		if err != nil {
			return fail(true, "store output: %v", err)
		}
	}
	fr := fileResult{
		Execution: e.ID, Index: idx, File: e.Files[idx].Name, Pipeline: e.Pipeline,
		Width: srcW, Height: srcH, Detections: detectionsOf(res.Detections, float32(srcW)/float32(max(res.Width, 1)), float32(srcH)/float32(max(res.Height, 1))), Values: res.Values,
		Steps: steps, DurationMS: ms(time.Since(start)), Attempt: attempt,
	}
	if fr.Values == nil {
		fr.Values = map[string]string{}
	}
	if outCT != "" {
		fr.Image = "/api/v1/executions/" + e.ID + "/files/" + itoa(idx) + "/image"
	}
	js, err := json.Marshal(fr)
	if err != nil {
		return fail(false, "encode result: %v", err)
	}
	if err := m.cfg.Blobs.Put(ctx, resultKey(e.ID, idx), bytesReader(js), int64(len(js)), "application/json"); err != nil {
		return fail(true, "store result: %v", err)
	}
	return outcome{file: File{State: FileDone, DurationMS: ms(time.Since(start)), Steps: steps, Detections: len(fr.Detections), Output: outCT}}
}

// transient reports errors a later attempt may not see: a remote processor
// unreachable or slow, or a store hiccup.
func transient(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) {
		return true
	}
	for e := err; e != nil; e = errors.Unwrap(e) {
		if s, ok := status.FromError(e); ok {
			switch s.Code() {
			case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
				return true
			}
		}
	}
	return false
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// fileResult is the result JSON of one file.
type fileResult struct {
	Execution  string            `json:"execution"`
	Index      int               `json:"index"`
	File       string            `json:"file"`
	Pipeline   string            `json:"pipeline"`
	Width      int               `json:"width"`
	Height     int               `json:"height"`
	Detections []detection       `json:"detections"`
	Values     map[string]string `json:"values"`
	Steps      []StepTiming      `json:"steps"`
	DurationMS float64           `json:"duration_ms"`
	Attempt    int               `json:"attempt"`
	Image      string            `json:"image,omitempty"`
}

type detection struct {
	X       float32 `json:"x"`
	Y       float32 `json:"y"`
	W       float32 `json:"w"`
	H       float32 `json:"h"`
	Label   string  `json:"label"`
	Score   float32 `json:"score"`
	ClassID int32   `json:"class_id,omitempty"`
	TrackID int64   `json:"track_id,omitempty"`
}

// detectionsOf converts the engine's boxes (pixels of the decoded picture)
// to pixels of the uploaded one; sx, sy undo a reduced-scale decode.
func detectionsOf(ds []*busv1.Detection, sx, sy float32) []detection {
	out := make([]detection, len(ds))
	for i, d := range ds {
		out[i] = detection{X: d.X * sx, Y: d.Y * sy, W: d.W * sx, H: d.H * sy, Label: d.Label, Score: d.Score, ClassID: d.ClassId, TrackID: d.TrackId}
	}
	return out
}

func fileStateProto(s string) busv1.FileState {
	switch s {
	case FilePending:
		return busv1.FileState_FILE_STATE_PENDING
	case FileRunning:
		return busv1.FileState_FILE_STATE_RUNNING
	case FileDone:
		return busv1.FileState_FILE_STATE_DONE
	case FileFailed:
		return busv1.FileState_FILE_STATE_FAILED
	case FileCancelled:
		return busv1.FileState_FILE_STATE_CANCELLED
	}
	return busv1.FileState_FILE_STATE_UNSPECIFIED
}

// markRunning registers a file's stop function so a cancel can stop it; it
// refuses when the execution was cancelled in this process meanwhile.
func (m *Manager) markRunning(id string, idx int, stop context.CancelFunc) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	r := m.running[id]
	if r == nil {
		r = make(map[int]context.CancelFunc)
		m.running[id] = r
	}
	r[idx] = stop
	return true
}

func (m *Manager) unmarkRunning(id string, idx int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r := m.running[id]; r != nil {
		delete(r, idx)
		if len(r) == 0 {
			delete(m.running, id)
		}
	}
}

// runningFiles lists the files of an execution in work in this process.
func (m *Manager) runningFiles(id string) map[int]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[int]bool, len(m.running[id]))
	for i := range m.running[id] {
		out[i] = true
	}
	return out
}
