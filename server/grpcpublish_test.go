package server

import (
	"bytes"
	"context"
	"image"
	"image/jpeg"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	streamv1 "github.com/imageflowcanvas/imageflow/proto/streamv1"
)

// TestStreamServicePublishCamera makes a gRPC client a camera through the
// server's StreamService (Publish served by ingest/grpcstream beside
// Process): the camera goes online with the frames' size, a second
// publisher is refused, and the response counts what was accepted.
func TestStreamServicePublishCamera(t *testing.T) {
	ts := startServer(t, testConfig(t.TempDir()))
	if st, body, _ := ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": "phone", "source": "publish"}); st != 201 {
		t.Fatalf("camera: %d %s", st, body)
	}
	img := image.NewRGBA(image.Rect(0, 0, 320, 240))
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, nil); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(ts.srv.Addrs().GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := streamv1.NewStreamServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	pub, err := client.Publish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send := func(i int, camera string) error {
		return pub.Send(&streamv1.PublishRequest{Camera: camera, Payload: &streamv1.PublishRequest_Jpeg{
			Jpeg: &streamv1.JpegFrame{Pts: int64(i) * int64(time.Second) / 10, Data: b.Bytes()}}})
	}
	sent := 0
	if err := send(sent, "phone"); err != nil {
		t.Fatal(err)
	}
	sent++
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if send(sent, "") != nil {
				return
			}
			sent++
		}
	}()
	cam := waitCameraOnline(t, ts, "phone")
	if cam.Width != 320 || cam.Height != 240 {
		t.Errorf("camera %dx%d, want 320x240", cam.Width, cam.Height)
	}

	second, err := client.Publish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := second.Send(&streamv1.PublishRequest{Camera: "phone"}); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if _, err := second.CloseAndRecv(); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("second publisher: %v, want AlreadyExists", err)
	}

	close(stop)
	<-done
	resp, err := pub.CloseAndRecv()
	if err != nil || resp.Accepted != uint64(sent) {
		t.Fatalf("publish response %v %v, want %d accepted", resp, err, sent)
	}
}
