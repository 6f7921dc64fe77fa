// Package yolotest builds tiny ONNX models with a YOLO-shaped output of known
// values, so the detector, the KServe server and their tests run real OpenCV
// DNN inference without downloading a model. ONNX files are protobuf; the few
// fields needed are written by hand with protowire (field numbers from
// onnx.proto, which is MIT-licensed).
package yolotest

import (
	"encoding/binary"
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// ONNX element types (TensorProto.DataType).
const (
	onnxFloat = 1
	onnxInt64 = 7
)

// ONNX attribute types (AttributeProto.AttributeType).
const (
	attrInts = 7
)

// Model returns the bytes of an ONNX model (IR 8, opset 13) with one input
// "images" of shape [1, 3, size, size] and one output "output0" holding out
// reshaped to shape, whatever the input. The graph is
//
//	GlobalAveragePool(images) -> Conv 1x1 (zero weights, bias = out) -> Reshape(shape)
//
// so OpenCV DNN really runs a convolution; the zero weights make the output
// exactly the bias. The product of shape must equal len(out).
func Model(size int, out []float32, shape []int64) ([]byte, error) {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	if n != int64(len(out)) || n == 0 {
		return nil, fmt.Errorf("yolotest: shape %v holds %d values, got %d", shape, n, len(out))
	}
	if size <= 0 {
		return nil, fmt.Errorf("yolotest: input size %d", size)
	}
	c := int64(len(out))
	weights := make([]float32, c*3) // [C, 3, 1, 1], all zero

	var g []byte
	g = appendMsg(g, 1, node([]string{"images"}, []string{"pooled"}, "pool", "GlobalAveragePool", nil))
	g = appendMsg(g, 1, node([]string{"pooled", "W", "B"}, []string{"conv"}, "conv", "Conv",
		[][]byte{intsAttr("kernel_shape", []int64{1, 1})}))
	g = appendMsg(g, 1, node([]string{"conv", "shape"}, []string{"output0"}, "reshape", "Reshape", nil))
	g = protowire.AppendTag(g, 2, protowire.BytesType)
	g = protowire.AppendString(g, "yolotest")
	g = appendMsg(g, 5, floatTensor("W", []int64{c, 3, 1, 1}, weights))
	g = appendMsg(g, 5, floatTensor("B", []int64{c}, out))
	g = appendMsg(g, 5, int64Tensor("shape", []int64{int64(len(shape))}, shape))
	g = appendMsg(g, 11, valueInfo("images", []int64{1, 3, int64(size), int64(size)}))
	g = appendMsg(g, 12, valueInfo("output0", shape))

	var m []byte
	m = protowire.AppendTag(m, 1, protowire.VarintType) // ir_version
	m = protowire.AppendVarint(m, 8)
	var opset []byte
	opset = protowire.AppendTag(opset, 1, protowire.BytesType) // domain ""
	opset = protowire.AppendString(opset, "")
	opset = protowire.AppendTag(opset, 2, protowire.VarintType) // version
	opset = protowire.AppendVarint(opset, 13)
	m = appendMsg(m, 8, opset)
	m = protowire.AppendTag(m, 2, protowire.BytesType) // producer_name
	m = protowire.AppendString(m, "imageflow-yolotest")
	m = appendMsg(m, 7, g)
	return m, nil
}

// V8Output lays out boxes as a YOLOv8 head does: shape [1, 4+C, N], rows cx,
// cy, w, h, then one score row per class; boxes in input-image pixels.
func V8Output(numClasses int, boxes []Box) ([]float32, []int64) {
	n := len(boxes)
	rows := 4 + numClasses
	out := make([]float32, rows*n)
	for i, b := range boxes {
		out[0*n+i] = b.CX
		out[1*n+i] = b.CY
		out[2*n+i] = b.W
		out[3*n+i] = b.H
		if b.Class >= 0 && b.Class < numClasses {
			out[(4+b.Class)*n+i] = b.Score
		}
	}
	return out, []int64{1, int64(rows), int64(n)}
}

// V5Output lays out boxes as a YOLOv5 head does: shape [1, N, 5+C], each row
// cx, cy, w, h, objectness, class scores. The class score is 1 and the
// objectness is Score, so the decoded confidence is Score.
func V5Output(numClasses int, boxes []Box) ([]float32, []int64) {
	n := len(boxes)
	cols := 5 + numClasses
	out := make([]float32, n*cols)
	for i, b := range boxes {
		row := out[i*cols : (i+1)*cols]
		row[0], row[1], row[2], row[3], row[4] = b.CX, b.CY, b.W, b.H, b.Score
		if b.Class >= 0 && b.Class < numClasses {
			row[5+b.Class] = 1
		}
	}
	return out, []int64{1, int64(n), int64(cols)}
}

// Box is one raw prediction of a test model, centre and size in model-input
// pixels.
type Box struct {
	CX, CY, W, H float32
	Class        int
	Score        float32
}

func appendMsg(b []byte, num protowire.Number, msg []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, msg)
}

func node(inputs, outputs []string, name, op string, attrs [][]byte) []byte {
	var b []byte
	for _, s := range inputs {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	for _, s := range outputs {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendString(b, name)
	b = protowire.AppendTag(b, 4, protowire.BytesType)
	b = protowire.AppendString(b, op)
	for _, a := range attrs {
		b = appendMsg(b, 5, a)
	}
	return b
}

func intsAttr(name string, v []int64) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, name)
	for _, x := range v {
		b = protowire.AppendTag(b, 8, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(x))
	}
	b = protowire.AppendTag(b, 20, protowire.VarintType)
	return protowire.AppendVarint(b, attrInts)
}

func tensorHeader(name string, dims []int64, dtype uint64) []byte {
	var b []byte
	for _, d := range dims {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(d))
	}
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	b = protowire.AppendVarint(b, dtype)
	b = protowire.AppendTag(b, 8, protowire.BytesType)
	return protowire.AppendString(b, name)
}

func floatTensor(name string, dims []int64, v []float32) []byte {
	b := tensorHeader(name, dims, onnxFloat)
	raw := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(f))
	}
	b = protowire.AppendTag(b, 9, protowire.BytesType) // raw_data
	return protowire.AppendBytes(b, raw)
}

func int64Tensor(name string, dims []int64, v []int64) []byte {
	b := tensorHeader(name, dims, onnxInt64)
	raw := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(raw[8*i:], uint64(x))
	}
	b = protowire.AppendTag(b, 9, protowire.BytesType)
	return protowire.AppendBytes(b, raw)
}

func valueInfo(name string, shape []int64) []byte {
	var dims []byte
	for _, d := range shape {
		var dim []byte
		dim = protowire.AppendTag(dim, 1, protowire.VarintType)
		dim = protowire.AppendVarint(dim, uint64(d))
		dims = appendMsg(dims, 1, dim)
	}
	var tensor []byte
	tensor = protowire.AppendTag(tensor, 1, protowire.VarintType)
	tensor = protowire.AppendVarint(tensor, onnxFloat)
	tensor = appendMsg(tensor, 2, dims)
	var typ []byte
	typ = appendMsg(typ, 1, tensor)
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, name)
	return appendMsg(b, 2, typ)
}
