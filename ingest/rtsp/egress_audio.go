package rtsp

import (
	"errors"
	"fmt"
	"math/rand/v2"

	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/pion/rtp"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// audioPayloadType is the dynamic payload type of Opus and AAC tracks
// (G.711 keeps its static one).
const audioPayloadType = 97

// egressAudio is a camera's audio track as RTSP readers get it: the frames
// the camera sent, repacketized with their own RTP timestamps, so a reader
// syncs audio to video as the source did.
type egressAudio struct {
	codec busv1.Codec
	media *description.Media
	forma format.Format
	aac   *rtpmpeg4audio.Encoder

	// Opus and G.711: one frame is one packet (as received).
	pkt  rtp.Packet
	seq  uint16
	ssrc uint32
	one  [1]*rtp.Packet
	// aus is the AAC encoder's input, reused for every frame.
	aus [][]byte
}

// newEgressAudio describes the audio track of first, a frame of the
// camera's audio; an error for codecs RTSP readers cannot be given.
func newEgressAudio(first *busv1.AccessUnit) (*egressAudio, error) {
	a := &egressAudio{codec: first.Codec, seq: uint16(rand.Uint32()), ssrc: rand.Uint32(), aus: make([][]byte, 1)}
	channels := int(first.Channels)
	if channels <= 0 {
		channels = 1
	}
	rate := int(first.ClockRate)
	switch first.Codec {
	case busv1.Codec_CODEC_OPUS:
		a.forma = &format.Opus{PayloadTyp: audioPayloadType, ChannelCount: channels}
	case busv1.Codec_CODEC_PCMU, busv1.Codec_CODEC_PCMA:
		mu := first.Codec == busv1.Codec_CODEC_PCMU
		pt := uint8(8)
		if mu {
			pt = 0
		}
		if rate <= 0 {
			rate = 8000
		}
		a.forma = &format.G711{PayloadTyp: pt, MULaw: mu, SampleRate: rate, ChannelCount: channels}
	case busv1.Codec_CODEC_AAC:
		if rate <= 0 {
			return nil, errors.New("AAC frame without a sample rate")
		}
		// The bus carries raw AAC frames; AAC-LC at the frame's rate and
		// channel count is what cameras send and what the RTSP publisher
		// announced.
		f := &format.MPEG4Audio{
			PayloadTyp: audioPayloadType,
			Config:     &mpeg4audio.AudioSpecificConfig{Type: mpeg4audio.ObjectTypeAACLC, SampleRate: rate, ChannelCount: channels},
			SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3,
		}
		enc, err := f.CreateEncoder()
		if err != nil {
			return nil, err
		}
		a.forma, a.aac = f, enc
	default:
		return nil, fmt.Errorf("audio codec %v cannot be served over RTSP", first.Codec)
	}
	a.media = &description.Media{Type: description.MediaTypeAudio, Formats: []format.Format{a.forma}}
	return a, nil
}

// packets turns one audio frame into RTP packets with the frame's RTP
// timestamp; nil for an empty or unusable frame. The packets are valid
// until the next call.
func (a *egressAudio) packets(au *busv1.AccessUnit) []*rtp.Packet {
	if len(au.Data) == 0 || au.Codec != a.codec {
		return nil
	}
	if a.aac != nil {
		a.aus[0] = au.Data
		pkts, err := a.aac.Encode(a.aus)
		if err != nil {
			return nil
		}
		for _, p := range pkts {
			p.Timestamp = au.RtpTimestamp
		}
		return pkts
	}
	// A frame bigger than a packet did not come from an RTP source.
	if len(au.Data) > maxAudioPayload {
		return nil
	}
	a.pkt.Header = rtp.Header{
		Version:        2,
		Marker:         true,
		PayloadType:    a.forma.PayloadType(),
		SequenceNumber: a.seq,
		Timestamp:      au.RtpTimestamp,
		SSRC:           a.ssrc,
	}
	a.pkt.Payload = au.Data
	a.seq++
	a.one[0] = &a.pkt
	return a.one[:]
}

// maxAudioPayload is the largest Opus/G.711 frame sent in one packet.
const maxAudioPayload = 1400
