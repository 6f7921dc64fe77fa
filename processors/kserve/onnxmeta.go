package kserve

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// ErrBadModel reports an ONNX file whose graph cannot be read.
var ErrBadModel = errors.New("bad ONNX model")

// Tensor describes one graph input or output.
type Tensor struct {
	Name string
	// Datatype in KServe terms: FP32, INT64, ...
	Datatype string
	// Shape with -1 for a symbolic or unknown dimension.
	Shape []int64
}

// onnxTypes maps ONNX TensorProto.DataType to KServe datatypes.
var onnxTypes = map[uint64]string{
	1: "FP32", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64",
	8: "BYTES", 9: "BOOL", 10: "FP16", 11: "FP64", 12: "UINT32", 13: "UINT64",
}

// ReadONNXSignature reads the graph inputs (initializers excluded: old
// exporters list weights as inputs) and outputs of an ONNX model. It walks
// the protobuf by hand (ModelProto.graph = 7; GraphProto.initializer = 5,
// input = 11, output = 12) so no ONNX library is needed.
func ReadONNXSignature(model []byte) (inputs, outputs []Tensor, err error) {
	graph, err := findField(model, 7)
	if err != nil {
		return nil, nil, err
	}
	if graph == nil {
		return nil, nil, fmt.Errorf("%w: no graph", ErrBadModel)
	}
	inits := map[string]bool{}
	var rawIn, rawOut [][]byte
	err = eachField(graph, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 5:
			name, err := findField(v, 8)
			if err != nil {
				return err
			}
			inits[string(name)] = true
		case 11:
			rawIn = append(rawIn, v)
		case 12:
			rawOut = append(rawOut, v)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	for _, v := range rawIn {
		t, err := readValueInfo(v)
		if err != nil {
			return nil, nil, err
		}
		if !inits[t.Name] {
			inputs = append(inputs, t)
		}
	}
	for _, v := range rawOut {
		t, err := readValueInfo(v)
		if err != nil {
			return nil, nil, err
		}
		outputs = append(outputs, t)
	}
	if len(inputs) == 0 || len(outputs) == 0 {
		return nil, nil, fmt.Errorf("%w: graph has %d inputs and %d outputs", ErrBadModel, len(inputs), len(outputs))
	}
	return inputs, outputs, nil
}

// readValueInfo reads ValueInfoProto{name = 1, type = 2 {tensor_type = 1
// {elem_type = 1, shape = 2 {dim = 1 {dim_value = 1 | dim_param = 2}}}}}.
func readValueInfo(b []byte) (Tensor, error) {
	var t Tensor
	name, err := findField(b, 1)
	if err != nil {
		return t, err
	}
	t.Name = string(name)
	if t.Name == "" {
		return t, fmt.Errorf("%w: unnamed graph input or output", ErrBadModel)
	}
	typ, err := findField(b, 2)
	if err != nil || typ == nil {
		return t, err
	}
	tensor, err := findField(typ, 1)
	if err != nil || tensor == nil {
		return t, err
	}
	err = eachField(tensor, func(num protowire.Number, wt protowire.Type, v []byte) error {
		switch {
		case num == 1 && wt == protowire.VarintType:
			x, _ := protowire.ConsumeVarint(v)
			t.Datatype = onnxTypes[x]
		case num == 2 && wt == protowire.BytesType:
			t.Shape = t.Shape[:0]
			return eachField(v, func(num protowire.Number, wt protowire.Type, dim []byte) error {
				if num != 1 || wt != protowire.BytesType {
					return nil
				}
				d := int64(-1)
				err := eachField(dim, func(num protowire.Number, wt protowire.Type, v []byte) error {
					if num == 1 && wt == protowire.VarintType {
						x, _ := protowire.ConsumeVarint(v)
						if int64(x) > 0 {
							d = int64(x)
						}
					}
					return nil
				})
				if len(t.Shape) >= 16 {
					return fmt.Errorf("%w: tensor %q has too many dimensions", ErrBadModel, t.Name)
				}
				t.Shape = append(t.Shape, d)
				return err
			})
		}
		return nil
	})
	if t.Datatype == "" {
		t.Datatype = "FP32"
	}
	return t, err
}

// eachField calls fn for every top-level field of a message; v is the
// field's payload (for varints, the encoded varint).
func eachField(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: %v", ErrBadModel, protowire.ParseError(n))
		}
		b = b[n:]
		var v []byte
		switch typ {
		case protowire.BytesType:
			val, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return fmt.Errorf("%w: %v", ErrBadModel, protowire.ParseError(m))
			}
			v, n = val, m
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("%w: %v", ErrBadModel, protowire.ParseError(n))
			}
			v = b[:n]
		}
		if err := fn(num, typ, v); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// findField returns the payload of the last length-delimited field num.
func findField(b []byte, num protowire.Number) ([]byte, error) {
	var out []byte
	err := eachField(b, func(n protowire.Number, typ protowire.Type, v []byte) error {
		if n == num && typ == protowire.BytesType {
			out = v
			if out == nil {
				out = []byte{}
			}
		}
		return nil
	})
	return out, err
}
