package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// MinIOConfig addresses an S3-compatible server. SecretKey is never logged
// nor returned by String.
type MinIOConfig struct {
	// Endpoint is host:port without scheme.
	Endpoint  string `yaml:"endpoint" json:"endpoint"`
	Bucket    string `yaml:"bucket" json:"bucket"`
	AccessKey string `yaml:"access_key" json:"access_key"`
	SecretKey string `yaml:"secret_key" json:"-"`
	// TLS selects https.
	TLS    bool   `yaml:"tls" json:"tls"`
	Region string `yaml:"region" json:"region,omitempty"`
}

// String describes the configuration without its secret.
func (c MinIOConfig) String() string {
	scheme := "http"
	if c.TLS {
		scheme = "https"
	}
	return fmt.Sprintf("%s://%s/%s (access key %s)", scheme, c.Endpoint, c.Bucket, c.AccessKey)
}

// MinIO is a Store on one bucket of a MinIO or S3 server.
type MinIO struct {
	c      *minio.Client
	bucket string
}

// NewMinIO connects and creates the bucket when it is missing.
func NewMinIO(ctx context.Context, cfg MinIOConfig) (*MinIO, error) {
	if cfg.Endpoint == "" || cfg.Bucket == "" {
		return nil, errors.New("minio: endpoint and bucket are required")
	}
	c, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure: cfg.TLS,
		Region: cfg.Region,
	})
	if err != nil {
		return nil, fmt.Errorf("minio %s: %w", cfg, err)
	}
	ok, err := c.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("minio %s: bucket check: %w", cfg, err)
	}
	if !ok {
		err := c.MakeBucket(ctx, cfg.Bucket, minio.MakeBucketOptions{Region: cfg.Region})
		// Another node may have created it in between.
		if err != nil && minio.ToErrorResponse(err).Code != "BucketAlreadyOwnedByYou" {
			return nil, fmt.Errorf("minio %s: create bucket: %w", cfg, err)
		}
	}
	return &MinIO{c: c, bucket: cfg.Bucket}, nil
}

// Put uploads r under key.
func (s *MinIO) Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	if _, err := s.c.PutObject(ctx, s.bucket, key, r, size, minio.PutObjectOptions{ContentType: contentType}); err != nil {
		return fmt.Errorf("minio put %q: %w", key, err)
	}
	return nil
}

func isNotFound(err error) bool {
	e := minio.ToErrorResponse(err)
	return e.StatusCode == http.StatusNotFound || e.Code == "NoSuchKey"
}

// Get opens key; the stat up front turns a missing key into ErrNotFound
// instead of an error on the first Read.
func (s *MinIO) Get(ctx context.Context, key string) (io.ReadCloser, Info, error) {
	if err := CheckKey(key); err != nil {
		return nil, Info{}, err
	}
	obj, err := s.c.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, Info{}, fmt.Errorf("minio get %q: %w", key, err)
	}
	st, err := obj.Stat()
	if err != nil {
		obj.Close()
		if isNotFound(err) {
			return nil, Info{}, fmt.Errorf("%w: %s", ErrNotFound, key)
		}
		return nil, Info{}, fmt.Errorf("minio get %q: %w", key, err)
	}
	return obj, Info{Key: key, Size: st.Size, ContentType: st.ContentType, ModTime: st.LastModified}, nil
}

// Delete removes key; S3 reports no error for an absent key.
func (s *MinIO) Delete(ctx context.Context, key string) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	if err := s.c.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{}); err != nil && !isNotFound(err) {
		return fmt.Errorf("minio delete %q: %w", key, err)
	}
	return nil
}

// List returns the objects under prefix.
func (s *MinIO) List(ctx context.Context, prefix string) ([]Info, error) {
	var out []Info
	for oi := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if oi.Err != nil {
			return nil, fmt.Errorf("minio list %q: %w", prefix, oi.Err)
		}
		out = append(out, Info{Key: oi.Key, Size: oi.Size, ContentType: oi.ContentType, ModTime: oi.LastModified})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}
