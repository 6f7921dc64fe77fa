package server

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// kvStore keeps protobuf records in one JetStream KV bucket, keyed by id.
type kvStore[T proto.Message] struct {
	kv   jetstream.KeyValue
	newT func() T
	noun string
}

// getAttempt bounds one read: a request to a replicated bucket whose Raft
// leader is being elected gets no answer at all, so get asks again rather
// than waiting out its whole context on the first request.
const getAttempt = time.Second

func (s *kvStore[T]) get(ctx context.Context, id string) (T, uint64, error) {
	var zero T
	var e jetstream.KeyValueEntry
	var err error
	if _, ok := ctx.Deadline(); !ok {
		// What one request without a deadline waited before.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	for {
		actx, cancel := context.WithTimeout(ctx, getAttempt)
		e, err = s.kv.Get(actx, id)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			break
		}
	}
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return zero, 0, fmt.Errorf("%s %q: %w", s.noun, id, ErrNotFound)
	}
	if err != nil {
		return zero, 0, err
	}
	m := s.newT()
	if err := proto.Unmarshal(e.Value(), m); err != nil {
		return zero, 0, fmt.Errorf("%s %q: stored record unreadable: %w", s.noun, id, err)
	}
	return m, e.Revision(), nil
}

func (s *kvStore[T]) list(ctx context.Context) ([]T, error) {
	keys, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var ids []string
	for k := range keys.Keys() {
		ids = append(ids, k)
	}
	sort.Strings(ids)
	out := make([]T, 0, len(ids))
	for _, id := range ids {
		m, _, err := s.get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue // deleted while listing
		}
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// create stores a new record; ErrExists when the id is taken.
func (s *kvStore[T]) create(ctx context.Context, id string, m T) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	if _, err := s.kv.Create(ctx, id, b); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("%s %q: %w", s.noun, id, ErrExists)
		}
		return err
	}
	return nil
}

// update replaces a record at the revision it was read at, so two concurrent
// writers cannot silently overwrite each other.
func (s *kvStore[T]) update(ctx context.Context, id string, m T, rev uint64) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	if _, err := s.kv.Update(ctx, id, b, rev); err != nil {
		return fmt.Errorf("%s %q changed meanwhile: %w", s.noun, id, ErrConflict)
	}
	return nil
}

func (s *kvStore[T]) delete(ctx context.Context, id string) error {
	if _, _, err := s.get(ctx, id); err != nil {
		return err
	}
	return s.kv.Purge(ctx, id)
}

func newCameraStore(kv jetstream.KeyValue) *kvStore[*busv1.Camera] {
	return &kvStore[*busv1.Camera]{kv: kv, newT: func() *busv1.Camera { return &busv1.Camera{} }, noun: "camera"}
}

func newPipelineStore(kv jetstream.KeyValue) *kvStore[*busv1.Pipeline] {
	return &kvStore[*busv1.Pipeline]{kv: kv, newT: func() *busv1.Pipeline { return &busv1.Pipeline{} }, noun: "pipeline"}
}
