package batch_test

import (
	"archive/zip"
	"bytes"
	"testing"
	"time"
)

// TestZipEntriesDated: every entry of results.zip carries a real time;
// execution.json used to be dated 1980 (the zip format's zero).
func TestZipEntriesDated(t *testing.T) {
	e := startEnv(t, envOpts{})
	id := e.mustUpload([]upFile{readImage(t, "baboon.jpg")}, "resize-filter")
	e.waitFor(id, 30*time.Second, finished)
	before := time.Now().Add(-time.Minute)
	st, z, _ := e.get("/api/v1/executions/" + id + "/results.zip")
	if st != 200 {
		t.Fatalf("zip: %d", st)
	}
	zr, err := zip.NewReader(bytes.NewReader(z), int64(len(z)))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range zr.File {
		if f.Modified.Before(before) || f.Modified.After(time.Now().Add(time.Minute)) {
			t.Errorf("%s dated %v", f.Name, f.Modified)
		}
	}
	if len(zr.File) < 2 || zr.File[0].Name != "execution.json" {
		t.Fatalf("entries %d, first %s", len(zr.File), zr.File[0].Name)
	}
}
