// Package kserve is a KServe v2 (Open Inference Protocol) gRPC inference
// server, the protocol Triton speaks, serving ONNX models through OpenCV DNN.
// It lets a small machine stand in for Triton: the detect step's triton
// backend, and real Triton clients, talk to it unchanged.
package kserve

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/imageflowcanvas/imageflow/processors/modelfiles"
	"github.com/imageflowcanvas/imageflow/processors/yolo/cvdnn"
	pb "github.com/imageflowcanvas/imageflow/proto/kservev2"
)

// MaxMessageSize bounds one request or response (a 1280x1280 FP32 image
// tensor is 20 MB).
const MaxMessageSize = 64 << 20

// Errors of the model repository.
var (
	ErrNoModels = errors.New("kserve: no models")
)

// Server serves the models of a repository over gRPC.
type Server struct {
	// Addr is the listen address (host:port; ":0" picks a port).
	Addr string
	// ModelRepo is a Triton-style directory, <dir>/<model>/<version>/model.onnx
	// (the highest numeric version is served), or a comma list of
	// name=path.onnx.
	ModelRepo string
	Logger    *slog.Logger

	models map[string]*model
	lis    net.Listener
	grpc   *grpc.Server
	done   chan error
	once   sync.Once
}

// model is one loaded ONNX model; its network runs one request at a time.
type model struct {
	name     string
	version  string
	inputs   []Tensor
	outputs  []Tensor
	outNames []string

	mu   sync.Mutex
	net  *cvdnn.Net
	in   []cvdnn.Input
	outs []cvdnn.Output
	conv [][]float32
}

// Start loads the models and starts listening; it fails on a repository
// without a loadable model.
func (s *Server) Start() error {
	if s.Logger == nil {
		s.Logger = slog.Default()
	}
	if s.Addr == "" {
		s.Addr = "127.0.0.1:8001"
	}
	models, err := loadRepo(s.ModelRepo)
	if err != nil {
		return err
	}
	s.models = models
	lis, err := net.Listen("tcp", s.Addr)
	if err != nil {
		s.closeModels()
		return err
	}
	s.lis = lis
	// A 640x640 FP32 image tensor is 4.9 MB: a window that holds it avoids a
	// round of flow-control updates per request.
	s.grpc = grpc.NewServer(grpc.MaxRecvMsgSize(MaxMessageSize), grpc.MaxSendMsgSize(MaxMessageSize),
		grpc.InitialWindowSize(8<<20), grpc.InitialConnWindowSize(8<<20))
	pb.RegisterGRPCInferenceServiceServer(s.grpc, &service{s: s})
	// The standard health service, for Kubernetes' gRPC probes: the models
	// are loaded by now, so the server is SERVING from its first call.
	healthpb.RegisterHealthServer(s.grpc, health.NewServer())
	s.done = make(chan error, 1)
	go func() { s.done <- s.grpc.Serve(lis) }()
	names := make([]string, 0, len(models))
	for n := range models {
		names = append(names, n)
	}
	sort.Strings(names)
	s.Logger.Info("inference server listening", "addr", lis.Addr().String(), "models", strings.Join(names, ","))
	return nil
}

// ListenAddr is the address the server listens on, once started.
func (s *Server) ListenAddr() net.Addr { return s.lis.Addr() }

// Close stops the server (in-flight calls get a second) and frees the
// models; a second Close is harmless.
func (s *Server) Close() error {
	s.once.Do(func() {
		if s.grpc == nil {
			return
		}
		stopped := make(chan struct{})
		go func() { s.grpc.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(time.Second):
			s.grpc.Stop()
			<-stopped
		}
		<-s.done
		s.closeModels()
	})
	return nil
}

func (s *Server) closeModels() {
	for _, m := range s.models {
		m.mu.Lock()
		m.net.Close()
		m.mu.Unlock()
	}
}

// RunInferServer serves the models of modelRepo on addr until ctx ends
// (`imageflow infer serve`).
func RunInferServer(ctx context.Context, addr, modelRepo string, logger *slog.Logger) error {
	s := &Server{Addr: addr, ModelRepo: modelRepo, Logger: logger}
	if err := s.Start(); err != nil {
		return err
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-s.done:
		s.done <- serveErr // Close waits on it
	}
	s.Close()
	return serveErr
}

// loadRepo loads the models of a repository directory, or of a name=path
// list. Files are read through modelfiles: from inside the repository
// (symbolic links may not lead out), regular files only, at most
// modelfiles.MaxModelBytes each.
func loadRepo(repo string) (map[string]*model, error) {
	paths := map[string]string{}
	files := map[string]*modelfiles.Dir{}
	rels := map[string]string{} // the file's name inside files[name]
	if strings.Contains(repo, "=") {
		for _, item := range strings.Split(repo, ",") {
			name, path, ok := strings.Cut(strings.TrimSpace(item), "=")
			if !ok || name == "" || path == "" {
				return nil, fmt.Errorf("kserve: model %q: want name=path.onnx", item)
			}
			paths[name] = path
			files[name], rels[name] = modelfiles.New(filepath.Dir(path)), filepath.Base(path)
		}
	} else {
		repoFiles := modelfiles.New(repo)
		entries, err := os.ReadDir(repo)
		if err != nil {
			return nil, fmt.Errorf("kserve: model repository: %w", err)
		}
		for _, e := range entries {
			if !e.IsDir() {
				continue
			}
			if v := latestVersion(filepath.Join(repo, e.Name())); v != "" {
				paths[e.Name()] = filepath.Join(repo, e.Name(), v, "model.onnx")
				files[e.Name()], rels[e.Name()] = repoFiles, filepath.Join(e.Name(), v, "model.onnx")
			}
		}
	}
	models := map[string]*model{}
	for name, path := range paths {
		m, err := loadModel(name, path, files[name], rels[name])
		if err != nil {
			for _, m := range models {
				m.net.Close()
			}
			return nil, err
		}
		models[name] = m
	}
	if len(models) == 0 {
		return nil, fmt.Errorf("%w in %q (want <dir>/<model>/1/model.onnx or name=path.onnx)", ErrNoModels, repo)
	}
	return models, nil
}

// latestVersion is the highest numeric sub-directory holding model.onnx.
func latestVersion(dir string) string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	best := -1
	for _, e := range entries {
		v, err := strconv.Atoi(e.Name())
		if err != nil || !e.IsDir() || v < best {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "model.onnx")); err == nil {
			best = v
		}
	}
	if best < 0 {
		return ""
	}
	return strconv.Itoa(best)
}

func loadModel(name, path string, files *modelfiles.Dir, rel string) (*model, error) {
	buf, err := files.ReadFile(rel, modelfiles.MaxModelBytes)
	if err != nil {
		return nil, fmt.Errorf("kserve: model %s: %w", name, err)
	}
	inputs, outputs, err := ReadONNXSignature(buf)
	if err != nil {
		return nil, fmt.Errorf("kserve: model %s (%s): %w", name, path, err)
	}
	for _, t := range inputs {
		if t.Datatype != "FP32" {
			return nil, fmt.Errorf("kserve: model %s: input %s is %s; only FP32 inputs are served", name, t.Name, t.Datatype)
		}
	}
	net, err := cvdnn.Load(buf)
	if err != nil {
		return nil, fmt.Errorf("kserve: model %s (%s): %w", name, path, err)
	}
	version := filepath.Base(filepath.Dir(path))
	if _, err := strconv.Atoi(version); err != nil {
		version = "1"
	}
	m := &model{name: name, version: version, inputs: inputs, outputs: outputs, net: net}
	for _, o := range outputs {
		m.outNames = append(m.outNames, o.Name)
	}
	m.in = make([]cvdnn.Input, len(inputs))
	m.conv = make([][]float32, len(inputs))
	return m, nil
}

// service implements the gRPC API.
type service struct {
	pb.UnimplementedGRPCInferenceServiceServer
	s *Server
}

func (v *service) ServerLive(context.Context, *pb.ServerLiveRequest) (*pb.ServerLiveResponse, error) {
	return &pb.ServerLiveResponse{Live: true}, nil
}

func (v *service) ServerReady(context.Context, *pb.ServerReadyRequest) (*pb.ServerReadyResponse, error) {
	return &pb.ServerReadyResponse{Ready: len(v.s.models) > 0}, nil
}

func (v *service) ServerMetadata(context.Context, *pb.ServerMetadataRequest) (*pb.ServerMetadataResponse, error) {
	return &pb.ServerMetadataResponse{Name: "imageflow", Version: "2"}, nil
}

func (v *service) lookup(name, version string) (*model, error) {
	m, ok := v.s.models[name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "model %q not found", name)
	}
	if version != "" && version != m.version {
		return nil, status.Errorf(codes.NotFound, "model %q has no version %q (serving %s)", name, version, m.version)
	}
	return m, nil
}

func (v *service) ModelReady(ctx context.Context, req *pb.ModelReadyRequest) (*pb.ModelReadyResponse, error) {
	if _, err := v.lookup(req.Name, req.Version); err != nil {
		return nil, err
	}
	return &pb.ModelReadyResponse{Ready: true}, nil
}

func (v *service) ModelMetadata(ctx context.Context, req *pb.ModelMetadataRequest) (*pb.ModelMetadataResponse, error) {
	m, err := v.lookup(req.Name, req.Version)
	if err != nil {
		return nil, err
	}
	resp := &pb.ModelMetadataResponse{Name: m.name, Versions: []string{m.version}, Platform: "opencv_onnx"}
	for _, t := range m.inputs {
		resp.Inputs = append(resp.Inputs, &pb.ModelMetadataResponse_TensorMetadata{Name: t.Name, Datatype: t.Datatype, Shape: t.Shape})
	}
	for _, t := range m.outputs {
		resp.Outputs = append(resp.Outputs, &pb.ModelMetadataResponse_TensorMetadata{Name: t.Name, Datatype: t.Datatype, Shape: t.Shape})
	}
	return resp, nil
}

func (v *service) ModelInfer(ctx context.Context, req *pb.ModelInferRequest) (*pb.ModelInferResponse, error) {
	m, err := v.lookup(req.ModelName, req.ModelVersion)
	if err != nil {
		return nil, err
	}
	if len(req.Inputs) != len(m.inputs) {
		return nil, status.Errorf(codes.InvalidArgument, "model %s takes %d inputs, got %d", m.name, len(m.inputs), len(req.Inputs))
	}
	if len(req.RawInputContents) != 0 && len(req.RawInputContents) != len(req.Inputs) {
		return nil, status.Errorf(codes.InvalidArgument, "%d raw_input_contents for %d inputs", len(req.RawInputContents), len(req.Inputs))
	}
	// Requested outputs, in request order; all of them when none is named.
	want := m.outNames
	if len(req.Outputs) > 0 {
		want = make([]string, 0, len(req.Outputs))
		for _, o := range req.Outputs {
			if m.outputIndex(o.Name) < 0 {
				return nil, status.Errorf(codes.InvalidArgument, "model %s has no output %q", m.name, o.Name)
			}
			want = append(want, o.Name)
		}
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	for i, t := range req.Inputs {
		idx := m.inputIndex(t.Name)
		if idx < 0 {
			return nil, status.Errorf(codes.InvalidArgument, "model %s has no input %q", m.name, t.Name)
		}
		spec := m.inputs[idx]
		if t.Datatype != "FP32" {
			return nil, status.Errorf(codes.InvalidArgument, "input %s: datatype %q, want FP32", t.Name, t.Datatype)
		}
		if err := checkShape(t.Shape, spec.Shape); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "input %s: %v", t.Name, err)
		}
		n := 1
		shape := make([]int, len(t.Shape))
		for k, d := range t.Shape {
			shape[k] = int(d)
			n *= int(d)
		}
		var data []float32
		if len(req.RawInputContents) > 0 {
			if t.Contents != nil {
				return nil, status.Errorf(codes.InvalidArgument, "input %s: contents and raw_input_contents both set", t.Name)
			}
			raw := req.RawInputContents[i]
			if len(raw) != 4*n {
				return nil, status.Errorf(codes.InvalidArgument, "input %s: shape %v needs %d bytes, got %d", t.Name, t.Shape, 4*n, len(raw))
			}
			data = m.floats(idx, raw)
		} else {
			data = t.GetContents().GetFp32Contents()
			if len(data) != n {
				return nil, status.Errorf(codes.InvalidArgument, "input %s: shape %v needs %d fp32_contents, got %d", t.Name, t.Shape, n, len(data))
			}
		}
		m.in[idx] = cvdnn.Input{Name: spec.Name, Shape: shape, Data: data}
	}
	m.outs, err = m.net.Forward(m.in, want, m.outs)
	for i := range m.in {
		m.in[i].Data = nil // do not keep the request alive
	}
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "model %s cannot run this input: %v", m.name, err)
	}
	resp := &pb.ModelInferResponse{ModelName: m.name, ModelVersion: m.version, Id: req.Id}
	for i, o := range m.outs {
		shape := make([]int64, len(o.Shape))
		for k, d := range o.Shape {
			shape[k] = int64(d)
		}
		resp.Outputs = append(resp.Outputs, &pb.ModelInferResponse_InferOutputTensor{Name: want[i], Datatype: "FP32", Shape: shape})
		raw := make([]byte, 4*len(o.Data))
		for k, f := range o.Data {
			binary.LittleEndian.PutUint32(raw[4*k:], math.Float32bits(f))
		}
		resp.RawOutputContents = append(resp.RawOutputContents, raw)
	}
	return resp, nil
}

// floats views little-endian FP32 bytes as float32s without copying when
// the memory allows, else decodes into the model's reusable buffer.
func (m *model) floats(idx int, raw []byte) []float32 {
	if littleEndian && uintptr(unsafe.Pointer(&raw[0]))%4 == 0 {
		return unsafe.Slice((*float32)(unsafe.Pointer(&raw[0])), len(raw)/4)
	}
	n := len(raw) / 4
	if cap(m.conv[idx]) < n {
		m.conv[idx] = make([]float32, n)
	}
	buf := m.conv[idx][:n]
	for k := range buf {
		buf[k] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*k:]))
	}
	return buf
}

var littleEndian = func() bool { x := uint16(1); return *(*byte)(unsafe.Pointer(&x)) == 1 }()

func (m *model) inputIndex(name string) int {
	for i, t := range m.inputs {
		if t.Name == name {
			return i
		}
	}
	return -1
}

func (m *model) outputIndex(name string) int {
	for i, t := range m.outputs {
		if t.Name == name {
			return i
		}
	}
	return -1
}

// checkShape matches a request shape against the model's (-1 matches any
// positive size).
func checkShape(got, want []int64) error {
	if len(got) != len(want) && len(want) > 0 {
		return fmt.Errorf("shape %v, model wants %v", got, want)
	}
	n := int64(1)
	for i, d := range got {
		if d <= 0 || d > 1<<20 {
			return fmt.Errorf("shape %v has a bad dimension", got)
		}
		if len(want) > 0 && want[i] > 0 && want[i] != d {
			return fmt.Errorf("shape %v, model wants %v", got, want)
		}
		n *= d
		if n > MaxMessageSize {
			return fmt.Errorf("shape %v is too large", got)
		}
	}
	return nil
}
