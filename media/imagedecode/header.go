package imagedecode

import (
	"encoding/binary"
	"fmt"
)

// Format is an encoded picture format this package accepts.
type Format string

// The accepted formats. OpenCV reads more (TIFF, JPEG 2000, OpenEXR, PFM,
// Sun raster, ...), each with its own header and decoder quirks; every one
// accepted is one more header to read right before decoding, so the list
// stops at what cameras and users send.
const (
	JPEG Format = "jpeg"
	PNG  Format = "png"
	BMP  Format = "bmp"
	WebP Format = "webp"
)

// Formats lists the accepted formats, for error messages and docs.
var Formats = []Format{JPEG, PNG, BMP, WebP}

// Header is what a picture's header says about it.
type Header struct {
	Format        Format
	Width, Height int
}

// Pixels is the picture's pixel count.
func (h Header) Pixels() int64 { return int64(h.Width) * int64(h.Height) }

// ContentType is the picture's media type.
func (h Header) ContentType() string { return "image/" + string(h.Format) }

// ReadHeader finds the format of data from its signature and reads the
// picture size from its header, without decoding anything. It fails with
// ErrUnsupported for a format outside Formats and ErrCorrupt for a header
// it cannot read; the size it returns is the one the decoder will allocate.
func ReadHeader(data []byte) (Header, error) {
	var (
		f    Format
		w, h int
		ok   bool
	)
	switch {
	case len(data) >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF:
		f = JPEG
		w, h, ok = jpegSize(data)
	case len(data) >= 8 && string(data[:8]) == pngSignature:
		f = PNG
		w, h, ok = pngSize(data)
	case len(data) >= 2 && data[0] == 'B' && data[1] == 'M':
		f = BMP
		w, h, ok = bmpSize(data)
	case len(data) >= 12 && string(data[:4]) == "RIFF" && string(data[8:12]) == "WEBP":
		f = WebP
		w, h, ok = webpSize(data)
	default:
		return Header{}, fmt.Errorf("%w: %s", ErrUnsupported, describe(data))
	}
	if !ok {
		return Header{Format: f}, fmt.Errorf("%w: %s header cannot be read (%d bytes)", ErrCorrupt, f, len(data))
	}
	return Header{Format: f, Width: w, Height: h}, nil
}

// describe names what data looks like for an error message, without
// echoing its bytes.
func describe(data []byte) string {
	if len(data) == 0 {
		return "no data"
	}
	if len(data) >= 4 && (string(data[:4]) == "II*\x00" || string(data[:4]) == "MM\x00*") {
		return "TIFF"
	}
	if len(data) >= 6 && (string(data[:6]) == "GIF87a" || string(data[:6]) == "GIF89a") {
		return "GIF"
	}
	return fmt.Sprintf("%d bytes of something else", len(data))
}

// jpegSize reads a JPEG's picture size from its first frame header (SOFn),
// the one libjpeg allocates for; ok is false for anything it does not
// understand.
func jpegSize(b []byte) (w, h int, ok bool) {
	if len(b) < 4 || b[0] != 0xFF || b[1] != 0xD8 {
		return 0, 0, false
	}
	i := 2
	for i+2 <= len(b) {
		if b[i] != 0xFF {
			return 0, 0, false
		}
		marker := b[i+1]
		if marker == 0xFF { // fill byte
			i++
			continue
		}
		i += 2
		if marker == 0x01 || marker >= 0xD0 && marker <= 0xD8 { // no length
			continue
		}
		if marker == 0xD9 || marker == 0xDA { // end, or scan before any frame header
			return 0, 0, false
		}
		if i+2 > len(b) {
			return 0, 0, false
		}
		n := int(b[i])<<8 | int(b[i+1])
		if n < 2 || i+n > len(b) {
			return 0, 0, false
		}
		// SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
		if marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC {
			if n < 7 {
				return 0, 0, false
			}
			h, w = int(b[i+3])<<8|int(b[i+4]), int(b[i+5])<<8|int(b[i+6])
			return w, h, w > 0 && h > 0
		}
		i += n
	}
	return 0, 0, false
}

const pngSignature = "\x89PNG\r\n\x1a\n"

// pngSize reads a PNG's picture size from its IHDR chunk, which the format
// requires to come first.
func pngSize(b []byte) (w, h int, ok bool) {
	if len(b) < 24 || string(b[:8]) != pngSignature || string(b[12:16]) != "IHDR" {
		return 0, 0, false
	}
	if binary.BigEndian.Uint32(b[8:12]) != 13 {
		return 0, 0, false
	}
	uw, uh := binary.BigEndian.Uint32(b[16:20]), binary.BigEndian.Uint32(b[20:24])
	// The PNG spec caps both at 2^31-1.
	if uw == 0 || uh == 0 || uw > 1<<31-1 || uh > 1<<31-1 {
		return 0, 0, false
	}
	return int(uw), int(uh), true
}

// bmpSize reads a BMP's picture size from its info header the way OpenCV's
// BMP decoder does: a 12-byte OS/2 core header holds 16-bit sizes, the
// 40-byte and later Windows headers 32-bit ones, where a negative height
// means a top-down picture.
func bmpSize(b []byte) (w, h int, ok bool) {
	if len(b) < 18 || b[0] != 'B' || b[1] != 'M' {
		return 0, 0, false
	}
	size := binary.LittleEndian.Uint32(b[14:18])
	switch {
	case size == 12:
		if len(b) < 22 {
			return 0, 0, false
		}
		w, h = int(binary.LittleEndian.Uint16(b[18:20])), int(binary.LittleEndian.Uint16(b[20:22]))
	case size >= 36 && size <= 256:
		if len(b) < 26 {
			return 0, 0, false
		}
		w, h = int(int32(binary.LittleEndian.Uint32(b[18:22]))), int(int32(binary.LittleEndian.Uint32(b[22:26])))
		if h < 0 {
			h = -h
		}
	default:
		return 0, 0, false
	}
	return w, h, w > 0 && h > 0
}

// webpSize reads a WebP's canvas size from its first chunk: VP8X (extended)
// holds the canvas, VP8 (lossy) and VP8L (lossless) the frame's size.
// See RFC 9649 section 2.
func webpSize(b []byte) (w, h int, ok bool) {
	if len(b) < 20 || string(b[:4]) != "RIFF" || string(b[8:12]) != "WEBP" {
		return 0, 0, false
	}
	chunk := string(b[12:16])
	n := binary.LittleEndian.Uint32(b[16:20])
	d := b[20:]
	if uint64(n) > uint64(len(d)) {
		// A truncated first chunk: libwebp would refuse it too.
		return 0, 0, false
	}
	d = d[:n]
	switch chunk {
	case "VP8X":
		if len(d) < 10 {
			return 0, 0, false
		}
		w = 1 + int(uint32(d[4])|uint32(d[5])<<8|uint32(d[6])<<16)
		h = 1 + int(uint32(d[7])|uint32(d[8])<<8|uint32(d[9])<<16)
	case "VP8 ":
		// 3-byte frame tag (bit 0 clear for a key frame), start code, then
		// 14-bit width and height, each with 2 scale bits above.
		if len(d) < 10 || d[0]&1 != 0 || d[3] != 0x9d || d[4] != 0x01 || d[5] != 0x2a {
			return 0, 0, false
		}
		w = int(binary.LittleEndian.Uint16(d[6:8]) & 0x3fff)
		h = int(binary.LittleEndian.Uint16(d[8:10]) & 0x3fff)
	case "VP8L":
		// Signature 0x2f, then width-1 and height-1 in 14 bits each.
		if len(d) < 5 || d[0] != 0x2f {
			return 0, 0, false
		}
		v := binary.LittleEndian.Uint32(d[1:5])
		w = 1 + int(v&0x3fff)
		h = 1 + int(v>>14&0x3fff)
	default:
		return 0, 0, false
	}
	return w, h, w > 0 && h > 0
}
