// Package webrtc is the server's WebRTC protocol, in and out: the shared pion
// engine (one UDP port for every peer, ICE-TCP fallback, codecs,
// interceptors), WHIP publishers (a phone or OBS pushes to the server, RFC
// 9725) and WHEP servers pulled as a source (whep:// and wheps:// URLs), both
// rebuilding access units from RTP into an ingest.Sink, and the WHEP egress
// that passes each camera's encoded video to viewers without re-encoding,
// with detection results beside it on a "results" data channel.
package webrtc

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// Errors callers map to HTTP statuses: ErrBadSDP and ErrCodecNotSupported are
// client errors (400), ErrSessionNotFound is 404, ErrNotSupported is 501,
// ErrNoVideo and ErrClosed are 503.
var (
	// ErrBadSDP is returned for an offer or SDP fragment that does not parse.
	ErrBadSDP = errors.New("malformed SDP")
	// ErrCodecNotSupported is returned when the offer has no codec we can use.
	ErrCodecNotSupported = errors.New("unsupported codec")
	// ErrSessionNotFound is returned by PATCH/DELETE for an unknown session id.
	ErrSessionNotFound = errors.New("session not found")
	// ErrNotSupported is returned for a trickle fragment asking for an ICE
	// restart, which these sessions do not do.
	ErrNotSupported = errors.New("not supported")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("closed")
	// ErrNoVideo is returned to a viewer when the camera sent no access unit
	// within EngineConfig.NoVideoTimeout.
	ErrNoVideo = errors.New("camera has no video")
)

// maxSDPSize bounds offers and fragments: real ones are a few KiB.
const maxSDPSize = 64 << 10

// OfferInfo summarizes the media sections of an SDP offer.
type OfferInfo struct {
	// VideoCodecs lists the usable video codecs in the offer's order (H264
	// only with packetization-mode=1).
	VideoCodecs []busv1.Codec
	// HasVideo, HasAudio and HasData tell which m-sections exist.
	HasVideo, HasAudio, HasData bool
	// OpusAudio is true when an audio section offers Opus.
	OpusAudio bool

	// parsed is the offer as InspectOffer parsed it, for videoOnlyCodec.
	parsed *sdp.SessionDescription
}

// Has reports whether the offer's video sections offer codec c.
func (o *OfferInfo) Has(c busv1.Codec) bool {
	for _, v := range o.VideoCodecs {
		if v == c {
			return true
		}
	}
	return false
}

// InspectOffer parses an SDP offer and lists its media; an unparsable offer,
// or one with no media section, returns ErrBadSDP.
func InspectOffer(offer string) (*OfferInfo, error) {
	if len(offer) > maxSDPSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrBadSDP, maxSDPSize)
	}
	if !strings.HasPrefix(strings.TrimSpace(offer), "v=") {
		return nil, fmt.Errorf("%w: does not start with v=", ErrBadSDP)
	}
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(offer); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSDP, err)
	}
	if len(sd.MediaDescriptions) == 0 {
		return nil, fmt.Errorf("%w: no media section", ErrBadSDP)
	}
	info := &OfferInfo{parsed: &sd}
	for _, md := range sd.MediaDescriptions {
		switch md.MediaName.Media {
		case "video":
			info.HasVideo = true
			for _, c := range mediaCodecs(md) {
				if vc := videoCodecOf(c); vc != busv1.Codec_CODEC_UNSPECIFIED && !info.Has(vc) {
					info.VideoCodecs = append(info.VideoCodecs, vc)
				}
			}
		case "audio":
			info.HasAudio = true
			for _, c := range mediaCodecs(md) {
				if strings.EqualFold(c.name, "opus") {
					info.OpusAudio = true
				}
			}
		case "application":
			info.HasData = true
		}
	}
	return info, nil
}

// videoOnlyCodec is the offer with its video sections cut down to codec's
// payload types (H264 with packetization-mode=1 only), the codec the viewer
// will be sent. Pion matches every offered codec against every local one,
// parsing both fmtp lines each time, twice over: with a browser's 20 to 30
// video payload types that was two thirds of a WHEP answer's CPU, and each
// answer's CPU is what the others wait for when many viewers join at once.
// RTX, FEC and RED go too: viewers are not sent them. For H264, profile
// (the camera's profile_idc and constraint flags, nil when unknown) keeps
// one payload type of the offer's: the first with that profile, else the
// first with its profile_idc, else the first; pion binds the track to such
// a one anyway, and each H264 payload type left was another round of fmtp
// parsing against every registered one (a browser offers four to six with
// packetization-mode=1). A section without the codec, and the audio and
// data sections, are left as they are. It may be called once, after
// InspectOffer; offer is returned when nothing is cut.
func (o *OfferInfo) videoOnlyCodec(codec busv1.Codec, profile []byte, offer string) string {
	sd := o.parsed
	o.parsed = nil
	if sd == nil || codec == busv1.Codec_CODEC_UNSPECIFIED {
		return offer
	}
	cut := false
	for _, md := range sd.MediaDescriptions {
		if md.MediaName.Media != "video" {
			continue
		}
		keep := map[string]bool{}
		var kept []sdpCodec
		for _, c := range mediaCodecs(md) {
			if videoCodecOf(c) == codec {
				keep[c.pt] = true
				kept = append(kept, c)
			}
		}
		if codec == busv1.Codec_CODEC_H264 && len(profile) == 2 && len(kept) > 1 {
			keep = map[string]bool{closestH264(kept, profile).pt: true}
		}
		if len(keep) == 0 || len(keep) == len(md.MediaName.Formats) {
			continue
		}
		cut = true
		formats := md.MediaName.Formats[:0]
		for _, pt := range md.MediaName.Formats {
			if keep[pt] {
				formats = append(formats, pt)
			}
		}
		md.MediaName.Formats = formats
		attrs := md.Attributes[:0]
		for _, a := range md.Attributes {
			switch a.Key {
			case "rtpmap", "fmtp", "rtcp-fb":
				if pt, _, _ := strings.Cut(a.Value, " "); pt != "*" && !keep[pt] {
					continue
				}
			}
			attrs = append(attrs, a)
		}
		md.Attributes = attrs
	}
	if !cut {
		return offer
	}
	b, err := sd.Marshal()
	if err != nil {
		return offer
	}
	return string(b)
}

// closestH264 is the first of codecs (H264, at least one) with profile's
// profile_idc and constraint flags, else the first with its profile_idc,
// else the first.
func closestH264(codecs []sdpCodec, profile []byte) sdpCodec {
	sameIDC := -1
	for i, c := range codecs {
		p, ok := h264FmtpProfile(c.fmtp)
		if !ok {
			continue
		}
		if p[0] == profile[0] && p[1] == profile[1] {
			return c
		}
		if p[0] == profile[0] && sameIDC < 0 {
			sameIDC = i
		}
	}
	if sameIDC >= 0 {
		return codecs[sameIDC]
	}
	return codecs[0]
}

// h264FmtpProfile reads the profile_idc and constraint flags of an H264
// fmtp line's profile-level-id.
func h264FmtpProfile(fmtp string) (p [2]byte, ok bool) {
	for _, param := range strings.Split(fmtp, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(param), "=")
		if !strings.EqualFold(k, "profile-level-id") || len(v) != 6 {
			continue
		}
		b, err := hex.DecodeString(v[:4])
		if err != nil {
			return p, false
		}
		return [2]byte{b[0], b[1]}, true
	}
	return p, false
}

type sdpCodec struct {
	pt   string
	name string
	fmtp string
}

// mediaCodecs reads the rtpmap and fmtp lines of one m-section.
func mediaCodecs(md *sdp.MediaDescription) []sdpCodec {
	var out []sdpCodec
	fmtp := map[string]string{}
	for _, a := range md.Attributes {
		switch a.Key {
		case "rtpmap":
			pt, rest, ok := strings.Cut(a.Value, " ")
			if !ok {
				continue
			}
			name, _, _ := strings.Cut(rest, "/")
			out = append(out, sdpCodec{pt: pt, name: name})
		case "fmtp":
			pt, rest, ok := strings.Cut(a.Value, " ")
			if ok {
				fmtp[pt] = rest
			}
		}
	}
	for i := range out {
		out[i].fmtp = fmtp[out[i].pt]
	}
	return out
}

func videoCodecOf(c sdpCodec) busv1.Codec {
	switch strings.ToUpper(c.name) {
	case "H264":
		// Mode 0 cannot carry NALUs larger than the MTU, so it is useless
		// for passthrough; RFC 6184 §8.1 makes 0 the default when absent.
		if strings.Contains(strings.ReplaceAll(c.fmtp, " ", ""), "packetization-mode=1") {
			return busv1.Codec_CODEC_H264
		}
	case "H265":
		return busv1.Codec_CODEC_H265
	case "VP8":
		return busv1.Codec_CODEC_VP8
	case "VP9":
		return busv1.Codec_CODEC_VP9
	case "AV1":
		return busv1.Codec_CODEC_AV1
	}
	return busv1.Codec_CODEC_UNSPECIFIED
}

// MimeType is the WebRTC MIME type of a video codec, "" when unknown.
func MimeType(c busv1.Codec) string {
	switch c {
	case busv1.Codec_CODEC_H264:
		return webrtc.MimeTypeH264
	case busv1.Codec_CODEC_H265:
		return webrtc.MimeTypeH265
	case busv1.Codec_CODEC_VP8:
		return webrtc.MimeTypeVP8
	case busv1.Codec_CODEC_VP9:
		return webrtc.MimeTypeVP9
	case busv1.Codec_CODEC_AV1:
		return webrtc.MimeTypeAV1
	case busv1.Codec_CODEC_OPUS:
		return webrtc.MimeTypeOpus
	case busv1.Codec_CODEC_PCMU:
		return webrtc.MimeTypePCMU
	case busv1.Codec_CODEC_PCMA:
		return webrtc.MimeTypePCMA
	}
	return ""
}

// CodecOfMime maps a WebRTC MIME type to the bus codec.
func CodecOfMime(mime string) busv1.Codec {
	switch strings.ToLower(mime) {
	case strings.ToLower(webrtc.MimeTypeH264):
		return busv1.Codec_CODEC_H264
	case strings.ToLower(webrtc.MimeTypeH265):
		return busv1.Codec_CODEC_H265
	case strings.ToLower(webrtc.MimeTypeVP8):
		return busv1.Codec_CODEC_VP8
	case strings.ToLower(webrtc.MimeTypeVP9):
		return busv1.Codec_CODEC_VP9
	case strings.ToLower(webrtc.MimeTypeAV1):
		return busv1.Codec_CODEC_AV1
	case strings.ToLower(webrtc.MimeTypeOpus):
		return busv1.Codec_CODEC_OPUS
	case strings.ToLower(webrtc.MimeTypePCMU):
		return busv1.Codec_CODEC_PCMU
	case strings.ToLower(webrtc.MimeTypePCMA):
		return busv1.Codec_CODEC_PCMA
	}
	return busv1.Codec_CODEC_UNSPECIFIED
}

// ParseSDPFragment reads the ICE candidates of a trickle-ICE SDP fragment
// (application/trickle-ice-sdpfrag, RFC 8840 §4.4 / RFC 9725 §4.3.1).
// A fragment with ICE credentials other than currentUfrag asks for an ICE
// restart, which these sessions do not do: ErrNotSupported.
func ParseSDPFragment(frag string, currentUfrag string) (cands []webrtc.ICECandidateInit, err error) {
	if len(frag) > maxSDPSize {
		return nil, fmt.Errorf("%w: fragment larger than %d bytes", ErrBadSDP, maxSDPSize)
	}
	var mid *string
	var mline uint16
	sawMedia := false
	for _, line := range strings.Split(frag, "\n") {
		line = strings.TrimRight(line, "\r")
		if line == "" {
			continue
		}
		if len(line) < 2 || line[1] != '=' {
			return nil, fmt.Errorf("%w: bad fragment line %q", ErrBadSDP, truncate(line))
		}
		switch {
		case strings.HasPrefix(line, "m="):
			if sawMedia {
				mline++
			}
			sawMedia = true
			mid = nil
		case strings.HasPrefix(line, "a=mid:"):
			m := strings.TrimPrefix(line, "a=mid:")
			mid = &m
		case strings.HasPrefix(line, "a=ice-ufrag:"):
			if u := strings.TrimPrefix(line, "a=ice-ufrag:"); currentUfrag != "" && u != currentUfrag {
				return nil, fmt.Errorf("%w: ICE restart", ErrNotSupported)
			}
		case strings.HasPrefix(line, "a=candidate:"):
			c := webrtc.ICECandidateInit{Candidate: strings.TrimPrefix(line, "a=")}
			if mid != nil {
				m := *mid
				c.SDPMid = &m
			}
			ml := mline
			c.SDPMLineIndex = &ml
			cands = append(cands, c)
		}
	}
	return cands, nil
}

func truncate(s string) string {
	if len(s) <= 40 {
		return s
	}
	// Cut on a character boundary: the text goes into JSON error bodies.
	n := 40
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// NewSessionID returns a random, unguessable session id for WHIP and WHEP
// sessions alike: the id is the only thing that authorizes PATCH and DELETE
// of a session resource.
func NewSessionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
