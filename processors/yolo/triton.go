package yolo

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
	"unsafe"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/processors/modelfiles"
	pb "github.com/imageflowcanvas/imageflow/proto/kservev2"
)

// ErrServer reports an inference server that is not ready or rejects the
// model.
var ErrServer = errors.New("yolo: inference server")

// Triton runs a YOLO model on a Triton or other KServe v2 gRPC server. The
// model's input and output names and its input size are learnt from
// ModelMetadata on first use (and again after a failure), so the server can
// be started after the pipeline.
type Triton struct {
	opts      options
	modelName string
	conn      *grpc.ClientConn
	client    pb.GRPCInferenceServiceClient

	mu sync.Mutex // guards the fields below; Process calls never overlap anyway
	// Learnt from the server.
	ready      bool
	inputName  string
	outputName string
	size       int

	pre    Preprocessor
	tensor []float32
	out    []float32
	req    pb.ModelInferRequest
	input  pb.ModelInferRequest_InferInputTensor
	output pb.ModelInferRequest_InferRequestedOutputTensor
	raw    [][]byte
}

// NewTriton makes the triton backend: params url and model_name name the
// server and model; the connection is made lazily.
// A classes file is read through files.
func NewTriton(params processors.Params, files *modelfiles.Dir) (processors.Processor, error) {
	return newTriton(params, files)
}

func newTriton(params processors.Params, files *modelfiles.Dir) (*Triton, error) {
	o, err := parseOptions(params, files)
	if err != nil {
		return nil, err
	}
	url, name := params.String("url"), params.String("model_name")
	if url == "" {
		return nil, fmt.Errorf("%w \"url\": the inference server's host:port is required", processors.ErrBadParam)
	}
	if name == "" {
		return nil, fmt.Errorf("%w \"model_name\": required", processors.ErrBadParam)
	}
	conn, err := grpc.NewClient(url,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// The FP32 input tensor is 4.9 MB at 640: send it in one window.
		grpc.WithInitialWindowSize(8<<20), grpc.WithInitialConnWindowSize(8<<20),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
			BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: time.Second}))
	if err != nil {
		return nil, fmt.Errorf("%w \"url\": %v", processors.ErrBadParam, err)
	}
	return &Triton{opts: o, modelName: name, conn: conn, client: pb.NewGRPCInferenceServiceClient(conn)}, nil
}

// learn asks the server whether it is ready and what the model looks like.
func (t *Triton) learn(ctx context.Context) error {
	ready, err := t.client.ServerReady(ctx, &pb.ServerReadyRequest{})
	if err != nil {
		return fmt.Errorf("%w %s: %v", ErrServer, t.conn.Target(), err)
	}
	if !ready.Ready {
		return fmt.Errorf("%w %s: not ready", ErrServer, t.conn.Target())
	}
	md, err := t.client.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: t.modelName})
	if err != nil {
		return fmt.Errorf("%w %s: model %s: %v", ErrServer, t.conn.Target(), t.modelName, err)
	}
	if len(md.Inputs) != 1 || len(md.Outputs) < 1 {
		return fmt.Errorf("%w: model %s has %d inputs and %d outputs, want one image input", ErrServer, t.modelName, len(md.Inputs), len(md.Outputs))
	}
	in := md.Inputs[0]
	if in.Datatype != "FP32" {
		return fmt.Errorf("%w: model %s input %s is %s, want FP32", ErrServer, t.modelName, in.Name, in.Datatype)
	}
	size := t.opts.size
	// A fixed [N, 3, H, W] input decides the size: it must be square.
	if len(in.Shape) == 4 && in.Shape[2] > 0 && in.Shape[3] > 0 {
		if in.Shape[2] != in.Shape[3] {
			return fmt.Errorf("%w: model %s input shape %v is not square", ErrServer, t.modelName, in.Shape)
		}
		size = int(in.Shape[2])
	} else if len(in.Shape) != 4 && len(in.Shape) != 3 {
		return fmt.Errorf("%w: model %s input shape %v, want [1,3,H,W]", ErrServer, t.modelName, in.Shape)
	}
	t.inputName, t.outputName, t.size = in.Name, md.Outputs[0].Name, size
	t.ready = true
	return nil
}

// Process implements processors.Processor.
func (t *Triton) Process(ctx context.Context, in *processors.Input, out *processors.Output) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, t.opts.timeout)
	defer cancel()
	if !t.ready {
		if err := t.learn(ctx); err != nil {
			return err
		}
	}
	lb, tensor, err := t.pre.Run(in.Image, t.size, t.tensor)
	if err != nil {
		return err
	}
	t.tensor = tensor
	t.input.Name, t.input.Datatype = t.inputName, "FP32"
	t.input.Shape = append(t.input.Shape[:0], 1, 3, int64(t.size), int64(t.size))
	t.output.Name = t.outputName
	t.req.ModelName = t.modelName
	t.req.Inputs = []*pb.ModelInferRequest_InferInputTensor{&t.input}
	t.req.Outputs = []*pb.ModelInferRequest_InferRequestedOutputTensor{&t.output}
	t.raw = append(t.raw[:0], floatBytes(tensor))
	t.req.RawInputContents = t.raw
	resp, err := t.client.ModelInfer(ctx, &t.req)
	if err != nil {
		t.ready = false // the model may have changed or moved: learn again
		return fmt.Errorf("%w %s: infer %s: %v", ErrServer, t.conn.Target(), t.modelName, err)
	}
	if len(resp.Outputs) < 1 {
		return fmt.Errorf("%w: model %s returned no output", ErrServer, t.modelName)
	}
	o := resp.Outputs[0]
	switch {
	case len(resp.RawOutputContents) > 0:
		raw := resp.RawOutputContents[0]
		n := len(raw) / 4
		if cap(t.out) < n {
			t.out = make([]float32, n)
		}
		t.out = t.out[:n]
		for i := range t.out {
			t.out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	case o.Contents != nil:
		t.out = append(t.out[:0], o.Contents.Fp32Contents...)
	default:
		return fmt.Errorf("%w: model %s output %s has no data", ErrServer, t.modelName, o.Name)
	}
	dets, err := DecodeErr(t.out, o.Shape, lb, t.opts.decode)
	if err != nil {
		return err
	}
	out.Detections = append(out.Detections, dets...)
	return nil
}

// floatBytes gives float32s as little-endian bytes, without copying on
// little-endian machines.
func floatBytes(f []float32) []byte {
	if len(f) == 0 {
		return nil
	}
	if littleEndian {
		return unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), 4*len(f))
	}
	b := make([]byte, 4*len(f))
	for i, v := range f {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

var littleEndian = func() bool { x := uint16(1); return *(*byte)(unsafe.Pointer(&x)) == 1 }()

// Close closes the connection.
func (t *Triton) Close() error {
	t.pre.Close()
	return t.conn.Close()
}
