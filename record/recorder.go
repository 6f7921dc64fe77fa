package record

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mp4"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// videoTimeScale is the MP4 time scale of video tracks (the RTP video clock).
const videoTimeScale = 90000

// Track ids inside every segment.
const (
	videoTrackID = 1
	audioTrackID = 2
)

// maxStep is the largest step between two pictures that is still one
// session; a larger one (or a step backwards) starts a new segment.
const maxStep = 5 * time.Second

// audioRecent is how recently audio must have been seen for a new segment
// to get an audio track.
const audioRecent = 5 * time.Second

// sampleRef is one sample of the fragment being built; its payload lives in
// the fragment's arena at [off, off+n).
type sampleRef struct {
	off, n   int
	duration uint32
	ptsOff   int32
	nonSync  bool
}

// trackBuffer accumulates one track's samples of the next fragment without
// an allocation per sample once warmed up.
type trackBuffer struct {
	arena   []byte
	refs    []sampleRef
	samples []fmp4.Sample
	ptrs    []*fmp4.Sample
	// base is the decode time of the first sample, in the track's time scale
	// from the segment's start; next is where the following sample starts.
	base, next uint64
}

func (t *trackBuffer) add(payload []byte, duration uint32, ptsOff int32, nonSync bool) {
	off := len(t.arena)
	t.arena = append(t.arena, payload...)
	t.refs = append(t.refs, sampleRef{off: off, n: len(payload), duration: duration, ptsOff: ptsOff, nonSync: nonSync})
	t.next += uint64(duration)
}

// addAVCC appends an access unit as length-prefixed NAL units.
func (t *trackBuffer) addAVCC(nalus [][]byte, duration uint32, ptsOff int32, nonSync bool) {
	off := len(t.arena)
	for _, n := range nalus {
		t.arena = binary.BigEndian.AppendUint32(t.arena, uint32(len(n)))
		t.arena = append(t.arena, n...)
	}
	t.refs = append(t.refs, sampleRef{off: off, n: len(t.arena) - off, duration: duration, ptsOff: ptsOff, nonSync: nonSync})
	t.next += uint64(duration)
}

// partTrack builds the fragment's track from the buffered samples; the
// arena is stable by now, so the payloads can point into it.
func (t *trackBuffer) partTrack(id int) *fmp4.PartTrack {
	if len(t.refs) == 0 {
		return nil
	}
	if cap(t.samples) < len(t.refs) {
		t.samples = make([]fmp4.Sample, len(t.refs), 2*len(t.refs))
	}
	t.samples = t.samples[:len(t.refs)]
	t.ptrs = t.ptrs[:0]
	for i, r := range t.refs {
		t.samples[i] = fmp4.Sample{Duration: r.duration, PTSOffset: r.ptsOff, IsNonSyncSample: r.nonSync, Payload: t.arena[r.off : r.off+r.n]}
		t.ptrs = append(t.ptrs, &t.samples[i])
	}
	return &fmp4.PartTrack{ID: id, BaseTime: t.base, Samples: t.ptrs}
}

func (t *trackBuffer) reset() {
	t.arena, t.refs = t.arena[:0], t.refs[:0]
	t.base = t.next
}

// pendingVideo is the last picture, held until the next one gives its
// duration.
type pendingVideo struct {
	au       *busv1.AccessUnit
	dts, pts int64 // 90 kHz
}

// pendingAudio is the last audio frame, held for the same reason.
type pendingAudio struct {
	data []byte
	pts  int64 // audio time scale, from the camera's session start
}

// openSegment is the segment being written.
type openSegment struct {
	Segment
	startDTS  int64 // 90 kHz
	wallStart int64 // Unix ns of startDTS
	params    [][]byte
	hasAudio  bool
	audioRate uint32
	video     trackBuffer
	audio     trackBuffer
	audioOn   bool // the first audio frame of the segment was placed
}

// audioFormat is what the camera's audio frames say about their track.
type audioFormat struct {
	codec    busv1.Codec
	rate     uint32
	channels uint32
}

// recorder writes one camera's segments. One goroutine owns all its state.
type recorder struct {
	m        *Manager
	cam      string
	log      *slog.Logger
	reader   videoReader
	audioSub *nats.Subscription
	audioCh  chan *nats.Msg

	cancel context.CancelFunc
	done   chan struct{}

	seg       *openSegment
	pending   *pendingVideo // nil or &held
	held      pendingVideo
	pendAudio *pendingAudio
	waitKey   bool
	drops     uint64
	lastDur   int64
	videoBase int64 // wall ns minus pts ns of the current session
	lastEnd   int64 // wall ns where this recorder's last stored fragment ended
	audioBase int64
	lastVideo time.Time
	audio     audioFormat
	audioSeen time.Time
	dts264    h264.DTSExtractor
	dts265    h265.DTSExtractor
	out       seekablebuffer.Buffer
	unsupLog  bool
}

func (r *recorder) run(ctx context.Context) {
	defer close(r.done)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	r.waitKey = true
	for {
		select {
		case <-ctx.Done():
			r.closeSegment()
			return
		case au, ok := <-r.reader.C():
			if !ok {
				r.closeSegment()
				return
			}
			r.video(au)
		case msg := <-r.audioCh:
			r.audioFrame(msg)
		case now := <-tick.C:
			// A camera that went quiet ends its segment: what was received
			// becomes readable now, not when the camera comes back.
			if r.seg != nil && now.Sub(r.lastVideo) > 2*r.m.FragmentDuration {
				r.closeSegment()
				r.waitKey = true
			}
		}
	}
}

func toTimeScale(ns int64, scale int64) int64 {
	return ns/int64(time.Second)*scale + ns%int64(time.Second)*scale/int64(time.Second)
}

func (r *recorder) video(au *busv1.AccessUnit) {
	if au.Codec != busv1.Codec_CODEC_H264 && au.Codec != busv1.Codec_CODEC_H265 {
		if !r.unsupLog {
			r.unsupLog = true
			r.log.Warn("recording needs H264 or H265; this camera's video is not recorded", "codec", au.Codec.String())
		}
		return
	}
	if len(au.Nalus) == 0 {
		return
	}
	r.lastVideo = time.Now()
	if d := r.reader.Dropped(); d != r.drops {
		// The hub dropped pictures for us (the store was slow): what follows
		// does not continue this segment.
		r.drops = d
		r.closeSegment()
		r.waitKey = true
	}
	if r.waitKey {
		if !au.Keyframe {
			return
		}
		r.waitKey = false
		r.videoBase = au.IngestUnixNano - au.Pts
		r.dts264 = h264.DTSExtractor{}
		r.dts264.Initialize()
		r.dts265 = h265.DTSExtractor{}
		r.dts265.Initialize()
		r.pending = nil
	}
	pts := toTimeScale(au.Pts, videoTimeScale)
	var dts int64
	var err error
	if au.Codec == busv1.Codec_CODEC_H264 {
		dts, err = r.dts264.Extract(au.Nalus, pts)
	} else {
		dts, err = r.dts265.Extract(au.Nalus, pts)
	}
	if err != nil {
		r.closeSegment()
		r.waitKey = true
		return
	}
	if p := r.pending; p != nil {
		step := dts - p.dts
		if step <= 0 || step > toTimeScale(int64(maxStep), videoTimeScale) {
			r.closeSegment()
			r.waitKey = true
			if au.Keyframe {
				r.video(au)
			}
			return
		}
		r.seg.video.addAVCC(p.au.Nalus, uint32(step), int32(p.pts-p.dts), !p.au.Keyframe)
		r.lastDur = step
		r.pending = nil
		segLen := dts - r.seg.startDTS
		switch {
		case au.Keyframe && (segLen >= toTimeScale(int64(r.m.SegmentDuration), videoTimeScale) || !sameParams(r.seg.params, paramSets(au))):
			r.finishSegment()
		case int64(r.seg.video.next-r.seg.video.base) >= toTimeScale(int64(r.m.FragmentDuration), videoTimeScale):
			r.flushPart()
		}
	}
	if r.seg == nil {
		if !au.Keyframe {
			r.waitKey = true
			return
		}
		if err := r.startSegment(au, dts); err != nil {
			r.log.Warn("recording segment not started", "error", err)
			r.waitKey = true
			return
		}
	}
	r.held = pendingVideo{au: au, dts: dts, pts: pts}
	r.pending = &r.held
}

// paramSets returns the parameter sets in front of a keyframe.
func paramSets(au *busv1.AccessUnit) [][]byte {
	var out [][]byte
	for _, n := range au.Nalus {
		if len(n) == 0 {
			continue
		}
		if au.Codec == busv1.Codec_CODEC_H264 {
			switch h264.NALUType(n[0] & 0x1f) {
			case h264.NALUTypeSPS, h264.NALUTypePPS:
				out = append(out, n)
			}
			continue
		}
		switch h265.NALUType((n[0] >> 1) & 0x3f) {
		case h265.NALUType_VPS_NUT, h265.NALUType_SPS_NUT, h265.NALUType_PPS_NUT:
			out = append(out, n)
		}
	}
	return out
}

// sameParams compares parameter sets; a keyframe without them keeps the
// segment's.
func sameParams(a, b [][]byte) bool {
	if len(b) == 0 {
		return true
	}
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// videoCodec builds the MP4 sample entry from a keyframe's parameter sets.
func videoCodec(au *busv1.AccessUnit, params [][]byte) (mp4.Codec, string, error) {
	if au.Codec == busv1.Codec_CODEC_H264 {
		var c mp4.CodecH264
		for _, n := range params {
			switch h264.NALUType(n[0] & 0x1f) {
			case h264.NALUTypeSPS:
				c.SPS = n
			case h264.NALUTypePPS:
				c.PPS = n
			}
		}
		if c.SPS == nil || c.PPS == nil {
			return nil, "", fmt.Errorf("keyframe without SPS and PPS")
		}
		return &c, "h264", nil
	}
	var c mp4.CodecH265
	for _, n := range params {
		switch h265.NALUType((n[0] >> 1) & 0x3f) {
		case h265.NALUType_VPS_NUT:
			c.VPS = n
		case h265.NALUType_SPS_NUT:
			c.SPS = n
		case h265.NALUType_PPS_NUT:
			c.PPS = n
		}
	}
	if c.VPS == nil || c.SPS == nil || c.PPS == nil {
		return nil, "", fmt.Errorf("keyframe without VPS, SPS and PPS")
	}
	return &c, "h265", nil
}

func audioCodec(f audioFormat) (mp4.Codec, string) {
	switch f.codec {
	case busv1.Codec_CODEC_AAC:
		// The bus carries the rate and channels, not the AudioSpecificConfig:
		// AAC-LC, which RTSP cameras send.
		return &mp4.CodecMPEG4Audio{Config: mpeg4audio.AudioSpecificConfig{
			Type: mpeg4audio.ObjectTypeAACLC, SampleRate: int(f.rate), ChannelCount: int(f.channels)}}, "aac"
	case busv1.Codec_CODEC_OPUS:
		return &mp4.CodecOpus{ChannelCount: int(f.channels)}, "opus"
	}
	return nil, ""
}

// startSegment writes the init blob of a segment starting at keyframe au.
// The index learns of the segment only with its first part.
func (r *recorder) startSegment(au *busv1.AccessUnit, dts int64) error {
	params := paramSets(au)
	vc, vname, err := videoCodec(au, params)
	if err != nil {
		return err
	}
	wall := r.videoBase + dts*int64(time.Second)/videoTimeScale
	if wall < r.lastEnd {
		// A new session of this recorder (after pictures the hub dropped,
		// or a broken timeline) takes its wall clock from its keyframe's
		// ingest time, which jitter can put a few milliseconds before the
		// end the last segment got from its own timestamps. One recorder's
		// segments never overlap: the session starts where the last ended.
		r.videoBase += r.lastEnd - wall
		wall = r.lastEnd
	}
	seg := &openSegment{
		Segment:   Segment{Camera: r.cam, Node: r.m.Node, Start: time.Unix(0, wall).UTC(), End: time.Unix(0, wall).UTC(), Codec: vname},
		startDTS:  dts,
		wallStart: wall,
		params:    cloneParams(params),
	}
	init := fmp4.Init{Tracks: []*fmp4.InitTrack{{ID: videoTrackID, TimeScale: videoTimeScale, Codec: vc}}}
	if ac, aname := audioCodec(r.audio); ac != nil && time.Since(r.audioSeen) < audioRecent {
		init.Tracks = append(init.Tracks, &fmp4.InitTrack{ID: audioTrackID, TimeScale: r.audio.rate, Codec: ac})
		seg.hasAudio, seg.audioRate, seg.Audio = true, r.audio.rate, aname
	}
	r.out.Reset()
	if err := init.Marshal(&r.out); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	start := time.Now()
	if err := r.m.Store.Put(r.m.ctx, seg.initKey(), bytes.NewReader(r.out.Bytes()), int64(len(r.out.Bytes())), "video/mp4"); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	r.m.Metrics.observeWrite(r.cam, time.Since(start), len(r.out.Bytes()))
	seg.Size = int64(len(r.out.Bytes()))
	r.seg = seg
	r.pendAudio = nil
	return nil
}

func cloneParams(p [][]byte) [][]byte {
	out := make([][]byte, len(p))
	for i, n := range p {
		out[i] = append([]byte(nil), n...)
	}
	return out
}

// flushPart stores the buffered samples as the next fragment blob, then
// names it in the index: the index never points at a part the store lacks.
func (r *recorder) flushPart() {
	seg := r.seg
	if seg == nil || len(seg.video.refs) == 0 && len(seg.audio.refs) == 0 {
		return
	}
	part := fmp4.Part{SequenceNumber: uint32(seg.Parts + 1)}
	if t := seg.video.partTrack(videoTrackID); t != nil {
		part.Tracks = append(part.Tracks, t)
	}
	if t := seg.audio.partTrack(audioTrackID); t != nil {
		part.Tracks = append(part.Tracks, t)
	}
	r.out.Reset()
	if err := part.Marshal(&r.out); err != nil {
		r.log.Warn("recording fragment not written", "error", err)
		r.abandonSegment()
		return
	}
	n := seg.Parts + 1
	start := time.Now()
	if err := r.m.Store.Put(r.m.ctx, seg.partKey(n), bytes.NewReader(r.out.Bytes()), int64(len(r.out.Bytes())), "video/iso.segment"); err != nil {
		r.log.Warn("recording fragment not stored", "error", err)
		r.abandonSegment()
		return
	}
	seg.Parts = n
	seg.Size += int64(len(r.out.Bytes()))
	seg.End = time.Unix(0, seg.wallStart+int64(seg.video.next)*int64(time.Second)/videoTimeScale).UTC()
	r.lastEnd = seg.End.UnixNano()
	if err := r.m.ix.put(r.m.ctx, seg.Segment); err != nil {
		r.log.Warn("recording index not updated", "error", err)
	}
	r.m.Metrics.observeWrite(r.cam, time.Since(start), len(r.out.Bytes()))
	seg.video.reset()
	seg.audio.reset()
}

// finishSegment stores the last fragment and marks the segment complete.
func (r *recorder) finishSegment() {
	seg := r.seg
	if seg == nil {
		return
	}
	r.flushPart()
	if r.seg == nil { // the flush failed and abandoned it
		return
	}
	r.seg = nil
	if seg.Parts == 0 {
		_ = r.m.Store.Delete(r.m.ctx, seg.initKey())
		return
	}
	seg.Complete = true
	if err := r.m.ix.put(r.m.ctx, seg.Segment); err != nil {
		r.log.Warn("recording index not updated", "error", err)
	}
	r.m.Metrics.segments.WithLabelValues(r.cam).Inc()
	r.m.segmentDone()
}

// closeSegment ends the segment where the stream stopped: the held picture
// gets the previous picture's duration.
func (r *recorder) closeSegment() {
	if r.seg != nil && r.pending != nil {
		dur := r.lastDur
		if dur <= 0 {
			dur = videoTimeScale / 30
		}
		p := r.pending
		r.seg.video.addAVCC(p.au.Nalus, uint32(dur), int32(p.pts-p.dts), !p.au.Keyframe)
	}
	r.pending = nil
	r.finishSegment()
}

// abandonSegment gives up the segment after a store error: what was stored
// and indexed stays readable, the rest is lost.
func (r *recorder) abandonSegment() {
	seg := r.seg
	r.seg, r.pending, r.waitKey = nil, nil, true
	if seg.Parts == 0 {
		_ = r.m.Store.Delete(r.m.ctx, seg.initKey())
		return
	}
	seg.Complete = true
	_ = r.m.ix.put(r.m.ctx, seg.Segment)
}

func (r *recorder) audioFrame(msg *nats.Msg) {
	var au busv1.AccessUnit
	if err := proto.Unmarshal(msg.Data, &au); err != nil || len(au.Data) == 0 || au.ClockRate == 0 {
		return
	}
	if au.Codec != busv1.Codec_CODEC_AAC && au.Codec != busv1.Codec_CODEC_OPUS {
		return // G.711 has no MP4 sample entry the muxer writes
	}
	f := audioFormat{codec: au.Codec, rate: au.ClockRate, channels: max(au.Channels, 1)}
	now := time.Now()
	if f != r.audio || now.Sub(r.audioSeen) > audioRecent {
		r.audio = f
		r.audioBase = au.IngestUnixNano - au.Pts
		r.pendAudio = nil
	}
	r.audioSeen = now
	seg := r.seg
	if seg == nil || !seg.hasAudio || seg.audioRate != f.rate {
		return
	}
	rate := int64(f.rate)
	pts := toTimeScale(au.Pts, rate)
	if !seg.audioOn {
		// Place the first frame by wall clock relative to the segment's
		// first picture; the ones after follow by their own timestamps.
		wall := r.audioBase + au.Pts
		if wall < seg.wallStart {
			return
		}
		first := uint64(toTimeScale(wall-seg.wallStart, rate))
		seg.audio.base, seg.audio.next = first, first
		seg.audioOn = true
		r.pendAudio = &pendingAudio{data: append([]byte(nil), au.Data...), pts: pts}
		return
	}
	if p := r.pendAudio; p != nil {
		step := pts - p.pts
		if step <= 0 || step > rate {
			step = defaultAudioDuration(f)
		}
		seg.audio.add(p.data, uint32(step), 0, false)
		p.data = append(p.data[:0], au.Data...)
		p.pts = pts
		return
	}
	r.pendAudio = &pendingAudio{data: append([]byte(nil), au.Data...), pts: pts}
}

func defaultAudioDuration(f audioFormat) int64 {
	if f.codec == busv1.Codec_CODEC_AAC {
		return 1024
	}
	return int64(f.rate) / 50 // Opus' usual 20 ms
}
