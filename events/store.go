package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/imageflowcanvas/imageflow/server/blob"
)

// ErrNotFound is returned for an event id the index does not hold.
var ErrNotFound = errors.New("event not found")

// Query selects events; zero fields match everything.
type Query struct {
	Camera, Label, Zone string
	// Since and Until bound the event's start.
	Since, Until time.Time
	// Limit is the page size; Cursor is the NextCursor of the previous page.
	Limit  int
	Cursor string
}

// Store is the index of the events stream: it reads the stream from its
// start, keeps the newest state of every event in memory, and follows new
// messages. Exported fields are configuration; set them before Start.
type Store struct {
	JetStream jetstream.JetStream
	// Stream is the JetStream stream name; Subject filters it
	// (<prefix>.events.*).
	Stream, Subject string
	// Blobs holds the snapshots; Delete and retention remove them.
	Blobs blob.Store
	// Retention is how long events are kept (the stream's MaxAge); the
	// index and the blob store forget older ones too.
	Retention time.Duration
	Logger    *slog.Logger

	mu   sync.RWMutex
	byID map[string]*entry
	// caughtUp is set once the consumer delivered what the stream held.
	caughtUp bool
	cc       jetstream.ConsumeContext
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

type entry struct {
	Event
	seqs []uint64
}

// Start reads the stream up to its current end before it returns, so a
// query right after a restart sees every stored event, then follows it.
func (s *Store) Start(ctx context.Context) error {
	if s.Logger == nil {
		s.Logger = slog.Default()
	}
	s.byID = make(map[string]*entry)
	stream, err := s.JetStream.Stream(ctx, s.Stream)
	if err != nil {
		return fmt.Errorf("events: stream %s: %w", s.Stream, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("events: stream %s: %w", s.Stream, err)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{s.Subject}})
	if err != nil {
		return fmt.Errorf("events: consumer: %w", err)
	}
	cc, err := cons.Consume(s.apply)
	if err != nil {
		return fmt.Errorf("events: consume: %w", err)
	}
	s.cc = cc
	for {
		s.mu.RLock()
		caught := s.caughtUp
		s.mu.RUnlock()
		if caught || info.State.Msgs == 0 {
			break
		}
		select {
		case <-ctx.Done():
			cc.Stop()
			return fmt.Errorf("events: reading the stream: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	pctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if s.Retention > 0 {
		s.wg.Go(func() { s.pruneLoop(pctx) })
	}
	return nil
}

// Close stops following the stream.
func (s *Store) Close() {
	if s.cc != nil {
		s.cc.Stop()
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
}

func (s *Store) apply(msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		return
	}
	var ev Event
	// Other payloads on the subjects (older versions' camera state
	// messages) are not events and are skipped.
	s.mu.Lock()
	if json.Unmarshal(msg.Data(), &ev) == nil && ev.ID != "" && ev.Camera != "" {
		e := s.byID[ev.ID]
		if e == nil {
			e = &entry{}
			s.byID[ev.ID] = e
		}
		if ev.Zones == nil {
			ev.Zones = []string{}
		}
		e.Event = ev
		e.seqs = append(e.seqs, meta.Sequence.Stream)
	}
	if meta.NumPending == 0 {
		s.caughtUp = true
	}
	s.mu.Unlock()
}

// Get returns one event.
func (s *Store) Get(id string) (Event, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e := s.byID[id]
	if e == nil {
		return Event{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return e.Event, nil
}

// Len is the number of events in the index.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.byID)
}

// before orders events newest first, ties by id.
func before(a, b *Event) bool {
	if !a.Start.Equal(b.Start) {
		return a.Start.After(b.Start)
	}
	return a.ID > b.ID
}

func cursorOf(e *Event) string { return strconv.FormatInt(e.Start.UnixNano(), 10) + "_" + e.ID }

// ErrBadCursor is returned for a cursor no page gave out.
var ErrBadCursor = errors.New("bad cursor")

func parseCursor(c string) (Event, error) {
	ts, id, ok := strings.Cut(c, "_")
	n, err := strconv.ParseInt(ts, 10, 64)
	if !ok || err != nil || id == "" {
		return Event{}, fmt.Errorf("%w %q", ErrBadCursor, c)
	}
	return Event{ID: id, Start: time.Unix(0, n)}, nil
}

// List returns one page of the matching events, newest first, and the
// cursor of the next page ("" on the last).
func (s *Store) List(q Query) ([]Event, string, error) {
	var after *Event
	if q.Cursor != "" {
		c, err := parseCursor(q.Cursor)
		if err != nil {
			return nil, "", err
		}
		after = &c
	}
	s.mu.RLock()
	out := make([]Event, 0, 64)
	for _, e := range s.byID {
		ev := &e.Event
		if q.Camera != "" && ev.Camera != q.Camera || q.Label != "" && ev.Label != q.Label ||
			q.Zone != "" && !contains(ev.Zones, q.Zone) ||
			!q.Since.IsZero() && ev.Start.Before(q.Since) || !q.Until.IsZero() && ev.Start.After(q.Until) ||
			after != nil && !before(after, ev) {
			continue
		}
		out = append(out, *ev)
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b Event) int {
		if before(&a, &b) {
			return -1
		}
		return 1
	})
	if q.Limit > 0 && len(out) > q.Limit {
		return out[:q.Limit], cursorOf(&out[q.Limit-1]), nil
	}
	return out, "", nil
}

// Delete removes an event's messages from the stream, its snapshots from
// the blob store and the event from the index.
func (s *Store) Delete(ctx context.Context, id string) error {
	s.mu.Lock()
	e := s.byID[id]
	if e == nil {
		s.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	delete(s.byID, id)
	s.mu.Unlock()
	return s.remove(ctx, e)
}

func (s *Store) remove(ctx context.Context, e *entry) error {
	stream, err := s.JetStream.Stream(ctx, s.Stream)
	if err != nil {
		return err
	}
	for _, seq := range e.seqs {
		if err := stream.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("delete event message %d: %w", seq, err)
		}
	}
	if s.Blobs != nil {
		for _, k := range []string{e.Snapshot, e.Crop} {
			if k != "" {
				if err := s.Blobs.Delete(ctx, k); err != nil && !errors.Is(err, blob.ErrNotFound) {
					return fmt.Errorf("delete %s: %w", k, err)
				}
			}
		}
	}
	return nil
}

// pruneLoop forgets events older than Retention (the stream drops their
// messages by itself) and deletes their snapshots.
func (s *Store) pruneLoop(ctx context.Context) {
	t := time.NewTicker(min(s.Retention/10, 10*time.Minute))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Prune(ctx, time.Now().Add(-s.Retention))
		}
	}
}

// Prune removes every event that started before cutoff.
func (s *Store) Prune(ctx context.Context, cutoff time.Time) int {
	var old []*entry
	s.mu.Lock()
	for id, e := range s.byID {
		if e.Start.Before(cutoff) {
			old = append(old, e)
			delete(s.byID, id)
		}
	}
	s.mu.Unlock()
	for _, e := range old {
		if err := s.remove(ctx, e); err != nil {
			s.Logger.Warn("pruning event", "event", e.ID, "error", err)
		}
	}
	return len(old)
}
