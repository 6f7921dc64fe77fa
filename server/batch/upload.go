package batch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/processors"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// created is the 202 answer to an upload.
type created struct {
	ID       string `json:"id"`
	State    string `json:"state"`
	Pipeline string `json:"pipeline"`
	Total    int    `json:"total"`
	// Links a client follows next.
	Status  string `json:"status"`
	Events  string `json:"events"`
	WS      string `json:"ws"`
	Results string `json:"results"`
}

// upload is a parsed upload request whose files are in the blob store
// already.
type upload struct {
	pipeline, pipelineJSON string
	files                  []File
}

// maxFieldBytes bounds the non-file form fields (an inline pipeline).
const maxFieldBytes = 1 << 20

// body is the request body as a stream: the HTTP server hands upload
// routes the connection's stream instead of reading the body into memory.
// A chunked body has no Content-Length the server could check up front, so
// the stream is capped at MaxRequestBytes here.
func (m *Manager) body(c *fiber.Ctx) io.Reader {
	if c.Request().IsBodyStream() {
		return &cappedReader{r: c.Context().RequestBodyStream(), left: int64(m.cfg.RequestBytes), limit: m.cfg.RequestBytes}
	}
	return bytes.NewReader(c.Body())
}

// cappedReader fails with ErrTooLarge once more than limit bytes were read.
type cappedReader struct {
	r     io.Reader
	left  int64
	limit int
}

func (c *cappedReader) Read(p []byte) (int, error) {
	if c.left < 0 {
		return 0, fmt.Errorf("%w: upload over %d bytes (MaxRequestBytes)", ErrTooLarge, c.limit)
	}
	if int64(len(p)) > c.left+1 {
		p = p[:c.left+1]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if c.left < 0 {
		return n, fmt.Errorf("%w: upload over %d bytes (MaxRequestBytes)", ErrTooLarge, c.limit)
	}
	return n, err
}

// partError keeps a size error's status; anything else is a bad body.
func partError(err error, format string, args ...any) error {
	if errors.Is(err, ErrTooLarge) {
		return err
	}
	return invalidf(format+": %v", append(args, err)...)
}

// readUpload reads the multipart body part by part, enforcing the limits as
// it goes, and stores each file in the blob store as soon as it is read, so
// a request holds at most one file in memory. It does not use
// mime/multipart's ReadForm, which caps a form at 1000 parts (below MaxFiles
// plus the pipeline field) and may spill to temp files. On error the caller
// removes what was stored.
func (m *Manager) readUpload(c *fiber.Ctx, id string) (*upload, error) {
	mt, params, err := mime.ParseMediaType(c.Get(fiber.HeaderContentType))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return nil, invalidf("want a multipart/form-data body with images under \"files\" (Content-Type %q)", c.Get(fiber.HeaderContentType))
	}
	mr := multipart.NewReader(m.body(c), params["boundary"])
	u := &upload{}
	ctx := c.UserContext()
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return u, nil
		}
		if err != nil {
			return nil, partError(err, "malformed multipart body")
		}
		switch name := part.FormName(); name {
		case "files":
			if len(u.files) == m.cfg.MaxFiles {
				return nil, fmt.Errorf("%w: more than %d files, at most %d per execution (MaxFiles)", ErrTooLarge, m.cfg.MaxFiles, m.cfg.MaxFiles)
			}
			i := len(u.files)
			data, err := io.ReadAll(io.LimitReader(part, m.cfg.MaxFileBytes+1))
			if err != nil {
				return nil, partError(err, "file #%d", i)
			}
			if int64(len(data)) > m.cfg.MaxFileBytes {
				return nil, fmt.Errorf("%w: file #%d %q is over %d bytes, at most %d per file (MaxFileBytes)", ErrTooLarge, i, part.FileName(), m.cfg.MaxFileBytes, m.cfg.MaxFileBytes)
			}
			// The content is sniffed: the client's claim is not trusted, and a
			// non-image fails at decode anyway.
			ct := http.DetectContentType(data)
			if err := m.cfg.Blobs.Put(ctx, inputKey(id, i), bytes.NewReader(data), int64(len(data)), ct); err != nil {
				return nil, fmt.Errorf("store file #%d: %w", i, err)
			}
			m.inputs.put(inputKey(id, i), data)
			u.files = append(u.files, File{Index: i, Name: cleanName(part.FileName(), i), Size: int64(len(data)), ContentType: ct, State: FilePending})
		case "pipeline", "pipeline_json":
			v, err := io.ReadAll(io.LimitReader(part, maxFieldBytes+1))
			if err != nil {
				return nil, partError(err, "field %s", name)
			}
			if len(v) > maxFieldBytes {
				return nil, fmt.Errorf("%w: field %s over %d bytes", ErrTooLarge, name, maxFieldBytes)
			}
			if name == "pipeline" {
				u.pipeline = strings.TrimSpace(string(v))
			} else {
				u.pipelineJSON = strings.TrimSpace(string(v))
			}
		default:
			return nil, invalidf("unknown form field %q: send images under \"files\" and a pipeline under \"pipeline\" or \"pipeline_json\"", name)
		}
	}
}

// create handles POST /api/v1/executions.
func (m *Manager) create(c *fiber.Ctx) error {
	if m.ctx.Err() != nil {
		return writeError(c, ErrClosed)
	}
	id := newID()
	e, err := m.createExecution(c, id)
	if err != nil {
		m.removeBlobs(id)
		if c.Request().IsBodyStream() {
			// The rest of the body is not read: it must not be taken for
			// the next request on this connection.
			c.Context().SetConnectionClose()
		}
		return writeError(c, err)
	}
	base := "/api/v1/executions/" + id
	return c.Status(fiber.StatusAccepted).JSON(created{ID: id, State: e.State, Pipeline: e.Pipeline, Total: len(e.Files),
		Status: base, Events: base + "/events", WS: base + "/ws", Results: base + "/results.zip"})
}

func (m *Manager) createExecution(c *fiber.Ctx, id string) (*Execution, error) {
	u, err := m.readUpload(c, id)
	if err != nil {
		return nil, err
	}
	ctx := c.UserContext()
	p, err := m.pipelineOf(ctx, u.pipeline, u.pipelineJSON)
	if err != nil {
		return nil, err
	}
	if len(u.files) == 0 {
		return nil, invalidf("no files: send one or more images under the form field \"files\"")
	}
	spec, err := specJSON.Marshal(p)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	e := &Execution{Summary: Summary{ID: id, Pipeline: p.Id, State: StateQueued, CreatedAt: now}, Spec: spec, Files: u.files}
	e.recount(now)
	data, err := jsonMarshal(e)
	var rev uint64
	if err == nil {
		rev, err = m.kv.Create(ctx, id, data)
	}
	if err != nil {
		return nil, fmt.Errorf("executions store: %w", err)
	}
	m.remember(e, rev)
	// The record exists before its work items, so a worker never sees an
	// item without its execution; a crash between the two is repaired by
	// resume (it requeues the files still pending).
	if err := m.enqueue(ctx, e, nil); err != nil {
		m.log.Error("enqueue failed; resume will retry", "execution", id, "error", err)
	}
	m.metrics.executions.WithLabelValues("created").Inc()
	m.publishOverall(e)
	m.log.Info("execution created", "execution", id, "pipeline", p.Id, "files", len(u.files))
	return e, nil
}

// pipelineOf resolves the pipeline form field (a stored pipeline's id) or
// pipeline_json (an inline pipeline), exactly one of them.
func (m *Manager) pipelineOf(ctx context.Context, id, inline string) (*busv1.Pipeline, error) {
	switch {
	case id == "" && inline == "":
		return nil, invalidf("no pipeline: send a pipeline id in \"pipeline\" or an inline pipeline in \"pipeline_json\"")
	case id != "" && inline != "":
		return nil, invalidf("send either \"pipeline\" or \"pipeline_json\", not both")
	}
	var p *busv1.Pipeline
	if id != "" {
		if err := bus.ValidateToken(id); err != nil {
			return nil, invalidf("pipeline id %q: %v", id, err)
		}
		if m.cfg.Pipelines == nil {
			return nil, fmt.Errorf("%w: %q (no stored pipelines configured)", ErrPipelineNotFound, id)
		}
		stored, err := m.cfg.Pipelines(ctx, id)
		if err != nil {
			if errors.Is(err, ErrPipelineNotFound) {
				return nil, fmt.Errorf("%w: %q", ErrPipelineNotFound, id)
			}
			return nil, err
		}
		p = proto.Clone(stored).(*busv1.Pipeline)
	} else {
		p = &busv1.Pipeline{}
		if err := (protojson.UnmarshalOptions{}).Unmarshal([]byte(inline), p); err != nil {
			return nil, invalidf("pipeline_json: malformed JSON: %v", err)
		}
		if p.Id == "" {
			p.Id = "inline"
		}
		if err := bus.ValidateToken(p.Id); err != nil {
			return nil, invalidf("pipeline_json: id %q: %v", p.Id, err)
		}
	}
	// Stored pipelines were validated when saved; the registry may have
	// changed since, and inline ones never were.
	if err := m.cfg.Registry.ValidatePipeline(p); err != nil {
		return nil, fmt.Errorf("%w: pipeline %q: %w", ErrInvalid, p.Id, err)
	}
	if m.cfg.RemoteFactory == nil {
		for _, s := range p.Steps {
			if processors.IsRemote(s.Processor) {
				return nil, fmt.Errorf("%w: pipeline %q: %w", ErrInvalid, p.Id, &processors.StepError{Step: s.Id, Err: processors.ErrNoRemote})
			}
		}
	}
	return p, nil
}

// maxNameBytes bounds a file's display name.
const maxNameBytes = 200

// keepTail keeps the last max bytes of s (the end of a file name tells more
// than its start), starting on a character boundary so no UTF-8 character
// is split.
func keepTail(s string, max int) string {
	if len(s) <= max {
		return s
	}
	i := len(s) - max
	for i < len(s) && !utf8.RuneStart(s[i]) {
		i++
	}
	return s[i:]
}

// cleanName keeps a display name without directories or control characters.
func cleanName(name string, i int) string {
	name = filepath.Base(strings.ReplaceAll(name, "\\", "/"))
	name = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '"' {
			return -1
		}
		return r
	}, name)
	if name == "" || name == "." || name == ".." || name == "/" {
		return "file-" + strconv.Itoa(i)
	}
	return keepTail(strings.ToValidUTF8(name, ""), maxNameBytes)
}

// removeBlobs deletes what a failed upload stored (best effort).
func (m *Manager) removeBlobs(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	infos, err := m.cfg.Blobs.List(ctx, "executions/"+id+"/")
	if err != nil {
		return
	}
	for _, in := range infos {
		_ = m.cfg.Blobs.Delete(ctx, in.Key)
	}
}

// enqueue publishes one work item per file that is not finished (only
// indexes when non-nil). Message ids make a republish within JetStream's
// duplicate window a no-op.
func (m *Manager) enqueue(ctx context.Context, e *Execution, only []int) error {
	subject := m.subj.Jobs(e.ID)
	item := &busv1.JobItem{Execution: e.ID, Pipeline: e.Pipeline}
	var futures []jetstream.PubAckFuture
	publish := func(f *File) error {
		item.Index, item.FileName, item.ObjectKey = uint32(f.Index), f.Name, inputKey(e.ID, f.Index)
		data, err := proto.Marshal(item)
		if err != nil {
			return err
		}
		fut, err := m.js.PublishAsync(subject, data, jetstream.WithMsgID(e.ID+"."+strconv.Itoa(f.Index)))
		if err != nil {
			return err
		}
		futures = append(futures, fut)
		return nil
	}
	if only != nil {
		for _, i := range only {
			if err := publish(&e.Files[i]); err != nil {
				return err
			}
		}
	} else {
		for i := range e.Files {
			if !fileTerminal(e.Files[i].State) {
				if err := publish(&e.Files[i]); err != nil {
					return err
				}
			}
		}
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("publish job: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
