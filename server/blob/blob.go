// Package blob stores the files of batch executions (uploads, output images,
// result JSON) behind one small interface, in the JetStream Object Store of
// the embedded bus by default or in MinIO/S3 when configured.
package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Errors of every Store.
var (
	// ErrNotFound is returned by Get (and by Delete on stores that report it)
	// for a key that holds nothing.
	ErrNotFound = errors.New("blob not found")
	// ErrInvalidKey is returned for an empty key or one that could escape its
	// prefix.
	ErrInvalidKey = errors.New("invalid blob key")
)

// Info describes one stored blob.
type Info struct {
	Key         string    `json:"key"`
	Size        int64     `json:"size"`
	ContentType string    `json:"content_type,omitempty"`
	ModTime     time.Time `json:"mod_time"`
}

// Store is what the batch manager needs from object storage. Keys are
// slash-separated paths; writing a key again replaces it, so writes are
// idempotent.
type Store interface {
	// Put stores size bytes of r under key (size -1: unknown).
	Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) error
	// Get opens a blob; the caller closes the reader. ErrNotFound when absent.
	Get(ctx context.Context, key string) (io.ReadCloser, Info, error)
	// Delete removes a blob; deleting an absent key is not an error.
	Delete(ctx context.Context, key string) error
	// List returns the blobs whose key starts with prefix, sorted by key.
	List(ctx context.Context, prefix string) ([]Info, error)
}

// CheckKey rejects keys no store should accept: empty, absolute, with empty
// or dot segments, or too long.
func CheckKey(key string) error {
	if key == "" || len(key) > 1024 {
		return fmt.Errorf("%w %q: want 1 to 1024 characters", ErrInvalidKey, key)
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w %q: empty, '.' or '..' segment", ErrInvalidKey, key)
		}
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] == 0x7f || key[i] == '\\' {
			return fmt.Errorf("%w %q: control character or backslash", ErrInvalidKey, key)
		}
	}
	return nil
}
