// Package cvdnn runs ONNX models through OpenCV DNN behind a C layer that
// catches OpenCV's C++ exceptions. gocv's DNN calls let them escape, so one
// malformed model file or mis-shaped tensor would abort the server; here they
// come back as errors. Used by the YOLO detector and the KServe server.
package cvdnn

/*
#cgo !windows pkg-config: opencv4
#cgo CXXFLAGS: --std=c++11
#include <stdlib.h>
#include "cvdnn.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"strings"
	"unsafe"
)

// ErrClosed is returned by a Net used after Close.
var ErrClosed = errors.New("cvdnn: network closed")

// Error is an OpenCV failure.
type Error struct{ Msg string }

func (e *Error) Error() string { return "opencv: " + e.Msg }

func takeErr(p *C.char) error {
	if p == nil {
		return nil
	}
	defer C.free(unsafe.Pointer(p))
	return &Error{Msg: C.GoString(p)}
}

// Net is one loaded network. It is not safe for concurrent use.
type Net struct {
	p     C.CvdnnNet
	model []byte
	cstrs map[string]*C.char
	// outNames is a C array of the names last passed to Forward.
	outNames  **C.char
	outCount  int
	outCached []string
	dims      [8]C.int
	size      C.size_t // an output's length; a field, since a local whose address goes to C escapes to the heap on every call
}

// Load parses an ONNX model held in memory.
func Load(model []byte) (*Net, error) {
	if len(model) == 0 {
		return nil, &Error{Msg: "empty model"}
	}
	var p C.CvdnnNet
	if err := takeErr(C.cvdnn_load((*C.char)(unsafe.Pointer(&model[0])), C.size_t(len(model)), &p)); err != nil {
		return nil, err
	}
	return &Net{p: p, model: model, cstrs: make(map[string]*C.char)}, nil
}

func (n *Net) cstr(s string) *C.char {
	c, ok := n.cstrs[s]
	if !ok {
		c = C.CString(s)
		n.cstrs[s] = c
	}
	return c
}

// Input is one input tensor (float32, row-major).
type Input struct {
	// Name is the graph input's name; empty sets the first input.
	Name  string
	Shape []int
	Data  []float32
}

// Output is one output tensor; Forward reuses its slices between calls.
type Output struct {
	Shape []int
	Data  []float32
}

// Forward runs the network; after an OpenCV error the network is reloaded,
// since a failed shape inference can leave layers half-configured. names selects outputs (empty: the network's
// last layer). outs is reused and returned with one entry per output, their
// data copied into Go memory.
func (n *Net) Forward(inputs []Input, names []string, outs []Output) ([]Output, error) {
	if n.p == nil {
		return outs, ErrClosed
	}
	outs, err := n.forward(inputs, names, outs)
	// forward returns OpenCV's errors unwrapped; a type assertion, unlike
	// errors.As with a pointer to a local, costs no allocation per frame.
	if _, ok := err.(*Error); ok {
		n.reload()
	}
	return outs, err
}

// reload replaces the network by a fresh copy of the model.
func (n *Net) reload() {
	var p C.CvdnnNet
	if takeErr(C.cvdnn_load((*C.char)(unsafe.Pointer(&n.model[0])), C.size_t(len(n.model)), &p)) != nil {
		return // it loaded once; keep the old one rather than none
	}
	C.cvdnn_free(n.p)
	n.p = p
}

func (n *Net) forward(inputs []Input, names []string, outs []Output) ([]Output, error) {
	for _, in := range inputs {
		total := 1
		if len(in.Shape) == 0 || len(in.Shape) > len(n.dims) {
			return outs, fmt.Errorf("cvdnn: input %q: %d dimensions", in.Name, len(in.Shape))
		}
		for i, d := range in.Shape {
			if d <= 0 {
				return outs, fmt.Errorf("cvdnn: input %q: shape %v", in.Name, in.Shape)
			}
			n.dims[i] = C.int(d)
			total *= d
		}
		if total != len(in.Data) {
			return outs, fmt.Errorf("cvdnn: input %q: shape %v needs %d values, got %d", in.Name, in.Shape, total, len(in.Data))
		}
		if err := takeErr(C.cvdnn_set_input(n.p, n.cstr(in.Name), (*C.float)(unsafe.Pointer(&in.Data[0])), &n.dims[0], C.int(len(in.Shape)))); err != nil {
			return outs, err
		}
	}
	if !sameNames(names, n.outCached) {
		n.setOutNames(names)
	}
	if err := takeErr(C.cvdnn_forward(n.p, n.outNames, C.int(n.outCount))); err != nil {
		return outs, err
	}
	count := int(C.cvdnn_out_count(n.p))
	if cap(outs) < count {
		outs = append(outs[:cap(outs)], make([]Output, count-cap(outs))...)
	}
	outs = outs[:count]
	for i := range outs {
		nd := int(C.cvdnn_out_dims(n.p, C.int(i), &n.dims[0], C.int(len(n.dims))))
		if nd > len(n.dims) {
			return outs, fmt.Errorf("cvdnn: output %d has %d dimensions", i, nd)
		}
		outs[i].Shape = outs[i].Shape[:0]
		for k := 0; k < nd; k++ {
			outs[i].Shape = append(outs[i].Shape, int(n.dims[k]))
		}
		ptr := C.cvdnn_out_data(n.p, C.int(i), &n.size)
		if ptr == nil {
			return outs, fmt.Errorf("cvdnn: output %d is not continuous float32", i)
		}
		src := unsafe.Slice((*float32)(unsafe.Pointer(ptr)), int(n.size))
		outs[i].Data = append(outs[i].Data[:0], src...)
	}
	return outs, nil
}

func sameNames(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (n *Net) setOutNames(names []string) {
	if n.outNames != nil {
		C.free(unsafe.Pointer(n.outNames))
		n.outNames = nil
	}
	n.outCount = len(names)
	n.outCached = append([]string(nil), names...)
	if len(names) == 0 {
		return
	}
	arr := (**C.char)(C.malloc(C.size_t(len(names)) * C.size_t(unsafe.Sizeof(uintptr(0)))))
	s := unsafe.Slice(arr, len(names))
	for i, name := range names {
		s[i] = n.cstr(name)
	}
	n.outNames = arr
}

// OutputNames lists the network's outputs (the layers nothing else reads),
// in the order OpenCV reports them; Forward takes these names.
func (n *Net) OutputNames() ([]string, error) {
	if n.p == nil {
		return nil, ErrClosed
	}
	var all *C.char
	if err := takeErr(C.cvdnn_out_names(n.p, &all)); err != nil {
		return nil, err
	}
	if all == nil {
		return nil, &Error{Msg: "out of memory"}
	}
	defer C.free(unsafe.Pointer(all))
	s := C.GoString(all)
	if s == "" {
		return nil, nil
	}
	return strings.Split(s, "\n"), nil
}

// Close frees the network; a second Close is harmless.
func (n *Net) Close() error {
	if n.p == nil {
		return nil
	}
	C.cvdnn_free(n.p)
	n.p = nil
	for _, c := range n.cstrs {
		C.free(unsafe.Pointer(c))
	}
	n.cstrs = nil
	if n.outNames != nil {
		C.free(unsafe.Pointer(n.outNames))
		n.outNames = nil
	}
	return nil
}
