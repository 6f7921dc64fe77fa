package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// JetStream is a Store on a JetStream Object Store bucket (the embedded
// default: bus.Bus.Objects()).
type JetStream struct {
	os jetstream.ObjectStore
}

// NewJetStream wraps an object store bucket.
func NewJetStream(os jetstream.ObjectStore) *JetStream { return &JetStream{os: os} }

const headerContentType = "Content-Type"

// Put stores r under key; the object store chunks it, so size is only a hint.
func (s *JetStream) Put(ctx context.Context, key string, r io.Reader, _ int64, contentType string) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	meta := jetstream.ObjectMeta{Name: key}
	if contentType != "" {
		meta.Headers = nats.Header{headerContentType: []string{contentType}}
	}
	if _, err := s.os.Put(ctx, meta, r); err != nil {
		return fmt.Errorf("object store put %q: %w", key, err)
	}
	return nil
}

// Get opens key.
func (s *JetStream) Get(ctx context.Context, key string) (io.ReadCloser, Info, error) {
	if err := CheckKey(key); err != nil {
		return nil, Info{}, err
	}
	res, err := s.os.Get(ctx, key)
	if err != nil {
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return nil, Info{}, fmt.Errorf("%w: %s", ErrNotFound, key)
		}
		return nil, Info{}, fmt.Errorf("object store get %q: %w", key, err)
	}
	oi, err := res.Info()
	if err != nil {
		res.Close()
		return nil, Info{}, fmt.Errorf("object store get %q: %w", key, err)
	}
	return res, infoOf(oi), nil
}

// Delete removes key; an absent key is not an error.
func (s *JetStream) Delete(ctx context.Context, key string) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	if err := s.os.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("object store delete %q: %w", key, err)
	}
	return nil
}

// List returns the objects under prefix. The object store has no prefix
// index, so this walks the bucket's metadata (not its data).
func (s *JetStream) List(ctx context.Context, prefix string) ([]Info, error) {
	all, err := s.os.List(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoObjectsFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("object store list: %w", err)
	}
	out := make([]Info, 0, len(all))
	for _, oi := range all {
		if oi.Deleted || !strings.HasPrefix(oi.Name, prefix) {
			continue
		}
		out = append(out, infoOf(oi))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func infoOf(oi *jetstream.ObjectInfo) Info {
	in := Info{Key: oi.Name, Size: int64(oi.Size), ModTime: oi.ModTime}
	if oi.Headers != nil {
		in.ContentType = oi.Headers.Get(headerContentType)
	}
	return in
}
