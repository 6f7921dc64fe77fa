package grpcstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/imageflowcanvas/imageflow/ingest"
	"github.com/imageflowcanvas/imageflow/media/imagedecode/imagetest"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	streamv1 "github.com/imageflowcanvas/imageflow/proto/streamv1"
)

// TestMain fails the package when a test leaves goroutines behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recordSink keeps what a publisher sent.
type recordSink struct {
	mu     sync.Mutex
	aus    []*busv1.AccessUnit
	states []string
	tracks []string
}

var _ ingest.Sink = (*recordSink)(nil)

func (r *recordSink) WriteAccessUnit(au *busv1.AccessUnit) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.aus = append(r.aus, au)
	return nil
}
func (r *recordSink) SetState(s string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.states = append(r.states, fmt.Sprintf("%s %v", s, err != nil))
}
func (r *recordSink) SetTrack(c busv1.Codec, w, h int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tracks = append(r.tracks, fmt.Sprint(c, w, h))
}

// startPublisher serves a Publisher over real gRPC on 127.0.0.1.
func startPublisher(t testing.TB, sink *recordSink) streamv1.StreamServiceClient {
	p := &Publisher{
		Open: func(ctx context.Context, camera string) (ingest.Sink, func(), error) {
			if camera != "phone" {
				return nil, nil, errors.New("unknown camera")
			}
			return sink, func() {}, nil
		},
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	p.Register(g)
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); g.Stop(); <-done })
	return streamv1.NewStreamServiceClient(conn)
}

// testJPEG is a 640x480 JPEG.
func testJPEG(t testing.TB) []byte {
	img := image.NewRGBA(image.Rect(0, 0, 640, 480))
	for i := range img.Pix {
		img.Pix[i] = byte(i * 7)
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestStreamPublish(t *testing.T) {
	jpg := testJPEG(t)
	sink := &recordSink{}
	client := startPublisher(t, sink)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	st, err := client.Publish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Send(&streamv1.PublishRequest{Camera: "phone", Payload: &streamv1.PublishRequest_Jpeg{Jpeg: &streamv1.JpegFrame{Pts: 0, Data: jpg}}})
	st.Send(&streamv1.PublishRequest{Payload: &streamv1.PublishRequest_Jpeg{Jpeg: &streamv1.JpegFrame{Pts: int64(time.Second), Data: jpg}}})
	st.Send(&streamv1.PublishRequest{Payload: &streamv1.PublishRequest_AccessUnit{AccessUnit: &busv1.AccessUnit{
		Codec: busv1.Codec_CODEC_H264, Keyframe: true, Width: 320, Height: 240, Nalus: [][]byte{{0x67, 1}, {0x68, 2}, {0x65, 3}}}}})
	resp, err := st.CloseAndRecv()
	if err != nil || resp.Accepted != 3 {
		t.Fatalf("publish: %v %v", resp, err)
	}
	sink.mu.Lock()
	if len(sink.aus) != 3 || sink.aus[0].Camera != "phone" || sink.aus[1].RtpTimestamp != 90000 || sink.aus[0].Width != 640 ||
		sink.aus[2].Codec != busv1.Codec_CODEC_H264 {
		t.Errorf("access units %v", sink.aus)
	}
	if fmt.Sprint(sink.tracks) != "[CODEC_MJPEG 640 480 CODEC_H264 320 240]" || fmt.Sprint(sink.states) != "[online false offline false]" {
		t.Errorf("tracks %v states %v", sink.tracks, sink.states)
	}
	sink.mu.Unlock()

	for name, msgs := range map[string][]*streamv1.PublishRequest{
		"unknown camera": {{Camera: "door"}},
		"no camera":      {{Payload: &streamv1.PublishRequest_Jpeg{Jpeg: &streamv1.JpegFrame{Data: jpg}}}},
		"bad jpeg":       {{Camera: "phone", Payload: &streamv1.PublishRequest_Jpeg{Jpeg: &streamv1.JpegFrame{Data: []byte("x")}}}},
		"empty au":       {{Camera: "phone", Payload: &streamv1.PublishRequest_AccessUnit{AccessUnit: &busv1.AccessUnit{Codec: busv1.Codec_CODEC_H264}}}},
		// A header claiming 65000×65000 would reach the decoder later.
		"jpeg bomb": {{Camera: "phone", Payload: &streamv1.PublishRequest_Jpeg{Jpeg: &streamv1.JpegFrame{Data: imagetest.JPEG(65000, 65000)}}}},
		"png frame": {{Camera: "phone", Payload: &streamv1.PublishRequest_Jpeg{Jpeg: &streamv1.JpegFrame{Data: imagetest.PNG(64, 64)}}}},
	} {
		st, _ := client.Publish(ctx)
		for _, m := range msgs {
			st.Send(m)
		}
		if _, err := st.CloseAndRecv(); status.Code(err) != codes.InvalidArgument && status.Code(err) != codes.NotFound {
			t.Errorf("%s: %v, want InvalidArgument or NotFound", name, err)
		}
	}
}
