package rtsp

import (
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg4audio"
	"github.com/pion/rtp"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/ingest"
	"github.com/imageflowcanvas/imageflow/media/h26x"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// videoCodec is the bitstream syntax of a bus video codec.
func videoCodec(c busv1.Codec) h26x.Codec {
	if c == busv1.Codec_CODEC_H265 {
		return h26x.H265
	}
	return h26x.H264
}

// videoTrack turns the RTP packets of one H264/H265 format into access units
// on a sink. It is used by one goroutine at a time (gortsplib calls packet
// callbacks of a session sequentially).
type videoTrack struct {
	sink  ingest.Sink
	log   *slog.Logger
	codec busv1.Codec
	clock int64
	dep   h26x.Depacketizer
	clk   ingest.RTPClock
	// au is the message of every access unit: the sink is done with it
	// when WriteAccessUnit returns.
	au busv1.AccessUnit

	aus       atomic.Uint64
	decodeErr atomic.Uint64
	lastLog   time.Time
}

// newVideoTrack builds the track of forma, seeded with the parameter sets of
// the SDP; it returns nil for a format that is not H264/H265.
func newVideoTrack(forma format.Format, sink ingest.Sink, log *slog.Logger) (*videoTrack, error) {
	t := &videoTrack{sink: sink, log: log, clock: 90000, clk: ingest.RTPClock{Rate: 90000}}
	var vps, sps, pps []byte
	switch f := forma.(type) {
	case *format.H264:
		t.codec = busv1.Codec_CODEC_H264
		// The sink is done with an access unit when WriteAccessUnit
		// returns (the bus copies it), so fragmented NAL units are joined
		// into one reused buffer.
		t.dep = h26x.Depacketizer{Codec: h26x.H264, PacketizationMode: f.PacketizationMode, ArrivalTime: true, ReuseBuffers: true}
		sps, pps = f.SafeParams()
	case *format.H265:
		t.codec = busv1.Codec_CODEC_H265
		t.dep = h26x.Depacketizer{Codec: h26x.H265, MaxDONDiff: f.MaxDONDiff, ArrivalTime: true}
		vps, sps, pps = f.SafeParams()
	default:
		return nil, ErrNoVideo
	}
	if err := t.dep.Init(); err != nil {
		return nil, err
	}
	t.dep.SetParams(vps, sps, pps)
	w, h := t.dep.Size()
	sink.SetTrack(t.codec, w, h)
	return t, nil
}

// findVideo returns the first H264 or H265 format of desc.
func findVideo(desc *description.Session) (*description.Media, format.Format) {
	for _, m := range desc.Medias {
		for _, f := range m.Formats {
			switch f.(type) {
			case *format.H264, *format.H265:
				return m, f
			}
		}
	}
	return nil, nil
}

// writePacket feeds one RTP packet; it writes an access unit to the sink when
// the packet completes one.
func (t *videoTrack) writePacket(pkt *rtp.Packet) {
	unit, ok, err := t.dep.Push(pkt)
	switch {
	case errors.Is(err, h26x.ErrJoinedMidFragment):
		// Joined in the middle of a fragmented NAL unit: normal at start.
		return
	case err != nil:
		t.decodeErr.Add(1)
		t.logDecodeErr(err)
		return
	case !ok:
		return
	}
	if err := t.sink.WriteAccessUnit(t.accessUnit(unit)); err == nil {
		t.aus.Add(1)
	}
}

func (t *videoTrack) logDecodeErr(err error) {
	if t.log == nil {
		return
	}
	// At most one line per 10 s: a broken camera must not flood the log.
	if now := time.Now(); now.Sub(t.lastLog) > 10*time.Second {
		t.lastLog = now
		t.log.Warn("rtp depacketize", "err", err, "errors", t.decodeErr.Load())
	}
}

// accessUnit turns an assembled unit into the bus message, telling the sink
// first when the picture size may have changed.
func (t *videoTrack) accessUnit(unit h26x.AccessUnit) *busv1.AccessUnit {
	w, h := t.dep.Size()
	if unit.SPSChanged {
		t.sink.SetTrack(t.codec, w, h)
	}
	au := &t.au
	proto.Reset(au)
	au.Codec = t.codec
	au.Pts = t.clk.PTS(unit.RTPTimestamp)
	au.RtpTimestamp = unit.RTPTimestamp
	au.ClockRate = uint32(t.clock)
	au.Keyframe = unit.Keyframe
	au.Nalus = unit.NALUs
	au.IngestUnixNano = unit.ArrivalUnixNano
	if unit.Keyframe && w > 0 {
		au.Width, au.Height = uint32(w), uint32(h)
	}
	return au
}

// audioTrack publishes the frames of one audio format (AAC, Opus, G711).
type audioTrack struct {
	sink     ingest.Sink
	codec    busv1.Codec
	clock    int64
	channels uint32
	aac      *rtpmpeg4audio.Decoder
	clk      ingest.RTPClock
}

// newAudioTrack returns nil for formats the bus has no codec for.
func newAudioTrack(forma format.Format, sink ingest.Sink) *audioTrack {
	t := &audioTrack{sink: sink, clock: int64(forma.ClockRate()), clk: ingest.RTPClock{Rate: int64(forma.ClockRate())}}
	switch f := forma.(type) {
	case *format.MPEG4Audio:
		if f.Config == nil {
			return nil
		}
		d, err := f.CreateDecoder()
		if err != nil {
			return nil
		}
		t.codec, t.aac, t.channels = busv1.Codec_CODEC_AAC, d, uint32(f.Config.ChannelCount)
	case *format.Opus:
		t.codec, t.channels = busv1.Codec_CODEC_OPUS, uint32(f.ChannelCount)
	case *format.G711:
		t.codec, t.channels = busv1.Codec_CODEC_PCMA, uint32(f.ChannelCount)
		if f.MULaw {
			t.codec = busv1.Codec_CODEC_PCMU
		}
	default:
		return nil
	}
	if t.clock <= 0 {
		return nil
	}
	return t
}

// writePacket publishes the frames in one RTP packet.
func (t *audioTrack) writePacket(pkt *rtp.Packet) {
	now := time.Now().UnixNano()
	if t.aac == nil {
		if len(pkt.Payload) > 0 {
			t.write(pkt.Payload, pkt.Timestamp, now)
		}
		return
	}
	aus, err := t.aac.Decode(pkt)
	if err != nil {
		return
	}
	// RFC 3640: the access units of one packet are consecutive AAC frames of
	// 1024 samples each.
	for i, a := range aus {
		t.write(a, pkt.Timestamp+uint32(i*1024), now)
	}
}

func (t *audioTrack) write(data []byte, ts uint32, now int64) {
	_ = t.sink.WriteAccessUnit(&busv1.AccessUnit{
		Codec:          t.codec,
		Pts:            t.clk.PTS(ts),
		RtpTimestamp:   ts,
		ClockRate:      uint32(t.clock),
		Data:           data,
		IngestUnixNano: now,
		Channels:       t.channels,
		Keyframe:       true,
	})
}
