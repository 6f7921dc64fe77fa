package blob_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/server/blob"
	"github.com/imageflowcanvas/imageflow/server/blob/blobtest"
)

func TestJetStreamStore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := &bus.Bus{Config: bus.Config{DataDir: t.TempDir()}}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	testStore(ctx, t, blob.NewJetStream(b.Objects()))
}

func TestMinIOStore(t *testing.T) {
	cfg := blobtest.StartMinIO(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if strings.Contains(cfg.String(), cfg.SecretKey) {
		t.Fatalf("String() leaks the secret: %s", cfg)
	}
	s, err := blob.NewMinIO(ctx, cfg) // creates the bucket
	if err != nil {
		t.Fatal(err)
	}
	testStore(ctx, t, s)
	// A second client finds the bucket and the data.
	s2, err := blob.NewMinIO(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if l, err := s2.List(ctx, "a/"); err != nil || len(l) != 1 {
		t.Fatalf("second client list: %v %v", l, err)
	}
	bad := cfg
	bad.SecretKey = "wrong-secret-value"
	if _, err := blob.NewMinIO(ctx, bad); err == nil {
		t.Fatal("wrong secret accepted")
	} else if strings.Contains(err.Error(), bad.SecretKey) {
		t.Fatalf("error leaks the secret: %v", err)
	}
}

func testStore(ctx context.Context, t *testing.T, s blob.Store) {
	t.Helper()
	big := bytes.Repeat([]byte("0123456789abcdef"), 300_000) // 4.8 MB: several chunks
	put := func(key string, data []byte, ct string) {
		if err := s.Put(ctx, key, bytes.NewReader(data), int64(len(data)), ct); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
	}
	put("a/1.bin", big, "application/octet-stream")
	put("b/2.json", []byte(`{"x":1}`), "application/json")
	put("b/1.json", []byte(`{"x":0}`), "application/json")
	put("b/1.json", []byte(`{"x":2}`), "application/json") // overwrite is idempotent

	r, info, err := s.Get(ctx, "a/1.bin")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, big) || info.Size != int64(len(big)) {
		t.Fatalf("get a/1.bin: %d bytes (info %d), err %v", len(got), info.Size, err)
	}
	r, info, err = s.Get(ctx, "b/1.json")
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(r)
	r.Close()
	if string(got) != `{"x":2}` || info.ContentType != "application/json" {
		t.Fatalf("b/1.json = %q %q", got, info.ContentType)
	}
	l, err := s.List(ctx, "b/")
	if err != nil || len(l) != 2 || l[0].Key != "b/1.json" || l[1].Key != "b/2.json" {
		t.Fatalf("list b/: %+v %v", l, err)
	}
	if _, _, err := s.Get(ctx, "b/missing"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("missing key: %v", err)
	}
	if err := s.Delete(ctx, "b/1.json"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "b/1.json"); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	if _, _, err := s.Get(ctx, "b/1.json"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("deleted key: %v", err)
	}
	if l, _ := s.List(ctx, "b/"); len(l) != 1 {
		t.Fatalf("list after delete: %+v", l)
	}
	for _, k := range []string{"", "/abs", "a/../b", "a//b", "a\\b"} {
		if err := s.Put(ctx, k, strings.NewReader("x"), 1, ""); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("key %q: %v", k, err)
		}
	}
}

func FuzzCheckKey(f *testing.F) {
	for _, s := range []string{"a/b", "", "../x", "a/./b", "executions/x/1.json", "a\x00b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if blob.CheckKey(s) == nil {
			for _, seg := range strings.Split(s, "/") {
				if seg == "" || seg == ".." || seg == "." {
					t.Fatalf("accepted %q", s)
				}
			}
		}
	})
}
