package batch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/bus"
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

// create handles POST /api/v1/executions.
func (m *Manager) create(c *fiber.Ctx) error {
	if m.ctx.Err() != nil {
		return writeError(c, ErrClosed)
	}
	form, err := c.MultipartForm()
	if err != nil {
		return writeError(c, invalidf("want a multipart/form-data body with files under \"files\": %v", err))
	}
	p, err := m.pipelineOf(c.UserContext(), form)
	if err != nil {
		return writeError(c, err)
	}
	files := form.File["files"]
	if len(files) == 0 {
		return writeError(c, invalidf("no files: send one or more images under the form field \"files\""))
	}
	if len(files) > m.cfg.MaxFiles {
		return writeError(c, fmt.Errorf("%w: %d files, at most %d per execution (MaxFiles)", ErrTooLarge, len(files), m.cfg.MaxFiles))
	}
	for i, fh := range files {
		if fh.Size > m.cfg.MaxFileBytes {
			return writeError(c, fmt.Errorf("%w: file #%d %q has %d bytes, at most %d per file (MaxFileBytes)", ErrTooLarge, i, fh.Filename, fh.Size, m.cfg.MaxFileBytes))
		}
	}
	spec, err := specJSON.Marshal(p)
	if err != nil {
		return writeError(c, err)
	}
	id := newID()
	now := time.Now().UTC()
	e := &Execution{ID: id, Pipeline: p.Id, State: StateQueued, CreatedAt: now, Spec: spec, Files: make([]File, len(files))}
	ctx := c.UserContext()
	for i, fh := range files {
		ct, err := m.putInput(ctx, id, i, fh)
		if err != nil {
			m.removeBlobs(id)
			return writeError(c, err)
		}
		e.Files[i] = File{Index: i, Name: cleanName(fh.Filename, i), Size: fh.Size, ContentType: ct, State: FilePending}
	}
	e.recount(now)
	data, err := jsonMarshal(e)
	if err == nil {
		_, err = m.kv.Create(ctx, id, data)
	}
	if err != nil {
		m.removeBlobs(id)
		return writeError(c, fmt.Errorf("executions store: %w", err))
	}
	// The record exists before its work items, so a worker never sees an
	// item without its execution; a crash between the two is repaired by
	// resume (it requeues the files still pending).
	if err := m.enqueue(ctx, e, nil); err != nil {
		m.log.Error("enqueue failed; resume will retry", "execution", id, "error", err)
	}
	m.metrics.executions.WithLabelValues("created").Inc()
	m.publishOverall(e)
	m.log.Info("execution created", "execution", id, "pipeline", p.Id, "files", len(files))
	base := "/api/v1/executions/" + id
	return c.Status(fiber.StatusAccepted).JSON(created{ID: id, State: e.State, Pipeline: p.Id, Total: len(files),
		Status: base, Events: base + "/events", WS: base + "/ws", Results: base + "/results.zip"})
}

// pipelineOf reads the pipeline form field (a stored pipeline's id) or
// pipeline_json (an inline pipeline), exactly one of them.
func (m *Manager) pipelineOf(ctx context.Context, form *multipart.Form) (*busv1.Pipeline, error) {
	id, inline := first(form.Value["pipeline"]), first(form.Value["pipeline_json"])
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
	return p, nil
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return strings.TrimSpace(v[0])
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
	if name == "" || name == "." || name == "/" {
		return "file-" + strconv.Itoa(i)
	}
	if len(name) > 200 {
		name = name[len(name)-200:]
	}
	return name
}

// putInput stores an uploaded file and returns its sniffed content type
// (the client's claim is not trusted: a non-image fails at decode anyway).
func (m *Manager) putInput(ctx context.Context, id string, i int, fh *multipart.FileHeader) (string, error) {
	f, err := fh.Open()
	if err != nil {
		return "", invalidf("file #%d: %v", i, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, m.cfg.MaxFileBytes+1))
	if err != nil {
		return "", invalidf("file #%d: %v", i, err)
	}
	ct := http.DetectContentType(data)
	if err := m.cfg.Blobs.Put(ctx, inputKey(id, i), bytes.NewReader(data), int64(len(data)), ct); err != nil {
		return "", fmt.Errorf("store file #%d: %w", i, err)
	}
	m.inputs.put(inputKey(id, i), data)
	return ct, nil
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
