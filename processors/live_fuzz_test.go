package processors

import (
	"testing"

	"gocv.io/x/gocv"

	"github.com/imageflowcanvas/imageflow/media/imagedecode/imagetest"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// FuzzLiveDecode feeds arbitrary frames (as another process could publish
// them) to the live runner's decoder: it must return an error or a picture
// of the announced size, never crash.
func FuzzLiveDecode(f *testing.F) {
	f.Add(uint32(4), uint32(2), int32(busv1.PixelFormat_PIXEL_FORMAT_BGR24), uint32(0), make([]byte, 24))
	f.Add(uint32(4), uint32(2), int32(busv1.PixelFormat_PIXEL_FORMAT_BGR24), uint32(16), make([]byte, 28))
	f.Add(uint32(4), uint32(2), int32(busv1.PixelFormat_PIXEL_FORMAT_RGB24), uint32(0), make([]byte, 24))
	f.Add(uint32(4), uint32(2), int32(busv1.PixelFormat_PIXEL_FORMAT_GRAY8), uint32(0), make([]byte, 8))
	f.Add(uint32(4), uint32(2), int32(busv1.PixelFormat_PIXEL_FORMAT_I420), uint32(0), make([]byte, 12))
	f.Add(uint32(3), uint32(3), int32(busv1.PixelFormat_PIXEL_FORMAT_I420), uint32(0), make([]byte, 14))
	f.Add(uint32(0), uint32(0), int32(busv1.PixelFormat_PIXEL_FORMAT_JPEG), uint32(0), []byte{0xff, 0xd8, 0xff, 0xe0, 0, 0x10, 'J', 'F', 'I', 'F'})
	f.Add(uint32(0), uint32(0), int32(busv1.PixelFormat_PIXEL_FORMAT_PNG), uint32(0), []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"))
	f.Add(uint32(1<<20), uint32(1<<20), int32(busv1.PixelFormat_PIXEL_FORMAT_BGR24), uint32(0), []byte{1})
	f.Add(uint32(8), uint32(8), int32(99), uint32(0), []byte{1})
	f.Add(uint32(0), uint32(0), int32(busv1.PixelFormat_PIXEL_FORMAT_PNG), uint32(0), imagetest.PNG(100000, 100000))
	f.Add(uint32(0), uint32(0), int32(busv1.PixelFormat_PIXEL_FORMAT_JPEG), uint32(0), imagetest.JPEG(65000, 65000))
	jpeg := gocv.NewMatWithSize(16, 16, gocv.MatTypeCV8UC3)
	if buf, err := gocv.IMEncode(gocv.JPEGFileExt, jpeg); err == nil {
		f.Add(uint32(16), uint32(16), int32(busv1.PixelFormat_PIXEL_FORMAT_JPEG), uint32(0), append([]byte(nil), buf.GetBytes()...))
		buf.Close()
	}
	jpeg.Close()
	r := &LiveRunner{img: gocv.NewMat(), stage: gocv.NewMat()}
	f.Fuzz(func(t *testing.T, w, h uint32, format int32, stride uint32, data []byte) {
		fr := &busv1.Frame{Width: w, Height: h, Format: busv1.PixelFormat(format), Stride: stride, Data: data}
		img, err := r.decode(fr)
		if err != nil {
			return
		}
		decoded := fr.Format == busv1.PixelFormat_PIXEL_FORMAT_JPEG || fr.Format == busv1.PixelFormat_PIXEL_FORMAT_PNG
		if img.Empty() || img.Type() != gocv.MatTypeCV8UC3 {
			t.Fatalf("decoded %v to an empty or non-BGR picture", fr.Format)
		}
		if !decoded && (img.Cols() != int(w) || img.Rows() != int(h)) {
			t.Fatalf("%dx%d raw frame decoded to %dx%d", w, h, img.Cols(), img.Rows())
		}
	})
}
