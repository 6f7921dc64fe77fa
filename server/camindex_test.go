package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/imageflowcanvas/imageflow/internal/testkit"
)

// The cameras WHEP joins find without a bucket read: a camera created
// through the API appears in the index, one deleted through this node's API
// is gone from it before the DELETE returns (a WHEP offer for it is a 404
// at once), and one written or deleted straight in the bucket, as another
// node's API does, follows through the watch.
func TestWHEPCameraIndex(t *testing.T) {
	ts := startServer(t, testConfig(t.TempDir()))
	ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": "front", "source": "publish"})
	testkit.WaitFor(t, 10*time.Second, "the index to hold the new camera", func() bool { return ts.srv.camIndex.has("front") })

	if st, body, _ := ts.do("DELETE", "/api/v1/cameras/front", "", nil); st != 204 {
		t.Fatalf("delete: %d %s", st, body)
	}
	if ts.srv.camIndex.has("front") {
		t.Fatal("a camera deleted through this node's API is still in the index")
	}
	offer := strings.Replace(minimalOffer, "sendonly", "recvonly", 1)
	st, body, _ := ts.doRaw("POST", "/api/v1/cameras/front/whep", "application/sdp", offer)
	expectError(t, st, body, 404, "not found")

	// Another node's API: straight in the bucket.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": "back", "source": "publish"})
	testkit.WaitFor(t, 10*time.Second, "the index to hold the camera", func() bool { return ts.srv.camIndex.has("back") })
	if err := ts.srv.cameras.kv.Delete(ctx, "back"); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "the watch to drop the camera deleted in the bucket", func() bool { return !ts.srv.camIndex.has("back") })
	st, body, _ = ts.doRaw("POST", "/api/v1/cameras/back/whep", "application/sdp", offer)
	expectError(t, st, body, 404, "not found")
}
