package webrtc

import (
	"reflect"
	"strings"
	"testing"

	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// The offer pion reads is cut to the camera's codec in its video sections
// (H264 with packetization-mode=1 only, no RTX, FEC or RED), the audio
// section and everything else kept; an offer without the codec, or with
// nothing else, comes back as it was.
func TestVideoOnlyCodec(t *testing.T) {
	offer := localOffer(t, offeringPC(t, clientAPI(t), webrtc.RTPTransceiverDirectionRecvonly, webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio))
	parse := func(s string) *sdp.SessionDescription {
		t.Helper()
		var sd sdp.SessionDescription
		if err := sd.UnmarshalString(s); err != nil {
			t.Fatalf("%v\n%s", err, s)
		}
		return &sd
	}
	orig := parse(offer)

	info, err := InspectOffer(offer)
	if err != nil {
		t.Fatal(err)
	}
	cut := parse(info.videoOnlyCodec(busv1.Codec_CODEC_H264, nil, offer))
	if len(cut.MediaDescriptions) != len(orig.MediaDescriptions) {
		t.Fatalf("%d media sections, want %d", len(cut.MediaDescriptions), len(orig.MediaDescriptions))
	}
	for i, md := range cut.MediaDescriptions {
		codecs := mediaCodecs(md)
		if md.MediaName.Media != "video" {
			if !reflect.DeepEqual(md, orig.MediaDescriptions[i]) {
				t.Fatalf("%s section changed:\n%+v\nwant\n%+v", md.MediaName.Media, md, orig.MediaDescriptions[i])
			}
			continue
		}
		if len(codecs) == 0 || len(codecs) != len(md.MediaName.Formats) {
			t.Fatalf("video section: %d codecs for payload types %v", len(codecs), md.MediaName.Formats)
		}
		for _, c := range codecs {
			if videoCodecOf(c) != busv1.Codec_CODEC_H264 {
				t.Fatalf("video section keeps %s %s (%s)", c.pt, c.name, c.fmtp)
			}
		}
		for _, a := range md.Attributes {
			if pt, _, _ := strings.Cut(a.Value, " "); (a.Key == "rtcp-fb" || a.Key == "fmtp") && pt != "*" && !strings.Contains(" "+strings.Join(md.MediaName.Formats, " ")+" ", " "+pt+" ") {
				t.Fatalf("video section keeps a=%s:%s of a payload type it dropped", a.Key, a.Value)
			}
		}
		// Everything but the codecs' lines is kept (ICE, DTLS, mid...).
		other := func(md *sdp.MediaDescription) (out []sdp.Attribute) {
			for _, a := range md.Attributes {
				if a.Key != "rtpmap" && a.Key != "fmtp" && a.Key != "rtcp-fb" {
					out = append(out, a)
				}
			}
			return out
		}
		if got, want := other(md), other(orig.MediaDescriptions[i]); !reflect.DeepEqual(got, want) {
			t.Fatalf("video section's other attributes changed:\n%v\nwant\n%v", got, want)
		}
	}
	if n := len(mediaCodecs(orig.MediaDescriptions[0])); n <= len(mediaCodecs(cut.MediaDescriptions[0])) {
		t.Fatalf("nothing cut from %d video codecs", n)
	}

	// No codec named, or an offer already down to the codec: left alone.
	info, _ = InspectOffer(offer)
	if got := info.videoOnlyCodec(busv1.Codec_CODEC_UNSPECIFIED, nil, offer); got != offer {
		t.Fatal("an offer was changed with no codec named")
	}
	info, _ = InspectOffer(offer)
	once := info.videoOnlyCodec(busv1.Codec_CODEC_H264, nil, offer)
	info, _ = InspectOffer(once)
	if got := info.videoOnlyCodec(busv1.Codec_CODEC_H264, nil, once); got != once {
		t.Fatalf("an offer already cut to the codec was changed:\n%s\n----\n%s", once, got)
	}
}

// Knowing the camera's H264 profile, the cut keeps one payload type: the
// first with the same profile and constraint flags, else the first with
// the same profile_idc, else the first H264 one with packetization-mode=1.
func TestVideoOnlyCodecKeepsClosestH264(t *testing.T) {
	offer := localOffer(t, offeringPC(t, clientAPI(t), webrtc.RTPTransceiverDirectionRecvonly, webrtc.RTPCodecTypeVideo))
	for _, c := range []struct {
		profile []byte
		want    string
	}{
		{[]byte{0x64, 0x00}, "640"},  // High: its own payload type
		{[]byte{0x4d, 0x00}, "4d0"},  // Main
		{[]byte{0x42, 0xe0}, "42e0"}, // Constrained Baseline as offered
		{[]byte{0x42, 0xc0}, "4200"}, // Baseline with other flags: the first Baseline
		{[]byte{0x58, 0x00}, "4200"}, // Extended, not offered: the first
	} {
		info, err := InspectOffer(offer)
		if err != nil {
			t.Fatal(err)
		}
		var sd sdp.SessionDescription
		if err := sd.UnmarshalString(info.videoOnlyCodec(busv1.Codec_CODEC_H264, c.profile, offer)); err != nil {
			t.Fatal(err)
		}
		codecs := mediaCodecs(sd.MediaDescriptions[0])
		if len(codecs) != 1 || len(sd.MediaDescriptions[0].MediaName.Formats) != 1 {
			t.Fatalf("profile %x: kept %v (%d codecs), want one payload type", c.profile, sd.MediaDescriptions[0].MediaName.Formats, len(codecs))
		}
		if !strings.Contains(codecs[0].fmtp, "profile-level-id="+c.want) || videoCodecOf(codecs[0]) != busv1.Codec_CODEC_H264 {
			t.Fatalf("profile %x: kept %s %s, want profile-level-id %s…", c.profile, codecs[0].pt, codecs[0].fmtp, c.want)
		}
	}
}
