package server

import (
	"context"
	"io"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	streamv1 "github.com/imageflowcanvas/imageflow/proto/streamv1"
)

// TestStreamServiceFacesWithAuth sends a real JPEG through a stored
// pipeline over the server's gRPC port, with and without the token.
func TestStreamServiceFacesWithAuth(t *testing.T) {
	img, err := os.ReadFile("/usr/share/doc/opencv-doc/examples/data/messi5.jpg")
	if err != nil {
		t.Skip("opencv-doc not installed (scripts/setup-product.sh installs it)")
	}
	const token = "grpc-token-12345678"
	cfg := testConfig(t.TempDir())
	cfg.APITokens = []string{token}
	ts := startServer(t, cfg)
	st, body, _ := ts.do("POST", "/api/v1/pipelines", token, pipelineBody("faces",
		step("small", "resize", map[string]any{"width": 640}),
		step("face", "detect", map[string]any{"backend": "blazeface"}, "small")))
	if st != 201 {
		t.Fatalf("pipeline: %d %s", st, body)
	}
	conn, err := grpc.NewClient(ts.srv.Addrs().GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := streamv1.NewStreamServiceClient(conn)

	run := func(ctx context.Context) (*streamv1.StreamResult, error) {
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		stream, err := client.Process(ctx)
		if err != nil {
			return nil, err
		}
		// A stream the server refused reports io.EOF on Send; its status
		// comes from Recv.
		if err := stream.Send(&streamv1.StreamRequest{Pipeline: "faces", Frame: &streamv1.StreamFrame{
			Sequence: 7, Format: busv1.PixelFormat_PIXEL_FORMAT_JPEG, Data: img}}); err != nil && err != io.EOF {
			return nil, err
		}
		_ = stream.CloseSend()
		return stream.Recv()
	}
	if _, err := run(context.Background()); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("without token: %v", err)
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token)
	res, err := run(ctx)
	if err != nil {
		t.Fatalf("with token: %v", err)
	}
	if res.Sequence != 7 || res.Error != "" {
		t.Fatalf("result: %+v", res)
	}
	faces := 0
	for _, d := range res.Result.GetDetections() {
		if d.Label == "face" {
			faces++
		}
	}
	if faces == 0 {
		t.Fatalf("no face found in messi5.jpg: %+v", res.Result)
	}
}
