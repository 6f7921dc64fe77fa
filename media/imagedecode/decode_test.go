package imagedecode_test

import (
	"errors"
	"os"
	"testing"

	"gocv.io/x/gocv"

	"github.com/imageflowcanvas/imageflow/media/imagedecode"
	"github.com/imageflowcanvas/imageflow/media/imagedecode/imagetest"
)

const samples = "/usr/share/doc/opencv-doc/examples/data/"

// encoded returns a real w x h picture in format ext, made by OpenCV.
func encoded(t testing.TB, ext string, w, h int, params ...int) []byte {
	img := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(10, 120, 200, 0), h, w, gocv.MatTypeCV8UC3)
	defer img.Close()
	var (
		buf *gocv.NativeByteBuffer
		err error
	)
	if len(params) == 0 {
		buf, err = gocv.IMEncode(gocv.FileExt(ext), img)
	} else {
		buf, err = gocv.IMEncodeWithParams(gocv.FileExt(ext), img, params)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	return append([]byte(nil), buf.GetBytes()...)
}

// headerCase is one row of the table that feeds the unit tests and the
// fuzz seeds.
type headerCase struct {
	name string
	data []byte
	want imagedecode.Header
	err  error // nil: header reads as want
}

func headerCases(t testing.TB) []headerCase {
	lossless, err := imagetest.WebPLossless(10000, 10000)
	if err != nil {
		t.Fatal(err)
	}
	return []headerCase{
		{"jpeg", encoded(t, ".jpg", 33, 17), imagedecode.Header{Format: imagedecode.JPEG, Width: 33, Height: 17}, nil},
		{"png", encoded(t, ".png", 33, 17), imagedecode.Header{Format: imagedecode.PNG, Width: 33, Height: 17}, nil},
		{"bmp", encoded(t, ".bmp", 33, 17), imagedecode.Header{Format: imagedecode.BMP, Width: 33, Height: 17}, nil},
		{"webp-lossy", encoded(t, ".webp", 33, 17, gocv.IMWriteWebpQuality, 80), imagedecode.Header{Format: imagedecode.WebP, Width: 33, Height: 17}, nil},
		{"webp-lossless", encoded(t, ".webp", 33, 17, gocv.IMWriteWebpQuality, 101), imagedecode.Header{Format: imagedecode.WebP, Width: 33, Height: 17}, nil},
		{"bmp-bomb", imagetest.BMP(40000, 40000), imagedecode.Header{Format: imagedecode.BMP, Width: 40000, Height: 40000}, nil},
		{"bmp-topdown", imagetest.BMP(20, -30), imagedecode.Header{Format: imagedecode.BMP, Width: 20, Height: 30}, nil},
		{"png-bomb", imagetest.PNG(100000, 100000), imagedecode.Header{Format: imagedecode.PNG, Width: 100000, Height: 100000}, nil},
		{"jpeg-bomb", imagetest.JPEG(65000, 65000), imagedecode.Header{Format: imagedecode.JPEG, Width: 65000, Height: 65000}, nil},
		{"webp-vp8-header", imagetest.WebPHeader(16383, 16383), imagedecode.Header{Format: imagedecode.WebP, Width: 16383, Height: 16383}, nil},
		{"webp-lossless-bomb", lossless, imagedecode.Header{Format: imagedecode.WebP, Width: 10000, Height: 10000}, nil},
		{"webp-vp8x", []byte("RIFF\x16\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00\x00\x00\x00\x00\x0f\x27\x00\x0f\x27\x00"), imagedecode.Header{Format: imagedecode.WebP, Width: 10000, Height: 10000}, nil},
		{"empty", nil, imagedecode.Header{}, imagedecode.ErrUnsupported},
		{"text", []byte("hello, world"), imagedecode.Header{}, imagedecode.ErrUnsupported},
		{"tiff", []byte("II*\x00\x08\x00\x00\x00"), imagedecode.Header{}, imagedecode.ErrUnsupported},
		{"gif", []byte("GIF89a\x01\x00\x01\x00"), imagedecode.Header{}, imagedecode.ErrUnsupported},
		{"jpeg-no-frame", []byte("\xff\xd8\xff\xe0garbage"), imagedecode.Header{Format: imagedecode.JPEG}, imagedecode.ErrCorrupt},
		{"jpeg-scan-first", []byte{0xFF, 0xD8, 0xFF, 0xDA, 0, 2}, imagedecode.Header{Format: imagedecode.JPEG}, imagedecode.ErrCorrupt},
		{"png-short", []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"), imagedecode.Header{Format: imagedecode.PNG}, imagedecode.ErrCorrupt},
		{"png-zero", imagetest.PNG(0, 10), imagedecode.Header{Format: imagedecode.PNG}, imagedecode.ErrCorrupt},
		{"bmp-odd-header", []byte("BM\x00\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00\x14\x00\x00\x00"), imagedecode.Header{Format: imagedecode.BMP}, imagedecode.ErrCorrupt},
		{"bmp-min-height", imagetest.BMP(10, -1<<31), imagedecode.Header{Format: imagedecode.BMP, Width: 10, Height: 1 << 31}, nil},
		{"webp-truncated", []byte("RIFF\x20\x00\x00\x00WEBPVP8L\x40\x00\x00\x00\x2f"), imagedecode.Header{Format: imagedecode.WebP}, imagedecode.ErrCorrupt},
		{"webp-unknown-chunk", []byte("RIFF\x0c\x00\x00\x00WEBPALPH\x00\x00\x00\x00"), imagedecode.Header{Format: imagedecode.WebP}, imagedecode.ErrCorrupt},
	}
}

func TestReadHeader(t *testing.T) {
	for _, c := range headerCases(t) {
		got, err := imagedecode.ReadHeader(c.data)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("%s: %v, want %v", c.name, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: %+v %v, want %+v", c.name, got, err, c.want)
		}
	}
}

// TestHeaderMatchesDecoder checks, on OpenCV's own sample pictures and on
// pictures it encodes, that the size read from the header is the size the
// decoder produces.
func TestHeaderMatchesDecoder(t *testing.T) {
	var pics [][]byte
	for _, name := range []string{"messi5.jpg", "baboon.jpg", "fruits.jpg", "HappyFish.jpg", "starry_night.jpg", "smarties.png", "chicky_512.png", "graf1.png"} {
		if b, err := os.ReadFile(samples + name); err == nil {
			pics = append(pics, b)
		}
	}
	for _, c := range headerCases(t)[:5] {
		pics = append(pics, c.data)
	}
	pics = append(pics, encoded(t, ".webp", 641, 479, gocv.IMWriteWebpQuality, 90), encoded(t, ".bmp", 3, 1000))
	for i, b := range pics {
		h, err := imagedecode.ReadHeader(b)
		if err != nil {
			t.Fatalf("picture %d: %v", i, err)
		}
		m, h2, err := imagedecode.Decode(b, imagedecode.Options{})
		if err != nil {
			t.Fatalf("picture %d (%s): %v", i, h.Format, err)
		}
		if h2 != h || m.Cols() != h.Width || m.Rows() != h.Height || m.Type() != gocv.MatTypeCV8UC3 {
			t.Errorf("picture %d: header %+v, decoded %dx%d type %v", i, h, m.Cols(), m.Rows(), m.Type())
		}
		m.Close()
	}
}

// TestDecodeRefusesBombs: each of these aborted the server or took hundreds
// of megabytes before; now each is refused from its header.
func TestDecodeRefusesBombs(t *testing.T) {
	for _, c := range headerCases(t) {
		if c.err != nil || c.want.Pixels() <= imagedecode.DefaultMaxPixels && c.want.Width <= imagedecode.MaxSide {
			continue
		}
		_, _, err := imagedecode.Decode(c.data, imagedecode.Options{})
		if !errors.Is(err, imagedecode.ErrTooLarge) {
			t.Errorf("%s: %v, want ErrTooLarge", c.name, err)
		}
	}
	// A caller's own, lower cap.
	_, _, err := imagedecode.Decode(encoded(t, ".png", 100, 100), imagedecode.Options{MaxPixels: 9999})
	if !errors.Is(err, imagedecode.ErrTooLarge) {
		t.Errorf("100x100 with a cap of 9999: %v", err)
	}
}

// TestDecodeCatchesOpenCVExceptions lifts the pixel cap so OpenCV itself
// meets the 40000x40000 BMP: its size check throws a C++ exception, which
// used to abort the process and now is an error.
func TestDecodeCatchesOpenCVExceptions(t *testing.T) {
	_, _, err := imagedecode.Decode(imagetest.BMP(40000, 40000), imagedecode.Options{MaxPixels: 1 << 40})
	if !errors.Is(err, imagedecode.ErrCorrupt) {
		t.Fatalf("%v, want ErrCorrupt", err)
	}
	t.Log(err)
}

func TestDecodeCorruptData(t *testing.T) {
	for _, b := range [][]byte{imagetest.BMP(100, 100), imagetest.PNG(100, 100), imagetest.JPEG(100, 100), imagetest.WebPHeader(100, 100)} {
		_, h, err := imagedecode.Decode(b, imagedecode.Options{})
		if !errors.Is(err, imagedecode.ErrCorrupt) {
			t.Errorf("%s header only: %v, want ErrCorrupt", h.Format, err)
		}
	}
}

func TestDecodeIntoReusesAndReduces(t *testing.T) {
	dst := gocv.NewMat()
	defer dst.Close()
	b := encoded(t, ".jpg", 640, 480)
	if _, err := imagedecode.DecodeInto(b, &dst, imagedecode.Options{}); err != nil {
		t.Fatal(err)
	}
	p, _ := dst.DataPtrUint8()
	if _, err := imagedecode.DecodeInto(b, &dst, imagedecode.Options{}); err != nil {
		t.Fatal(err)
	}
	if q, _ := dst.DataPtrUint8(); &p[0] != &q[0] {
		t.Error("same-sized decode reallocated the Mat")
	}
	if _, err := imagedecode.DecodeInto(b, &dst, imagedecode.Options{Reduce: 4}); err != nil || dst.Cols() != 160 || dst.Rows() != 120 {
		t.Errorf("reduce 4: %dx%d %v", dst.Cols(), dst.Rows(), err)
	}
}

func FuzzReadHeader(f *testing.F) {
	for _, c := range headerCases(f) {
		f.Add(c.data)
	}
	if b, err := os.ReadFile(samples + "messi5.jpg"); err == nil {
		f.Add(b[:min(len(b), 2048)])
	}
	f.Add([]byte{0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0x04, 0x38, 0x07, 0x80, 0x03})
	f.Add([]byte{0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x02, 0xFF, 0xC0, 0x00, 0x07, 0x08, 0x00, 0x01, 0x00, 0x01})
	f.Add([]byte{0xFF, 0xD8, 0xFF, 0xFF, 0xFF})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := imagedecode.ReadHeader(b)
		if err != nil {
			return
		}
		if h.Width <= 0 || h.Height <= 0 || h.Format == "" {
			t.Fatalf("header %+v from %d bytes", h, len(b))
		}
		if h.Format == imagedecode.JPEG && (h.Width > 65535 || h.Height > 65535) || h.Format == imagedecode.WebP && (h.Width > 1<<24 || h.Height > 1<<24) {
			t.Fatalf("%s size %dx%d beyond what the format can hold", h.Format, h.Width, h.Height)
		}
	})
}

// FuzzDecode runs OpenCV's decoders on whatever passes the header check
// (with a small cap, to keep the fuzzer fast); nothing may crash.
func FuzzDecode(f *testing.F) {
	for _, c := range headerCases(f) {
		f.Add(c.data)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, h, err := imagedecode.Decode(b, imagedecode.Options{MaxPixels: 1 << 16})
		if err != nil {
			return
		}
		if m.Cols() != h.Width || m.Rows() != h.Height {
			t.Errorf("header %+v, decoded %dx%d", h, m.Cols(), m.Rows())
		}
		m.Close()
	})
}
