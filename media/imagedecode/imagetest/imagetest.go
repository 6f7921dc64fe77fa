// Package imagetest builds hostile pictures for tests: tiny files whose
// headers claim huge sizes, the kind that made OpenCV abort the process or
// allocate gigabytes. Each is valid enough for the real decoder to believe
// its header.
package imagetest

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"

	"gocv.io/x/gocv"
)

// BMP is a 24-bit BMP of w x h whose pixel data is missing (70 bytes).
func BMP(w, h int) []byte {
	b := make([]byte, 70)
	copy(b, "BM")
	binary.LittleEndian.PutUint32(b[2:], uint32(len(b)))
	binary.LittleEndian.PutUint32(b[10:], 54) // pixel data offset
	binary.LittleEndian.PutUint32(b[14:], 40) // BITMAPINFOHEADER
	binary.LittleEndian.PutUint32(b[18:], uint32(int32(w)))
	binary.LittleEndian.PutUint32(b[22:], uint32(int32(h)))
	binary.LittleEndian.PutUint16(b[26:], 1)  // planes
	binary.LittleEndian.PutUint16(b[28:], 24) // bits per pixel
	return b
}

// PNG is a PNG of w x h with a valid IHDR and one tiny IDAT (68 bytes).
func PNG(w, h int) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], uint32(w))
	binary.BigEndian.PutUint32(ihdr[4:], uint32(h))
	ihdr[8], ihdr[9] = 8, 2 // 8-bit RGB
	chunk(&b, "IHDR", ihdr)
	chunk(&b, "IDAT", []byte{0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01})
	chunk(&b, "IEND", nil)
	return b.Bytes()
}

func chunk(b *bytes.Buffer, typ string, data []byte) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(data)))
	b.Write(n[:])
	crc := crc32.NewIEEE()
	crc.Write([]byte(typ))
	crc.Write(data)
	b.WriteString(typ)
	b.Write(data)
	binary.BigEndian.PutUint32(n[:], crc.Sum32())
	b.Write(n[:])
}

// JPEG is a baseline JPEG of w x h (at most 65535 each) with a frame and a
// scan header and no usable data.
func JPEG(w, h int) []byte {
	b := []byte{0xFF, 0xD8}
	// SOF0: length 17, 8-bit, height, width, 3 components sampled 1x1.
	b = append(b, 0xFF, 0xC0, 0, 17, 8, byte(h>>8), byte(h), byte(w>>8), byte(w), 3,
		1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0)
	// SOS: 3 components, full spectrum.
	b = append(b, 0xFF, 0xDA, 0, 12, 3, 1, 0, 2, 0, 3, 0, 0, 63, 0)
	b = append(b, 0, 0, 0, 0, 0xFF, 0xD9)
	return b
}

// WebPHeader is a lossy (VP8) WebP whose frame header says w x h (at most
// 16383 each) and whose data is missing.
func WebPHeader(w, h int) []byte {
	vp8 := []byte{0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, byte(w), byte(w >> 8 & 0x3f), byte(h), byte(h >> 8 & 0x3f)}
	vp8 = append(vp8, make([]byte, 10)...)
	return riff("VP8 ", vp8)
}

func riff(fourcc string, data []byte) []byte {
	var b bytes.Buffer
	b.WriteString("RIFF")
	var n [4]byte
	binary.LittleEndian.PutUint32(n[:], uint32(4+8+len(data)+len(data)&1))
	b.Write(n[:])
	b.WriteString("WEBP")
	b.WriteString(fourcc)
	binary.LittleEndian.PutUint32(n[:], uint32(len(data)))
	b.Write(n[:])
	b.Write(data)
	if len(data)&1 == 1 {
		b.WriteByte(0)
	}
	return b.Bytes()
}

// WebPLossless is a real, fully decodable lossless WebP of w x h (at most
// 16384 each) in one colour, a few dozen bytes long: with every Huffman
// code down to one symbol a pixel costs no bits, so the size in the header
// is all that changes. It is what a decompression bomb looks like.
func WebPLossless(w, h int) ([]byte, error) {
	img := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(40, 90, 160, 0), 16, 16, gocv.MatTypeCV8UC3)
	defer img.Close()
	// Quality above 100 selects lossless in OpenCV's WebP encoder.
	buf, err := gocv.IMEncodeWithParams(".webp", img, []int{gocv.IMWriteWebpQuality, 101})
	if err != nil {
		return nil, err
	}
	defer buf.Close()
	b := bytes.Clone(buf.GetBytes())
	// RIFF header, then "VP8L", size, signature 0x2f, then 14 bits
	// width-1, 14 bits height-1, alpha bit and version.
	v := binary.LittleEndian.Uint32(b[21:25])
	v = v&^(1<<28-1) | uint32(w-1)&0x3fff | (uint32(h-1)&0x3fff)<<14
	binary.LittleEndian.PutUint32(b[21:25], v)
	return b, nil
}
