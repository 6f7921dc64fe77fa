package batch

import (
	"bufio"
	"context"
	"strings"
	"time"

	"github.com/gofiber/contrib/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/bus"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// progressJSON is how clients see a busv1.Progress: proto field names,
// zero values included so every message has the same keys.
var progressJSON = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// publishFile announces one file's change with the execution's counters.
func (m *Manager) publishFile(e *Execution, idx int, fs busv1.FileState, errMsg string, dur time.Duration) {
	st := e.State
	if st == StateQueued && fs == busv1.FileState_FILE_STATE_RUNNING {
		st = StateRunning
	}
	p := m.progressOf(e)
	p.State, p.Index, p.FileState, p.Error, p.DurationNs = st, uint32(idx), fs, errMsg, int64(dur)
	m.publish(p)
}

// publishOverall announces the execution's state; file_state unspecified
// marks a message about the whole execution.
func (m *Manager) publishOverall(e *Execution) { m.publish(m.progressOf(e)) }

func (m *Manager) progressOf(e *Execution) *busv1.Progress {
	p := &busv1.Progress{Execution: e.ID, State: e.State, Done: uint32(e.Done), Failed: uint32(e.Failed),
		Total: uint32(e.Total), Percent: e.Percent, UnixNano: time.Now().UnixNano()}
	if e.FinishedAt != nil {
		p.DurationNs = int64(e.FinishedAt.Sub(e.CreatedAt))
	}
	return p
}

func (m *Manager) publish(p *busv1.Progress) {
	if err := bus.Publish(m.cfg.Bus.Conn(), m.subj.Progress(p.Execution), p); err != nil {
		m.log.Warn("publish progress", "execution", p.Execution, "error", err)
	}
}

// snapshot is what a client connecting now is told first: every file that
// is not pending, then the execution as a whole.
func (m *Manager) snapshot(e *Execution) []*busv1.Progress {
	running := m.runningFiles(e.ID)
	var out []*busv1.Progress
	for i := range e.Files {
		f := &e.Files[i]
		fs := fileStateProto(f.State)
		if f.State == FilePending && running[i] {
			fs = busv1.FileState_FILE_STATE_RUNNING
		}
		if fs == busv1.FileState_FILE_STATE_PENDING {
			continue
		}
		p := m.progressOf(e)
		p.Index, p.FileState, p.Error, p.DurationNs = uint32(i), fs, f.Error, int64(f.DurationMS*float64(time.Millisecond))
		out = append(out, p)
	}
	return append(out, m.progressOf(e))
}

// follow sends the current state of an execution, then its live progress,
// until the execution is finished, ctx ends or send fails. It subscribes
// before reading the record so no change falls between the two.
func (m *Manager) follow(ctx context.Context, id string, send func([]byte) error, keepalive func() error) error {
	ch := make(chan *nats.Msg, 1024)
	sub, err := m.cfg.Bus.Conn().ChanSubscribe(m.subj.Progress(id), ch)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	e, _, err := m.load(ctx, id)
	if err != nil {
		return err
	}
	var seen progressFloor
	for _, p := range m.snapshot(e) {
		seen.raise(p)
		b, _ := progressJSON.Marshal(p)
		if err := send(b); err != nil {
			return err
		}
	}
	if terminal(e.State) {
		return nil
	}
	// The record is checked now and then: a progress message lost to a slow
	// subscriber must not leave the client waiting for an end that passed.
	check := time.NewTicker(2 * time.Second)
	defer check.Stop()
	p := &busv1.Progress{}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case msg := <-ch:
			p.Reset()
			if err := proto.Unmarshal(msg.Data, p); err != nil {
				continue
			}
			seen.raise(p)
			b, _ := progressJSON.Marshal(p)
			if err := send(b); err != nil {
				return err
			}
			if terminal(p.State) {
				return nil
			}
		case <-check.C:
			e, _, err := m.load(ctx, id)
			if err != nil {
				return err
			}
			if terminal(e.State) {
				final := m.progressOf(e)
				seen.raise(final)
				b, _ := progressJSON.Marshal(final)
				return send(b)
			}
			if keepalive != nil {
				if err := keepalive(); err != nil {
					return err
				}
			}
		}
	}
}

// progressFloor keeps what one client was told from going back. Workers on
// several nodes publish a file's start with the counters they read when they
// took it, so a start can arrive after another worker's later finish; the
// execution's counters and state only ever grow, so a client is never shown
// less than it has already seen.
type progressFloor struct {
	done, failed uint32
	percent      float64
	stateRank    int
}

// stateRank orders execution states as they can follow one another.
func stateRank(state string) int {
	switch state {
	case StateQueued:
		return 0
	case StateRunning:
		return 1
	}
	return 2 // terminal
}

func (f *progressFloor) raise(p *busv1.Progress) {
	f.done, p.Done = max(f.done, p.Done), max(f.done, p.Done)
	f.failed, p.Failed = max(f.failed, p.Failed), max(f.failed, p.Failed)
	f.percent, p.Percent = max(f.percent, p.Percent), max(f.percent, p.Percent)
	if r := stateRank(p.State); r >= f.stateRank {
		f.stateRank = r
	} else if f.stateRank == 1 {
		p.State = StateRunning
	}
}

// events handles GET /api/v1/executions/:id/events (Server-Sent Events).
func (m *Manager) events(c *fiber.Ctx) error {
	// Copied: the stream outlives the handler, and fiber reuses the
	// request buffer its params point into.
	id := strings.Clone(c.Params("id"))
	if _, _, err := m.load(c.UserContext(), id); err != nil {
		return writeError(c, err)
	}
	c.Set(fiber.HeaderContentType, "text/event-stream")
	c.Set(fiber.HeaderCacheControl, "no-cache")
	c.Set(fiber.HeaderConnection, "keep-alive")
	c.Set("X-Accel-Buffering", "no")
	ctx := m.ctx
	c.Context().SetBodyStreamWriter(func(w *bufio.Writer) {
		send := func(b []byte) error {
			w.WriteString("event: progress\ndata: ")
			w.Write(b)
			w.WriteString("\n\n")
			return w.Flush()
		}
		keepalive := func() error {
			w.WriteString(": keepalive\n\n")
			return w.Flush()
		}
		if err := m.follow(ctx, id, send, keepalive); err != nil && ctx.Err() == nil {
			m.log.Debug("sse stream ended", "execution", id, "error", err)
		}
		w.WriteString("event: end\ndata: {}\n\n")
		_ = w.Flush()
	})
	return nil
}

// ws handles GET /api/v1/executions/:id/ws: the same messages as events,
// one JSON text message each; the server closes with 1000 when the
// execution is finished.
func (m *Manager) ws(c *fiber.Ctx) error {
	// Copied: the stream outlives the handler, and fiber reuses the
	// request buffer its params point into.
	id := strings.Clone(c.Params("id"))
	if _, _, err := m.load(c.UserContext(), id); err != nil {
		return writeError(c, err)
	}
	if !websocket.IsWebSocketUpgrade(c) {
		return writeError(c, fiber.NewError(fiber.StatusUpgradeRequired, "this endpoint speaks WebSocket; use /events for Server-Sent Events"))
	}
	return m.wsHandler(c)
}

func (m *Manager) serveWS(conn *websocket.Conn) {
	id := conn.Params("id")
	ctx, cancel := context.WithCancel(m.ctx)
	defer cancel()
	// Reading is how a closed peer is noticed; clients send nothing else.
	go func() {
		defer cancel()
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
		}
	}()
	err := m.follow(ctx, id, func(b []byte) error {
		_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		return conn.WriteMessage(websocket.TextMessage, b)
	}, func() error {
		_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		return conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(10*time.Second))
	})
	code, text := websocket.CloseNormalClosure, "execution finished"
	if err != nil {
		code, text = websocket.CloseGoingAway, "stream ended"
	}
	_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(time.Second))
}
