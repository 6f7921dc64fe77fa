package h26x

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
