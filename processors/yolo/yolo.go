// Package yolo detects objects with YOLO-family ONNX models (v5 and v8/v11
// output layouts), either in-process through OpenCV DNN (NewONNX) or on a
// Triton / KServe v2 inference server (NewTriton). Both backends share the
// letterbox preprocessing and the decoding, so they give the same boxes for
// the same model.
package yolo

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/processors/modelfiles"
	"github.com/imageflowcanvas/imageflow/processors/yolo/cvdnn"
)

// ErrModel reports a model that cannot be loaded or run.
var ErrModel = errors.New("yolo: model")

// ParamSpecs lists the parameters both backends accept; the detect step
// offers them for its onnx and triton backends.
func ParamSpecs() []processors.ParamSpec {
	return []processors.ParamSpec{
		{Name: "model", Type: processors.ParamString, Description: "ONNX model file, relative to models_dir (onnx backend)"},
		{Name: "input_size", Type: processors.ParamInt, Default: int64(640), Min: processors.Range(32), Max: processors.Range(4096),
			Description: "square model input side in pixels; images are letterboxed to it"},
		{Name: "classes", Type: processors.ParamString, Default: "",
			Description: "class names: comma list, a file in models_dir with one name a line (a name with a slash or ending in .txt, .names or .labels), or empty for COCO-80"},
		{Name: "conf_threshold", Type: processors.ParamFloat, Default: 0.25, Min: processors.Range(0), Max: processors.Range(1),
			Description: "minimum confidence of a detection"},
		{Name: "nms_threshold", Type: processors.ParamFloat, Default: 0.45, Min: processors.Range(0), Max: processors.Range(1),
			Description: "IoU above which overlapping boxes of one class are merged"},
		{Name: "layout", Type: processors.ParamEnum, Default: "auto", Choices: []string{"auto", "v5", "v8"},
			Description: "output layout: v5 [1,N,5+C] with objectness, v8 [1,4+C,N]; auto guesses from the shape"},
		{Name: "url", Type: processors.ParamString, Default: "127.0.0.1:8001",
			Description: "Triton / KServe v2 gRPC address host:port (triton backend)"},
		{Name: "model_name", Type: processors.ParamString, Default: "yolov8n",
			Description: "model name on the inference server (triton backend)"},
		{Name: "timeout", Type: processors.ParamString, Default: "2s",
			Description: "deadline of one inference call (triton backend), e.g. 500ms"},
	}
}

// options are the parameters both backends share, parsed once.
type options struct {
	size    int
	decode  DecodeOptions
	timeout time.Duration
}

func parseOptions(p processors.Params, files *modelfiles.Dir) (options, error) {
	o := options{size: p.Int("input_size")}
	if o.size == 0 {
		o.size = 640
	}
	if o.size < 32 || o.size > 4096 {
		return o, fmt.Errorf("%w \"input_size\": %d out of 32..4096", processors.ErrBadParam, o.size)
	}
	classes, err := ParseClasses(p.String("classes"), files)
	if err != nil {
		return o, fmt.Errorf("%w \"classes\": %w", processors.ErrBadParam, err)
	}
	layout, err := ParseLayout(p.String("layout"))
	if err != nil {
		return o, fmt.Errorf("%w \"layout\": %v", processors.ErrBadParam, err)
	}
	conf := 0.25
	if v, ok := p["conf_threshold"].(float64); ok {
		conf = v
	}
	nmsT := 0.45
	if v, ok := p["nms_threshold"].(float64); ok {
		nmsT = v
	}
	o.decode = DecodeOptions{Layout: layout, Classes: classes, ConfThreshold: float32(conf), NMSThreshold: float32(nmsT)}
	o.timeout = 2 * time.Second
	if s := strings.TrimSpace(p.String("timeout")); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return o, fmt.Errorf("%w \"timeout\": %q is not a positive duration", processors.ErrBadParam, s)
		}
		o.timeout = d
	}
	return o, nil
}

// ONNX runs a YOLO ONNX model in-process through OpenCV DNN.
type ONNX struct {
	opts options
	net  *cvdnn.Net
	pre  Preprocessor
	// in and outs are reused frame after frame.
	in    []cvdnn.Input
	outs  []cvdnn.Output
	shape []int64
}

// NewONNX loads the model named by params["model"] (read through files, so
// from models_dir, at most modelfiles.MaxModelBytes) and runs it once on a
// blank picture, so a model OpenCV cannot run at input_size fails here, not
// on the first frame.
func NewONNX(params processors.Params, files *modelfiles.Dir) (processors.Processor, error) {
	return newONNX(params, files)
}

func newONNX(params processors.Params, files *modelfiles.Dir) (*ONNX, error) {
	o, err := parseOptions(params, files)
	if err != nil {
		return nil, err
	}
	path := params.String("model")
	if path == "" {
		return nil, fmt.Errorf("%w \"model\": an ONNX file is required", processors.ErrBadParam)
	}
	buf, err := files.ReadFile(path, modelfiles.MaxModelBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrModel, err)
	}
	net, err := cvdnn.Load(buf)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrModel, path, err)
	}
	m := &ONNX{opts: o, net: net}
	m.in = []cvdnn.Input{{Shape: []int{1, 3, o.size, o.size}, Data: make([]float32, 3*o.size*o.size)}}
	if m.outs, err = net.Forward(m.in, nil, m.outs); err != nil {
		net.Close()
		return nil, fmt.Errorf("%w %s does not run at input_size %d: %v", ErrModel, path, o.size, err)
	}
	if _, _, _, err := ResolveLayout(toInt64(m.outs[0].Shape, nil), len(o.decode.Classes), o.decode.Layout); err != nil {
		net.Close()
		return nil, fmt.Errorf("%w %s: %v", ErrModel, path, err)
	}
	return m, nil
}

func toInt64(dims []int, dst []int64) []int64 {
	dst = dst[:0]
	for _, d := range dims {
		dst = append(dst, int64(d))
	}
	return dst
}

// Process implements processors.Processor: detections in the input's pixels.
func (m *ONNX) Process(ctx context.Context, in *processors.Input, out *processors.Output) error {
	lb, _, err := m.pre.Run(in.Image, m.opts.size, m.in[0].Data)
	if err != nil {
		return err
	}
	if m.outs, err = m.net.Forward(m.in, nil, m.outs); err != nil {
		return fmt.Errorf("%w: %v", ErrModel, err)
	}
	m.shape = toInt64(m.outs[0].Shape, m.shape)
	dets, err := DecodeErr(m.outs[0].Data, m.shape, lb, m.opts.decode)
	if err != nil {
		return err
	}
	out.Detections = append(out.Detections, dets...)
	return nil
}

// Close frees the network and buffers; a second Close is harmless.
func (m *ONNX) Close() error {
	m.pre.Close()
	return m.net.Close()
}
