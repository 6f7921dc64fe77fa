package rtsp

import (
	"bytes"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph265"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/pion/rtp"

	"github.com/imageflowcanvas/imageflow/ingest"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// NAL unit classes shared by H264 and H265.
type naluKind uint8

const (
	naluOther naluKind = iota
	naluVPS
	naluSPS
	naluPPS
	naluAUD
	naluIRAP
)

func classify(codec busv1.Codec, n []byte) naluKind {
	if codec == busv1.Codec_CODEC_H265 {
		switch t := h265.NALUType((n[0] >> 1) & 0x3f); {
		case t == h265.NALUType_VPS_NUT:
			return naluVPS
		case t == h265.NALUType_SPS_NUT:
			return naluSPS
		case t == h265.NALUType_PPS_NUT:
			return naluPPS
		case t == h265.NALUType_AUD_NUT:
			return naluAUD
		case t >= h265.NALUType_BLA_W_LP && t <= h265.NALUType_CRA_NUT:
			return naluIRAP
		}
		return naluOther
	}
	switch h264.NALUType(n[0] & 0x1f) {
	case h264.NALUTypeSPS:
		return naluSPS
	case h264.NALUTypePPS:
		return naluPPS
	case h264.NALUTypeAccessUnitDelimiter:
		return naluAUD
	case h264.NALUTypeIDR:
		return naluIRAP
	}
	return naluOther
}

// paramSets keeps the latest parameter sets of a video track, from the SDP and
// from in-band NAL units, so every keyframe can carry them.
type paramSets struct {
	codec         busv1.Codec
	vps, sps, pps []byte
	width, height int
}

// set stores a copy of n when it differs (the packet buffer n lives in is
// not ours to keep); it reports whether the SPS changed.
func (p *paramSets) set(kind naluKind, n []byte) bool {
	var dst *[]byte
	switch kind {
	case naluVPS:
		dst = &p.vps
	case naluSPS:
		dst = &p.sps
	case naluPPS:
		dst = &p.pps
	default:
		return false
	}
	if bytes.Equal(*dst, n) {
		return false
	}
	*dst = append((*dst)[:0:0], n...)
	if kind == naluSPS {
		p.width, p.height = spsSize(p.codec, n)
		return true
	}
	return false
}

func (p *paramSets) complete() bool {
	if p.sps == nil || p.pps == nil {
		return false
	}
	return p.codec != busv1.Codec_CODEC_H265 || p.vps != nil
}

// spsSize reads the picture size from an SPS; 0, 0 when it does not parse.
func spsSize(codec busv1.Codec, sps []byte) (w, h int) {
	defer func() {
		// A hostile SPS must never take the server down; the size is only
		// informative.
		if recover() != nil {
			w, h = 0, 0
		}
	}()
	if codec == busv1.Codec_CODEC_H265 {
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

// nalDecoder is rtph264.Decoder or rtph265.Decoder.
type nalDecoder interface {
	Decode(pkt *rtp.Packet) ([][]byte, error)
}

// videoTrack turns the RTP packets of one H264/H265 format into access units
// on a sink. It is used by one goroutine at a time (gortsplib calls packet
// callbacks of a session sequentially).
type videoTrack struct {
	sink  ingest.Sink
	log   *slog.Logger
	codec busv1.Codec
	clock int64
	dec   nalDecoder
	// splitOnTS: rtph264 also ends an access unit when the timestamp changes
	// (cameras without marker bits); the unit it returns then belongs to the
	// previous timestamp, which we mirror here.
	splitOnTS bool
	params    paramSets

	bufHas   bool
	bufTS    uint32
	bufStart int64
	clk      ingest.RTPClock

	aus       atomic.Uint64
	decodeErr atomic.Uint64
	lastLog   time.Time
}

// newVideoTrack builds the track of forma, seeded with the parameter sets of
// the SDP; it returns nil for a format that is not H264/H265.
func newVideoTrack(forma format.Format, sink ingest.Sink, log *slog.Logger) (*videoTrack, error) {
	t := &videoTrack{sink: sink, log: log, clock: 90000, clk: ingest.RTPClock{Rate: 90000}}
	switch f := forma.(type) {
	case *format.H264:
		d, err := f.CreateDecoder()
		if err != nil {
			return nil, err
		}
		t.codec, t.dec, t.splitOnTS = busv1.Codec_CODEC_H264, d, true
		t.params.codec = t.codec
		sps, pps := f.SafeParams()
		t.seed(naluSPS, sps)
		t.seed(naluPPS, pps)
	case *format.H265:
		d, err := f.CreateDecoder()
		if err != nil {
			return nil, err
		}
		t.codec, t.dec = busv1.Codec_CODEC_H265, d
		t.params.codec = t.codec
		vps, sps, pps := f.SafeParams()
		t.seed(naluVPS, vps)
		t.seed(naluSPS, sps)
		t.seed(naluPPS, pps)
	default:
		return nil, ErrNoVideo
	}
	sink.SetTrack(t.codec, t.params.width, t.params.height)
	return t, nil
}

func (t *videoTrack) seed(kind naluKind, n []byte) {
	if len(n) > 0 {
		t.params.set(kind, n)
	}
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
	if !t.bufHas {
		t.bufStart = time.Now().UnixNano()
	}
	nalus, err := t.dec.Decode(pkt)
	switch {
	case err == nil:
	case errors.Is(err, rtph264.ErrMorePacketsNeeded), errors.Is(err, rtph265.ErrMorePacketsNeeded):
		if !t.bufHas {
			t.bufHas, t.bufTS = true, pkt.Timestamp
		}
		return
	case errors.Is(err, rtph264.ErrNonStartingPacketAndNoPrevious), errors.Is(err, rtph265.ErrNonStartingPacketAndNoPrevious):
		// Joined in the middle of a fragmented NAL unit: normal at start.
		return
	default:
		t.decodeErr.Add(1)
		t.logDecodeErr(err)
		return
	}
	ts, start := pkt.Timestamp, t.bufStart
	if t.splitOnTS && t.bufHas && pkt.Timestamp != t.bufTS {
		// The decoder closed the previous unit on a timestamp change and
		// kept this packet as the start of the next one.
		ts = t.bufTS
		t.bufHas, t.bufTS, t.bufStart = true, pkt.Timestamp, time.Now().UnixNano()
	} else {
		t.bufHas = false
	}
	t.writeAU(nalus, ts, start)
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

// writeAU assembles one access unit: drops delimiters, puts the parameter
// sets in front of every IRAP picture and publishes it.
func (t *videoTrack) writeAU(nalus [][]byte, ts uint32, ingestNs int64) {
	au := t.assemble(nalus, ts, ingestNs)
	if au == nil {
		return
	}
	if err := t.sink.WriteAccessUnit(au); err == nil {
		t.aus.Add(1)
	}
}

func (t *videoTrack) assemble(nalus [][]byte, ts uint32, ingestNs int64) *busv1.AccessUnit {
	var hasVPS, hasSPS, hasPPS, irap, sizeChanged bool
	count := 0
	for _, n := range nalus {
		if len(n) == 0 {
			continue
		}
		k := classify(t.codec, n)
		switch k {
		case naluVPS:
			hasVPS = true
		case naluSPS:
			hasSPS = true
		case naluPPS:
			hasPPS = true
		case naluAUD:
			continue
		case naluIRAP:
			irap = true
		}
		if t.params.set(k, n) {
			sizeChanged = true
		}
		count++
	}
	if count == 0 {
		return nil
	}
	if sizeChanged {
		t.sink.SetTrack(t.codec, t.params.width, t.params.height)
	}
	// A keyframe the reader cannot decode (parameter sets never seen) is not
	// advertised as one, so hub readers wait for a usable one.
	key := irap && t.params.complete()
	complete := hasSPS && hasPPS && (hasVPS || t.codec != busv1.Codec_CODEC_H265)
	out := make([][]byte, 0, count+3)
	if key && !complete {
		// Rebuild the whole set in order: a decoder parses a PPS against
		// its SPS, so a lone PPS in front of an in-band SPS would fail.
		if t.codec == busv1.Codec_CODEC_H265 {
			out = append(out, t.params.vps)
		}
		out = append(out, t.params.sps, t.params.pps)
	}
	for _, n := range nalus {
		if len(n) == 0 {
			continue
		}
		k := classify(t.codec, n)
		if k == naluAUD || (key && !complete && (k == naluVPS || k == naluSPS || k == naluPPS)) {
			continue
		}
		out = append(out, n)
	}
	au := &busv1.AccessUnit{
		Codec:          t.codec,
		Pts:            t.clk.PTS(ts),
		RtpTimestamp:   ts,
		ClockRate:      uint32(t.clock),
		Keyframe:       key,
		Nalus:          out,
		IngestUnixNano: ingestNs,
	}
	if key && t.params.width > 0 {
		au.Width, au.Height = uint32(t.params.width), uint32(t.params.height)
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
