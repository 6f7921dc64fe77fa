package batch

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/imageflowcanvas/imageflow/server/blob"
	"github.com/imageflowcanvas/imageflow/server/rest"
)

// Routes lists the batch endpoints.
func (m *Manager) Routes() []rest.Route {
	const base = "/api/v1/executions"
	return []rest.Route{
		{Method: "POST", Path: base, Summary: "Start a batch execution: upload images (multipart field files) with pipeline or pipeline_json", Request: "Upload", Response: "ExecutionCreated", Statuses: []int{202, 400, 404, 413}, Handler: m.create,
			Role: rest.RoleOperator, BodyLimit: int64(m.MaxRequestBytes()), StreamBody: true},
		{Method: "GET", Path: base, Summary: "List executions (?state=, ?limit=, ?cursor= or ?page=)", Response: "ExecutionList", Statuses: []int{200, 400}, Handler: m.list,
			Query: []rest.QueryParam{{Name: "state", Description: "Only executions in this state", Schema: map[string]any{"type": "string", "enum": []string{StateQueued, StateRunning, StateDone, StateFailed, StateCancelled}}},
				{Name: "limit", Description: "Page size", Schema: map[string]any{"type": "integer", "minimum": 1, "maximum": maxListLimit, "default": 50}},
				{Name: "cursor", Description: "next_cursor of the previous page"},
				{Name: "page", Description: "1-based page number, instead of cursor", Schema: map[string]any{"type": "integer", "minimum": 1}}}, Role: rest.RoleViewer},
		{Method: "GET", Path: base + "/:id", Summary: "An execution's state with per-file results and timings", Response: "Execution", Statuses: []int{200, 400, 404}, Handler: m.get, Role: rest.RoleViewer},
		{Method: "DELETE", Path: base + "/:id", Summary: "Cancel an execution: running files finish or stop, the rest never start; ?purge=true deletes a finished execution and all its data", Response: "Execution", Statuses: []int{200, 204, 400, 404, 409}, Handler: m.cancelHandler,
			Query: []rest.QueryParam{{Name: "purge", Description: "Delete a finished execution and all its data (answers 204)", Schema: map[string]any{"type": "boolean"}}}, Role: rest.RoleOperator},
		{Method: "GET", Path: base + "/:id/events", Summary: "Progress as Server-Sent Events: current state first, then live, until finished", Response: "ExecutionProgress", ResponseTypes: []string{"text/event-stream"}, Statuses: []int{200, 400, 404}, Handler: m.events, Role: rest.RoleViewer, TokenQuery: true},
		{Method: "GET", Path: base + "/:id/ws", Summary: "Progress over WebSocket: current state first, then live, until finished", Response: "ExecutionProgress", Statuses: []int{101, 400, 404, 426}, Handler: m.ws, Role: rest.RoleViewer, TokenQuery: true},
		{Method: "GET", Path: base + "/:id/files/:index", Summary: "One file's result: detections, values, timings", Response: "FileResult", Statuses: []int{200, 400, 404, 409}, Handler: m.fileResult, Role: rest.RoleViewer},
		{Method: "GET", Path: base + "/:id/files/:index/image", Summary: "One file's output image (JPEG or PNG)", ResponseTypes: []string{"image/jpeg", "image/png"}, Statuses: []int{200, 400, 404, 409}, Handler: m.fileImage, Role: rest.RoleViewer},
		{Method: "GET", Path: base + "/:id/results.zip", Summary: "Every output image and result JSON as a zip", ResponseTypes: []string{"application/zip"}, Statuses: []int{200, 400, 404}, Handler: m.resultsZip, Role: rest.RoleViewer},
	}
}

type listBody struct {
	Executions []Summary `json:"executions"`
	// NextCursor continues the list (?cursor=); empty on the last page.
	NextCursor string `json:"next_cursor,omitempty"`
	Total      int    `json:"total"`
}

const maxListLimit = 500

// list handles GET /api/v1/executions, newest first.
func (m *Manager) list(c *fiber.Ctx) error {
	state := c.Query("state")
	switch state {
	case "", StateQueued, StateRunning, StateDone, StateFailed, StateCancelled:
	default:
		return writeError(c, invalidf("state %q: want queued, running, done, failed or cancelled", state))
	}
	limit, err := queryInt(c, "limit", 50, 1, maxListLimit)
	if err != nil {
		return writeError(c, err)
	}
	page, err := queryInt(c, "page", 0, 1, 1<<30)
	if err != nil {
		return writeError(c, err)
	}
	cursor := c.Query("cursor")
	if cursor != "" && page != 0 {
		return writeError(c, invalidf("use either cursor or page, not both"))
	}
	ctx := c.UserContext()
	lister, err := m.kv.ListKeys(ctx)
	if err != nil {
		return writeError(c, fmt.Errorf("executions store: %w", err))
	}
	var ids []string
	for k := range lister.Keys() {
		ids = append(ids, k)
	}
	// Ids start with their creation time in fixed-width hex: descending
	// order is newest first, and a cursor is simply the last id shown.
	sort.Sort(sort.Reverse(sort.StringSlice(ids)))
	var all []Summary
	for _, id := range ids {
		if cursor != "" && id >= cursor {
			continue
		}
		e, _, err := m.load(ctx, id)
		if err != nil {
			continue // deleted meanwhile
		}
		if state != "" && e.State != state {
			continue
		}
		all = append(all, e.Summary)
	}
	body := listBody{Total: len(all)}
	from := 0
	if page > 0 {
		from = (page - 1) * limit
	}
	if from < len(all) {
		to := min(from+limit, len(all))
		body.Executions = all[from:to]
		if cursor != "" || page == 0 {
			if to < len(all) {
				body.NextCursor = all[to-1].ID
			}
		}
	}
	if body.Executions == nil {
		body.Executions = []Summary{}
	}
	return c.JSON(body)
}

func queryInt(c *fiber.Ctx, name string, def, lo, hi int) (int, error) {
	s := c.Query(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, invalidf("%s %q: want an integer from %d to %d", name, s, lo, hi)
	}
	return n, nil
}

// view overlays the files running in this process on the record, which
// stores only finished states.
func (m *Manager) view(e *Execution) *Execution {
	running := m.runningFiles(e.ID)
	for i := range e.Files {
		if running[i] && e.Files[i].State == FilePending {
			e.Files[i].State = FileRunning
		}
	}
	if e.State == StateQueued && len(running) > 0 {
		e.State = StateRunning
	}
	return e
}

// get handles GET /api/v1/executions/:id.
func (m *Manager) get(c *fiber.Ctx) error {
	e, _, err := m.load(c.UserContext(), c.Params("id"))
	if err != nil {
		return writeError(c, err)
	}
	return c.JSON(m.view(e))
}

// Cancel stops an execution: files not started never start, running files
// in this process are stopped, and the record's cancelled state is final,
// so neither a restart nor a redelivered work item resumes it.
func (m *Manager) Cancel(ctx context.Context, id string) (*Execution, error) {
	var finished string
	running := m.runningFiles(id)
	e, changed, err := m.update(ctx, id, func(x *Execution) bool {
		if terminal(x.State) {
			finished = x.State
			return false
		}
		now := time.Now().UTC()
		x.State, x.FinishedAt = StateCancelled, &now
		for i := range x.Files {
			if x.Files[i].State == FilePending && !running[i] {
				x.Files[i].State, x.Files[i].Error = FileCancelled, "execution cancelled"
			}
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	if !changed {
		if finished == StateCancelled {
			return e, nil
		}
		return nil, fmt.Errorf("%w: execution %q already %s", ErrConflict, id, finished)
	}
	m.mu.Lock()
	for _, stop := range m.running[id] {
		stop()
	}
	m.mu.Unlock()
	// The rest of its work items leave the queue; one a worker already
	// holds is acked without work because the record says cancelled.
	m.purgeJobs(ctx, id)
	m.metrics.executions.WithLabelValues(StateCancelled).Inc()
	m.publishOverall(e)
	m.log.Info("execution cancelled", "execution", id)
	return e, nil
}

func (m *Manager) cancelHandler(c *fiber.Ctx) error {
	if c.QueryBool("purge") {
		if err := m.Purge(c.UserContext(), c.Params("id")); err != nil {
			return writeError(c, err)
		}
		return c.SendStatus(fiber.StatusNoContent)
	}
	e, err := m.Cancel(c.UserContext(), c.Params("id"))
	if err != nil {
		return writeError(c, err)
	}
	return c.JSON(m.view(e))
}

// fileOf loads an execution and checks the :index parameter.
func (m *Manager) fileOf(c *fiber.Ctx) (*Execution, *File, error) {
	e, _, err := m.load(c.UserContext(), c.Params("id"))
	if err != nil {
		return nil, nil, err
	}
	s := c.Params("index")
	i, err := strconv.Atoi(s)
	if err != nil || i < 0 {
		return nil, nil, invalidf("file index %q: want a number from 0", s)
	}
	if i >= len(e.Files) {
		return nil, nil, fmt.Errorf("%w: file %d (execution %s has %d files)", ErrNotFound, i, e.ID, len(e.Files))
	}
	f := &e.Files[i]
	if f.State != FileDone {
		msg := fmt.Sprintf("file %d is %s", i, f.State)
		if f.Error != "" {
			msg += ": " + f.Error
		}
		return nil, nil, fmt.Errorf("%w: %s", ErrConflict, msg)
	}
	return e, f, nil
}

func (m *Manager) sendBlob(c *fiber.Ctx, key string) error {
	r, info, err := m.cfg.Blobs.Get(c.UserContext(), key)
	if err != nil {
		if errors.Is(err, blob.ErrNotFound) {
			return writeError(c, fmt.Errorf("%w: %s", ErrNotFound, key))
		}
		return writeError(c, err)
	}
	if info.ContentType != "" {
		c.Set(fiber.HeaderContentType, info.ContentType)
	}
	// SetBodyStream closes r once sent.
	c.Context().SetBodyStream(r, int(info.Size))
	return nil
}

// fileResult handles GET /api/v1/executions/:id/files/:index.
func (m *Manager) fileResult(c *fiber.Ctx) error {
	e, f, err := m.fileOf(c)
	if err != nil {
		return writeError(c, err)
	}
	return m.sendBlob(c, resultKey(e.ID, f.Index))
}

// fileImage handles GET /api/v1/executions/:id/files/:index/image.
func (m *Manager) fileImage(c *fiber.Ctx) error {
	e, f, err := m.fileOf(c)
	if err != nil {
		return writeError(c, err)
	}
	if f.Output == "" {
		return writeError(c, fmt.Errorf("%w: file %d: the pipeline produced no image", ErrNotFound, f.Index))
	}
	name := strings.TrimSuffix(f.Name, path.Ext(f.Name)) + extOf(f.Output)
	c.Set(fiber.HeaderContentDisposition, fmt.Sprintf(`inline; filename="%s"`, name))
	return m.sendBlob(c, outputKey(e.ID, f.Index, extOf(f.Output)))
}

// resultsZip handles GET /api/v1/executions/:id/results.zip: execution.json,
// results/NNNN.json and outputs/NNNN_<name> for every finished file. An
// unfinished execution gives what is finished so far.
func (m *Manager) resultsZip(c *fiber.Ctx) error {
	e, _, err := m.load(c.UserContext(), c.Params("id"))
	if err != nil {
		return writeError(c, err)
	}
	c.Set(fiber.HeaderContentType, "application/zip")
	c.Set(fiber.HeaderContentDisposition, fmt.Sprintf(`attachment; filename="%s-results.zip"`, e.ID))
	ctx := m.ctx
	c.Context().SetBodyStreamWriter(func(bw *bufio.Writer) {
		zw := zip.NewWriter(bw)
		defer func() {
			_ = zw.Close()
			_ = bw.Flush()
		}()
		rec, _ := json.MarshalIndent(e, "", "  ")
		// Dated when the record was read; Create would leave 1980.
		if w, err := zw.CreateHeader(&zip.FileHeader{Name: "execution.json", Method: zip.Deflate, Modified: time.Now()}); err == nil {
			_, _ = w.Write(rec)
		}
		for i := range e.Files {
			f := &e.Files[i]
			if f.State != FileDone {
				continue
			}
			base := fmt.Sprintf("%04d_%s", f.Index, f.Name)
			if err := m.zipBlob(ctx, zw, resultKey(e.ID, f.Index), "results/"+fmt.Sprintf("%04d.json", f.Index), zip.Deflate); err != nil {
				m.log.Warn("zip result", "execution", e.ID, "index", f.Index, "error", err)
				return
			}
			if f.Output != "" {
				name := strings.TrimSuffix(base, path.Ext(base)) + extOf(f.Output)
				// Images are compressed already.
				if err := m.zipBlob(ctx, zw, outputKey(e.ID, f.Index, extOf(f.Output)), "outputs/"+name, zip.Store); err != nil {
					m.log.Warn("zip output", "execution", e.ID, "index", f.Index, "error", err)
					return
				}
			}
		}
	})
	return nil
}

func (m *Manager) zipBlob(ctx context.Context, zw *zip.Writer, key, name string, method uint16) error {
	r, info, err := m.cfg.Blobs.Get(ctx, key)
	if err != nil {
		return err
	}
	defer r.Close()
	w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: method, Modified: info.ModTime})
	if err != nil {
		return err
	}
	_, err = io.Copy(w, r)
	return err
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

func itoa(i int) string { return strconv.Itoa(i) }
