package remote

import (
	"errors"
	"fmt"

	"gocv.io/x/gocv"

	"github.com/imageflowcanvas/imageflow/media/imagedecode"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	pb "github.com/imageflowcanvas/imageflow/proto/processorv1"
)

// ErrBadImage reports a picture that cannot be decoded or whose raw layout
// does not add up.
var ErrBadImage = errors.New("bad image")

// maxSide bounds raw pictures so a forged header cannot ask for gigabytes.
const maxSide = 16384

// RawToMat turns raw pixels into a BGR Mat. Packed BGR24 is wrapped without a
// copy (the Mat references data, which must outlive it); other layouts are
// converted into a new Mat.
func RawToMat(format busv1.PixelFormat, width, height, stride int, data []byte) (gocv.Mat, error) {
	bpp := 0
	switch format {
	case busv1.PixelFormat_PIXEL_FORMAT_BGR24, busv1.PixelFormat_PIXEL_FORMAT_RGB24:
		bpp = 3
	case busv1.PixelFormat_PIXEL_FORMAT_GRAY8:
		bpp = 1
	default:
		return gocv.Mat{}, fmt.Errorf("%w: raw format %v not supported (BGR24, RGB24, GRAY8)", ErrBadImage, format)
	}
	if width <= 0 || height <= 0 || width > maxSide || height > maxSide {
		return gocv.Mat{}, fmt.Errorf("%w: size %dx%d", ErrBadImage, width, height)
	}
	row := width * bpp
	if stride == 0 {
		stride = row
	}
	if stride < row {
		return gocv.Mat{}, fmt.Errorf("%w: stride %d below row size %d", ErrBadImage, stride, row)
	}
	if need := stride*(height-1) + row; len(data) < need {
		return gocv.Mat{}, fmt.Errorf("%w: %dx%d with stride %d needs %d bytes, got %d", ErrBadImage, width, height, stride, need, len(data))
	}
	if stride != row {
		packed := make([]byte, row*height)
		for y := 0; y < height; y++ {
			copy(packed[y*row:(y+1)*row], data[y*stride:y*stride+row])
		}
		data = packed
	} else {
		data = data[:row*height]
	}
	typ := gocv.MatTypeCV8UC3
	if bpp == 1 {
		typ = gocv.MatTypeCV8U
	}
	m, err := gocv.NewMatFromBytes(height, width, typ, data)
	if err != nil {
		return gocv.Mat{}, fmt.Errorf("%w: %v", ErrBadImage, err)
	}
	switch format {
	case busv1.PixelFormat_PIXEL_FORMAT_RGB24:
		bgr := gocv.NewMat()
		gocv.CvtColor(m, &bgr, gocv.ColorBGRToRGB) // the same channel swap
		m.Close()
		return bgr, nil
	case busv1.PixelFormat_PIXEL_FORMAT_GRAY8:
		bgr := gocv.NewMat()
		gocv.CvtColor(m, &bgr, gocv.ColorGrayToBGR)
		m.Close()
		return bgr, nil
	}
	return m, nil
}

// DecodeToMat decodes a JPEG, PNG, BMP or WebP into a new BGR Mat, refusing
// pictures whose header claims more than imagedecode.DefaultMaxPixels.
func DecodeToMat(data []byte) (gocv.Mat, error) {
	m, _, err := imagedecode.Decode(data, imagedecode.Options{})
	if err != nil {
		return gocv.Mat{}, fmt.Errorf("%w: %v", ErrBadImage, err)
	}
	return m, nil
}

// imageToMat turns a Processor-service image into a new BGR Mat.
func imageToMat(img *pb.Image) (gocv.Mat, error) {
	switch d := img.GetData().(type) {
	case *pb.Image_Raw:
		r := d.Raw
		return RawToMat(r.Format, int(r.Width), int(r.Height), int(r.Stride), r.Data)
	case *pb.Image_Encoded:
		return DecodeToMat(d.Encoded.Data)
	}
	return gocv.Mat{}, fmt.Errorf("%w: no image", ErrBadImage)
}

// matToRaw describes m as a raw image whose Data references m's memory: the
// message must be sent before m changes or closes.
func matToRaw(m gocv.Mat, raw *pb.RawImage) error {
	if m.Empty() {
		return fmt.Errorf("%w: empty picture", ErrBadImage)
	}
	var format busv1.PixelFormat
	switch m.Type() {
	case gocv.MatTypeCV8UC3:
		format = busv1.PixelFormat_PIXEL_FORMAT_BGR24
	case gocv.MatTypeCV8U:
		format = busv1.PixelFormat_PIXEL_FORMAT_GRAY8
	default:
		return fmt.Errorf("%w: Mat type %v cannot travel (want 8-bit BGR or grey)", ErrBadImage, m.Type())
	}
	if !m.IsContinuous() {
		return fmt.Errorf("%w: Mat is not continuous", ErrBadImage)
	}
	data, err := m.DataPtrUint8()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadImage, err)
	}
	raw.Format = format
	raw.Width = uint32(m.Cols())
	raw.Height = uint32(m.Rows())
	raw.Stride = 0
	raw.Data = data
	return nil
}
