package conformance

import (
	"bytes"
	"fmt"
	"image"
	"image/draw"
	"image/jpeg"
	"image/png"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	pb "github.com/imageflowcanvas/imageflow/proto/processorv1"
)

// variant is the same picture in one of the wire forms a processor must
// accept.
type variant struct {
	name string
	img  *pb.Image
	// lossless variants carry exactly the pixels of the packed BGR24 one, so a
	// deterministic processor must answer them identically.
	lossless bool
}

// testImages turns a JPEG or PNG into every form of the contract: the file
// as sent (encoded), PNG, and raw BGR24 packed, BGR24 with padded rows, RGB24
// and GRAY8. The pixels come from Go's decoder; only the encoded original may
// decode differently in the processor.
func testImages(file []byte) ([]variant, int, int, error) {
	src, format, err := image.Decode(bytes.NewReader(file))
	if err != nil {
		return nil, 0, 0, fmt.Errorf("test image: %w", err)
	}
	b := src.Bounds()
	rgba := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	draw.Draw(rgba, rgba.Bounds(), src, b.Min, draw.Src)
	w, h := b.Dx(), b.Dy()
	var pngBuf bytes.Buffer
	if err := png.Encode(&pngBuf, rgba); err != nil {
		return nil, 0, 0, err
	}
	bgr := make([]byte, w*h*3)
	rgb := make([]byte, w*h*3)
	gray := make([]byte, w*h)
	const pad = 13 // odd on purpose: rows that are not 4-byte aligned
	stride := w*3 + pad
	strided := make([]byte, stride*h)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			p := rgba.PixOffset(x, y)
			r, g, bl := rgba.Pix[p], rgba.Pix[p+1], rgba.Pix[p+2]
			i := (y*w + x) * 3
			bgr[i], bgr[i+1], bgr[i+2] = bl, g, r
			rgb[i], rgb[i+1], rgb[i+2] = r, g, bl
			s := y*stride + x*3
			strided[s], strided[s+1], strided[s+2] = bl, g, r
			gray[y*w+x] = uint8((299*uint32(r) + 587*uint32(g) + 114*uint32(bl)) / 1000)
		}
		for i := 0; i < pad; i++ { // padding the processor must skip
			strided[y*stride+w*3+i] = 0xA5
		}
	}
	encFormat := busv1.PixelFormat_PIXEL_FORMAT_JPEG
	if format == "png" {
		encFormat = busv1.PixelFormat_PIXEL_FORMAT_PNG
	}
	raw := func(f busv1.PixelFormat, stride int, data []byte) *pb.Image {
		return &pb.Image{Data: &pb.Image_Raw{Raw: &pb.RawImage{Format: f, Width: uint32(w), Height: uint32(h), Stride: uint32(stride), Data: data}}}
	}
	enc := func(f busv1.PixelFormat, data []byte) *pb.Image {
		return &pb.Image{Data: &pb.Image_Encoded{Encoded: &pb.EncodedImage{Format: f, Data: data}}}
	}
	return []variant{
		{name: "bgr24", img: raw(busv1.PixelFormat_PIXEL_FORMAT_BGR24, 0, bgr), lossless: true},
		{name: "bgr24-stride", img: raw(busv1.PixelFormat_PIXEL_FORMAT_BGR24, stride, strided), lossless: true},
		{name: "rgb24", img: raw(busv1.PixelFormat_PIXEL_FORMAT_RGB24, 0, rgb), lossless: true},
		{name: "png", img: enc(busv1.PixelFormat_PIXEL_FORMAT_PNG, pngBuf.Bytes()), lossless: true},
		{name: format, img: enc(encFormat, file)},
		{name: "gray8", img: raw(busv1.PixelFormat_PIXEL_FORMAT_GRAY8, 0, gray)},
	}, w, h, nil
}

// corruptImages are inputs every processor must refuse with INVALID_ARGUMENT.
func corruptImages(w, h int) []variant {
	truncated := make([]byte, 200)
	copy(truncated, []byte{0xFF, 0xD8, 0xFF, 0xE0}) // a JPEG header and then nothing
	return []variant{
		{name: "truncated jpeg", img: &pb.Image{Data: &pb.Image_Encoded{Encoded: &pb.EncodedImage{Format: busv1.PixelFormat_PIXEL_FORMAT_JPEG, Data: truncated}}}},
		{name: "raw shorter than its size", img: &pb.Image{Data: &pb.Image_Raw{Raw: &pb.RawImage{Format: busv1.PixelFormat_PIXEL_FORMAT_BGR24, Width: uint32(w), Height: uint32(h), Data: make([]byte, w*3)}}}},
		{name: "stride below row size", img: &pb.Image{Data: &pb.Image_Raw{Raw: &pb.RawImage{Format: busv1.PixelFormat_PIXEL_FORMAT_BGR24, Width: 4, Height: 4, Stride: 5, Data: make([]byte, 20)}}}},
		{name: "no image", img: nil},
	}
}

// jpegOf encodes a picture for callers needing a default test image.
func jpegOf(img image.Image) []byte {
	var buf bytes.Buffer
	_ = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90})
	return buf.Bytes()
}
