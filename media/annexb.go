package media

import "bytes"

// SplitAnnexB appends the NAL units of an Annex-B byte stream to dst, without
// start codes, and returns it. The units alias b. Bytes before the first start
// code and trailing zero bytes (part of the next 4-byte start code) are
// dropped; empty units are skipped.
func SplitAnnexB(dst [][]byte, b []byte) [][]byte {
	start := -1
	i := 0
	for i+2 < len(b) {
		// Fast path: a start code needs b[i+2] == 1 and two zeros before it.
		if b[i+2] > 1 {
			i += 3
			continue
		}
		if b[i] == 0 && b[i+1] == 0 && b[i+2] == 1 {
			if start >= 0 {
				dst = appendNALU(dst, b[start:i])
			}
			start = i + 3
			i += 3
			continue
		}
		i++
	}
	if start >= 0 && start < len(b) {
		dst = appendNALU(dst, b[start:])
	}
	return dst
}

func appendNALU(dst [][]byte, n []byte) [][]byte {
	n = bytes.TrimRight(n, "\x00")
	if len(n) == 0 {
		return dst
	}
	return append(dst, n)
}

// AppendAnnexB appends nalus to dst with 4-byte start codes.
func AppendAnnexB(dst []byte, nalus [][]byte) []byte {
	for _, n := range nalus {
		dst = append(dst, 0, 0, 0, 1)
		dst = append(dst, n...)
	}
	return dst
}

// H264 NAL unit types used here (ITU-T H.264 table 7-1).
const (
	H264NALUTypeIDR = 5
	H264NALUTypeSEI = 6
	H264NALUTypeSPS = 7
	H264NALUTypePPS = 8
	H264NALUTypeAUD = 9
)

// H265 NAL unit types used here (ITU-T H.265 table 7-1).
const (
	H265NALUTypeBLAWLP   = 16
	H265NALUTypeCRANUT   = 21
	H265NALUTypeVPS      = 32
	H265NALUTypeSPS      = 33
	H265NALUTypePPS      = 34
	H265NALUTypeAUD      = 35
	h265NALUTypeRSVIRAP3 = 23
)

// H264NALUType is the type of an H264 NAL unit (0 for an empty one).
func H264NALUType(n []byte) int {
	if len(n) == 0 {
		return 0
	}
	return int(n[0] & 0x1f)
}

// H265NALUType is the type of an H265 NAL unit (0 for a short one).
func H265NALUType(n []byte) int {
	if len(n) < 2 {
		return 0
	}
	return int(n[0]>>1) & 0x3f
}

// H264HasIDR reports whether the access unit holds an IDR slice.
func H264HasIDR(nalus [][]byte) bool {
	for _, n := range nalus {
		if H264NALUType(n) == H264NALUTypeIDR {
			return true
		}
	}
	return false
}

// H265HasIRAP reports whether the access unit holds an IRAP picture (IDR,
// CRA or BLA), where decoding can start.
func H265HasIRAP(nalus [][]byte) bool {
	for _, n := range nalus {
		t := H265NALUType(n)
		if t >= H265NALUTypeBLAWLP && t <= h265NALUTypeRSVIRAP3 {
			return true
		}
	}
	return false
}
