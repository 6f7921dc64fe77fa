package processors

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// copyFrame copies every field of a frame, including fields added to the
// message later, and reuses the destination's buffer.
func TestCopyFrameCopiesEveryField(t *testing.T) {
	src := &busv1.Frame{}
	m := src.ProtoReflect()
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		var v protoreflect.Value
		switch fd.Kind() {
		case protoreflect.StringKind:
			v = protoreflect.ValueOfString("cam")
		case protoreflect.BytesKind:
			v = protoreflect.ValueOfBytes([]byte{1, 2, 3})
		case protoreflect.EnumKind:
			v = protoreflect.ValueOfEnum(1)
		case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
			v = protoreflect.ValueOfInt64(int64(10 + i))
		case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
			v = protoreflect.ValueOfUint64(uint64(10 + i))
		case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
			v = protoreflect.ValueOfInt32(int32(10 + i))
		case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
			v = protoreflect.ValueOfUint32(uint32(10 + i))
		default:
			t.Fatalf("field %s of kind %v: teach this test and copyFrame about it", fd.Name(), fd.Kind())
		}
		m.Set(fd, v)
	}
	buf := make([]byte, 0, 16)
	dst := &busv1.Frame{Data: buf}
	copyFrame(dst, src)
	if !proto.Equal(dst, src) {
		t.Fatalf("copy %v, want %v", dst, src)
	}
	if &dst.Data[0] != &buf[:1][0] {
		t.Fatal("the destination's buffer was not reused")
	}
	src.Data[0] = 9
	if dst.Data[0] != 1 {
		t.Fatal("the copy shares the source's data")
	}
}
