package media

// #cgo pkg-config: libswresample
// #include "audio.h"
import "C"

import (
	"fmt"
	"unsafe"
)

// AudioCodec is a compressed audio format the transcoder decodes.
type AudioCodec uint8

// Audio codecs the transcoder takes in.
const (
	AudioUnknown AudioCodec = iota
	AudioAAC
	AudioPCMU
	AudioPCMA
	AudioOpus
)

// OpusRate is the sample rate (and RTP clock) of the transcoder's output.
const OpusRate = 48000

// maxAudioFrame bounds one input frame; no camera's audio frame comes near.
const maxAudioFrame = 1 << 16

// AudioTranscoder turns one camera's audio (AAC, G.711, ...) into 48 kHz
// Opus packets of 20 ms for WebRTC viewers. It is not safe for concurrent
// use.
type AudioTranscoder struct {
	t *C.ifc_atx
}

// NewAudioTranscoder opens a transcoder for codec at sampleRate with
// channels; config is the codec's setup (an AAC AudioSpecificConfig; nil
// builds the AAC-LC one from the rate and channels). bitrate is the Opus
// bitrate in bit/s (0: 64 kbit/s).
func NewAudioTranscoder(codec AudioCodec, sampleRate, channels int, config []byte, bitrate int) (*AudioTranscoder, error) {
	libavInit()
	if sampleRate <= 0 || sampleRate > 192000 || channels <= 0 || channels > 8 || len(config) > 1024 {
		return nil, fmt.Errorf("%w: audio %d Hz, %d channels, %d config bytes", ErrUnsupportedCodec, sampleRate, channels, len(config))
	}
	var id C.int
	switch codec {
	case AudioAAC:
		id = C.AV_CODEC_ID_AAC
		if config == nil {
			config = AACConfig(sampleRate, channels)
			if config == nil {
				return nil, fmt.Errorf("%w: AAC at %d Hz", ErrUnsupportedCodec, sampleRate)
			}
		}
	case AudioPCMU:
		id = C.AV_CODEC_ID_PCM_MULAW
	case AudioPCMA:
		id = C.AV_CODEC_ID_PCM_ALAW
	case AudioOpus:
		id = C.AV_CODEC_ID_OPUS
	default:
		return nil, fmt.Errorf("%w: audio codec %d", ErrUnsupportedCodec, codec)
	}
	var extra *C.uint8_t
	if len(config) > 0 {
		extra = (*C.uint8_t)(unsafe.Pointer(&config[0]))
	}
	var t *C.ifc_atx
	if err := averr("open audio transcoder", C.ifc_atx_open(&t, id, C.int(sampleRate), C.int(channels), extra, C.int(len(config)), C.int(bitrate))); err != nil {
		return nil, err
	}
	return &AudioTranscoder{t: t}, nil
}

// Transcode decodes one frame whose first sample is at pts48 (in 48 kHz
// units, from the source's own timestamps) and calls emit with every Opus
// packet that became ready and its 48 kHz timestamp; the packet is valid
// only during emit. A frame that does not decode returns an error and
// changes nothing else.
func (a *AudioTranscoder) Transcode(frame []byte, pts48 int64, emit func(opus []byte, pts48 int64)) error {
	if a.t == nil {
		return ErrClosed
	}
	if len(frame) == 0 || len(frame) > maxAudioFrame {
		return fmt.Errorf("%w: audio frame of %d bytes", ErrBadSize, len(frame))
	}
	if err := averr("decode audio", C.ifc_atx_send(a.t, (*C.uint8_t)(unsafe.Pointer(&frame[0])), C.int(len(frame)), C.int64_t(pts48))); err != nil {
		return err
	}
	for {
		r := C.ifc_atx_receive(a.t)
		if r == 0 {
			return nil
		}
		if r < 0 {
			return averr("encode opus", r)
		}
		out := a.t.out
		if out.size > 0 {
			emit(unsafe.Slice((*byte)(unsafe.Pointer(out.data)), int(out.size)), int64(out.pts))
		}
	}
}

// Close frees the transcoder; a second call does nothing.
func (a *AudioTranscoder) Close() {
	if a.t != nil {
		C.ifc_atx_close(a.t)
		a.t = nil
	}
}

// aacRates are the sampling frequencies of an AudioSpecificConfig's
// 4-bit index (ISO/IEC 14496-3 §1.6.3.4).
var aacRates = [...]int{96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350}

// AACConfig is the 2-byte AAC-LC AudioSpecificConfig for a rate and channel
// count (1-7), nil when the rate has no index.
func AACConfig(sampleRate, channels int) []byte {
	if channels < 1 || channels > 7 {
		return nil
	}
	for i, r := range aacRates {
		if r == sampleRate {
			// 5 bits object type 2 (AAC-LC), 4 bits rate index, 4 bits
			// channel configuration, 3 bits zero.
			return []byte{byte(2<<3 | i>>1), byte((i&1)<<7 | channels<<3)}
		}
	}
	return nil
}
