package batch_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/imageflowcanvas/imageflow/server/batch"
	"github.com/imageflowcanvas/imageflow/server/blob"
)

// blobCount counts what the store holds for an execution.
func blobCount(t *testing.T, e *env, id string) int {
	t.Helper()
	infos, err := blob.NewJetStream(e.bus.Objects()).List(context.Background(), "executions/"+id+"/")
	if err != nil {
		t.Fatal(err)
	}
	return len(infos)
}

// DELETE ?purge=true removes a finished execution and all its data; a
// running one must be cancelled first.
func TestPurge(t *testing.T) {
	e := startEnv(t, envOpts{})
	id := e.mustUpload([]upFile{readImage(t, "baboon.jpg")}, "resize-filter")
	e.waitFor(id, 30*time.Second, finished)
	if n := blobCount(t, e, id); n != 3 {
		t.Fatalf("%d blobs before purge, want input, output and result", n)
	}
	req, _ := http.NewRequest(http.MethodDelete, e.base+"/api/v1/executions/"+id+"?purge=true", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("purge: %v %v", err, resp)
	}
	resp.Body.Close()
	if st, _, _ := e.get("/api/v1/executions/" + id); st != http.StatusNotFound {
		t.Fatalf("record after purge: %d", st)
	}
	if n := blobCount(t, e, id); n != 0 {
		t.Fatalf("%d blobs left after purge", n)
	}
	resp, _ = http.DefaultClient.Do(req)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("second purge: %d", resp.StatusCode)
	}
}

// With a retention, finished executions disappear on their own, data and all.
func TestRetentionExpiresFinishedExecutions(t *testing.T) {
	e := startEnv(t, envOpts{mod: func(c *batch.Config) { c.Retention = time.Second }})
	id := e.mustUpload([]upFile{readImage(t, "baboon.jpg")}, "resize-filter")
	e.waitFor(id, 30*time.Second, finished)
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, _, _ := e.get("/api/v1/executions/" + id)
		if st == http.StatusNotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("execution still there %v after it finished (retention 1s): %d", 15*time.Second, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := blobCount(t, e, id); n != 0 {
		t.Fatalf("%d blobs left after expiry", n)
	}
}
