// Package h26x is the one home of H264/H265 bitstream handling: it splits and
// joins Annex-B streams, classifies NAL units, keeps parameter sets and
// assembles access units from RTP packets for every ingest adapter.
package h26x

import (
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
)

// Codec says which of the two bitstream syntaxes a NAL unit follows.
type Codec uint8

// The codecs this package handles.
const (
	H264 Codec = iota + 1
	H265
)

// String names the codec.
func (c Codec) String() string {
	switch c {
	case H264:
		return "H264"
	case H265:
		return "H265"
	}
	return "unknown"
}

// H264 NAL unit types used here (ITU-T H.264 table 7-1).
const (
	H264NALUTypeIDR = 5
	H264NALUTypeSEI = 6
	H264NALUTypeSPS = 7
	H264NALUTypePPS = 8
	H264NALUTypeAUD = 9
)

// H264NALUType is the type of an H264 NAL unit (0 for an empty one).
func H264NALUType(n []byte) int {
	if len(n) == 0 {
		return 0
	}
	return int(n[0] & 0x1f)
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

// Kind is the role of a NAL unit in an access unit, the same for both codecs.
type Kind uint8

// The kinds of NAL unit the assembler treats differently.
const (
	KindOther Kind = iota
	KindVPS
	KindSPS
	KindPPS
	// KindAUD is an access unit delimiter.
	KindAUD
	// KindFiller is filler data.
	KindFiller
	// KindIRAP is a picture where decoding can start (H264 IDR; H265 IDR,
	// CRA, BLA).
	KindIRAP
)

// Classify returns the kind of a NAL unit; KindOther for an empty one.
func Classify(c Codec, n []byte) Kind {
	if len(n) == 0 {
		return KindOther
	}
	if c == H265 {
		switch t := h265.NALUType((n[0] >> 1) & 0x3f); {
		case t == h265.NALUType_VPS_NUT:
			return KindVPS
		case t == h265.NALUType_SPS_NUT:
			return KindSPS
		case t == h265.NALUType_PPS_NUT:
			return KindPPS
		case t == h265.NALUType_AUD_NUT:
			return KindAUD
		case t == h265.NALUType_FD_NUT:
			return KindFiller
		case t >= h265.NALUType_BLA_W_LP && t <= h265.NALUType_RSV_IRAP_VCL23:
			return KindIRAP
		}
		return KindOther
	}
	switch h264.NALUType(n[0] & 0x1f) {
	case h264.NALUTypeSPS:
		return KindSPS
	case h264.NALUTypePPS:
		return KindPPS
	case h264.NALUTypeAccessUnitDelimiter:
		return KindAUD
	case h264.NALUTypeFillerData:
		return KindFiller
	case h264.NALUTypeIDR:
		return KindIRAP
	}
	return KindOther
}

// ParamSets picks the parameter sets out of an access unit.
func ParamSets(c Codec, nalus [][]byte) (vps, sps, pps []byte) {
	for _, n := range nalus {
		switch Classify(c, n) {
		case KindVPS:
			vps = n
		case KindSPS:
			sps = n
		case KindPPS:
			pps = n
		}
	}
	return vps, sps, pps
}

// SPSSize reads the picture size from an SPS; 0, 0 when it does not parse.
func SPSSize(c Codec, sps []byte) (w, h int) {
	defer func() {
		// A hostile SPS must never take the server down; the size is only
		// informative.
		if recover() != nil {
			w, h = 0, 0
		}
	}()
	if c == H265 {
		var s h265.SPS
		if s.Unmarshal(sps) != nil {
			return 0, 0
		}
		return s.Width(), s.Height()
	}
	var s h264.SPS
	if s.Unmarshal(sps) != nil {
		return 0, 0
	}
	return s.Width(), s.Height()
}
