package record

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/pmp4"

	"github.com/imageflowcanvas/imageflow/server/blob"
)

// MaxExport is the longest range one export may span, and MaxExportBytes
// the most recorded data it may read: the file is built in memory.
const (
	MaxExport      = 30 * time.Minute
	MaxExportBytes = 512 << 20
)

// exportSample is a stored sample placed on the export's timeline.
type exportSample struct {
	// at is the wall-clock time of its decode time.
	at time.Time
	// out is its decode time in the file (before the start is chosen):
	// wall-clock time with the holes between runs closed.
	out time.Duration
	// seg is the index of the segment it came from: within a segment the
	// stored durations hold, at a segment's end the next sample decides.
	seg    int
	sample *fmp4.Sample
}

// segmentSamples are one segment's samples on the wall clock.
type segmentSamples struct {
	video, audio []exportSample
}

// exportTimeline joins segments written by different ingest sessions or
// nodes, each with a decode timeline of its own, into one timeline.
//
// Every segment is rebased onto the wall-clock start the index records for
// it. Segments are then taken in order of that start: a hole before a
// segment is closed (the file plays the recorded pictures back to back, as
// the recordings list shows the holes), and where a segment starts before
// the pictures taken so far end (two nodes recorded the camera during a
// handover), the overlapping tail of the earlier ones is dropped: the later
// segment starts on a keyframe, and cutting the end of a run never leaves a
// picture without its references. Decode times in the file therefore only
// grow.
type exportTimeline struct {
	video, audio []exportSample
	// runStart and runOut map the current segment's wall clock to the
	// file's: out = at - runStart + runOut.
	runStart time.Time
	runOut   time.Duration
}

// add appends segment i's samples.
func (tl *exportTimeline) add(i int, s segmentSamples) {
	k := 0
	for k < len(s.video) && s.video[k].sample.IsNonSyncSample {
		k++ // a segment starts on a keyframe; never decode from elsewhere
	}
	if k == len(s.video) {
		return
	}
	first := s.video[k].at
	out := time.Duration(0)
	if n := len(tl.video); n > 0 {
		last := tl.video[n-1]
		end := last.out + ticksToDuration(int64(last.sample.Duration), videoTimeScale)
		out = first.Sub(tl.runStart) + tl.runOut
		if out > end {
			out = end // a hole: closed
		}
		// An overlap: the earlier pictures from here on give way.
		for len(tl.video) > 0 && tl.video[len(tl.video)-1].out >= out {
			tl.video = tl.video[:len(tl.video)-1]
		}
		for len(tl.audio) > 0 && tl.audio[len(tl.audio)-1].out >= out {
			tl.audio = tl.audio[:len(tl.audio)-1]
		}
	}
	tl.runStart, tl.runOut = first, out
	for _, v := range s.video[k:] {
		v.out, v.seg = v.at.Sub(first)+out, i
		tl.video = append(tl.video, v)
	}
	for _, a := range s.audio {
		if a.at.Before(first) {
			continue
		}
		a.out, a.seg = a.at.Sub(first)+out, i
		if n := len(tl.audio); n > 0 && a.out <= tl.audio[n-1].out {
			continue
		}
		tl.audio = append(tl.audio, a)
	}
}

// Export builds one plain MP4 of cam from the keyframe at or before since
// up to until, from an index caught up with the bucket (CatchUp), joining
// the segments on the wall clock (see exportTimeline: holes are closed,
// overlaps dropped). A change of codec or picture size ends the file early;
// new parameter sets of the same codec and size go on (each keyframe
// carries its own in-band).
func (m *Manager) Export(ctx context.Context, cam string, since, until time.Time) ([]byte, error) {
	if !until.After(since) {
		return nil, fmt.Errorf("%w: until must be after since", ErrRange)
	}
	if until.Sub(since) > MaxExport {
		return nil, fmt.Errorf("%w: %s is longer than the %s an export may span", ErrRange, until.Sub(since), MaxExport)
	}
	m.CatchUp(ctx)
	segs := m.ix.between(cam, since, until)
	if len(segs) == 0 {
		return nil, ErrNoRecording
	}
	var total int64
	for _, s := range segs {
		total += s.Size
	}
	if total > MaxExportBytes {
		return nil, fmt.Errorf("%w: %d MB recorded in this range, an export reads at most %d MB; pick a shorter range", ErrRange, total>>20, MaxExportBytes>>20)
	}
	var (
		video *fmp4.InitTrack
		audio *fmp4.InitTrack
		tl    exportTimeline
	)
	for i := range segs {
		seg := &segs[i]
		init, err := m.readInit(ctx, seg)
		if err != nil {
			return nil, err
		}
		var v, a *fmp4.InitTrack
		for _, t := range init.Tracks {
			switch t.ID {
			case videoTrackID:
				v = t
			case audioTrackID:
				a = t
			}
		}
		if v == nil {
			return nil, fmt.Errorf("segment %s of %s: no video track", seg.Start.Format(time.RFC3339Nano), cam)
		}
		if video == nil {
			video, audio = v, a
		} else if !samePictures(video.Codec, v.Codec) {
			break
		}
		sameAudio := audio != nil && a != nil && a.TimeScale == audio.TimeScale && reflect.DeepEqual(audio.Codec, a.Codec)
		var audioScale int64
		if sameAudio {
			audioScale = int64(a.TimeScale)
		}
		s, err := m.segmentSamples(ctx, seg, audioScale, until)
		if err != nil {
			return nil, err
		}
		tl.add(i, s)
	}
	videoSamps, audioSamps := tl.video, tl.audio
	// Start at the last keyframe at or before since (or the first one).
	first := -1
	for i, s := range videoSamps {
		if s.sample.IsNonSyncSample {
			continue
		}
		if first < 0 || !s.at.After(since) {
			first = i
		}
		if s.at.After(since) {
			break
		}
	}
	if first < 0 {
		return nil, ErrNoRecording
	}
	videoSamps = videoSamps[first:]
	start := videoSamps[0].out
	pres := pmp4.Presentation{Tracks: []*pmp4.Track{{ID: videoTrackID, TimeScale: videoTimeScale, Codec: video.Codec,
		Samples: toPMP4(videoSamps, videoTimeScale)}}}
	if audio != nil {
		for len(audioSamps) > 0 && audioSamps[0].out < start {
			audioSamps = audioSamps[1:]
		}
		if len(audioSamps) > 0 {
			offset := toTimeScale(int64(audioSamps[0].out-start), int64(audio.TimeScale))
			pres.Tracks = append(pres.Tracks, &pmp4.Track{ID: audioTrackID, TimeScale: audio.TimeScale,
				TimeOffset: int32(offset), Codec: audio.Codec, Samples: toPMP4(audioSamps, int64(audio.TimeScale))})
		}
	}
	var out bytes.Buffer
	if err := pres.Marshal(&out); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	return out.Bytes(), nil
}

// segmentSamples reads seg's samples before until and rebases them onto
// the segment's wall-clock start: its first video decode time is
// seg.Start, whatever timeline the writer counted in. Audio is read when
// audioScale is not zero.
func (m *Manager) segmentSamples(ctx context.Context, seg *Segment, audioScale int64, until time.Time) (segmentSamples, error) {
	var out segmentSamples
	origin := time.Duration(-1) // the video track's first decode time
	var audioParts []*fmp4.PartTrack
	for n := 1; n <= seg.Parts; n++ {
		parts, err := m.readPart(ctx, seg, n)
		if err != nil {
			return out, err
		}
		for _, p := range parts {
			for _, pt := range p.Tracks {
				switch pt.ID {
				case audioTrackID:
					if audioScale != 0 {
						audioParts = append(audioParts, pt)
					}
				case videoTrackID:
					if origin < 0 {
						origin = ticksToDuration(int64(pt.BaseTime), videoTimeScale)
					}
					t := pt.BaseTime
					for _, s := range pt.Samples {
						at := seg.Start.Add(ticksToDuration(int64(t), videoTimeScale) - origin)
						t += uint64(s.Duration)
						if !at.Before(until) {
							break
						}
						out.video = append(out.video, exportSample{at: at, sample: s})
					}
				}
			}
		}
	}
	if origin < 0 {
		return out, nil
	}
	// Audio counts from the same origin as video (the writer places both
	// on one clock per segment).
	for _, pt := range audioParts {
		t := pt.BaseTime
		for _, s := range pt.Samples {
			at := seg.Start.Add(ticksToDuration(int64(t), audioScale) - origin)
			t += uint64(s.Duration)
			if !at.Before(until) {
				break
			}
			out.audio = append(out.audio, exportSample{at: at, sample: s})
		}
	}
	return out, nil
}

// samePictures reports whether a player can go on from codec a to b in one
// track: the same codec and picture size (parameter sets may differ: the
// recorded keyframes carry theirs in-band).
func samePictures(a, b mp4.Codec) bool {
	if reflect.DeepEqual(a, b) {
		return true
	}
	switch a := a.(type) {
	case *mp4.CodecH264:
		b, ok := b.(*mp4.CodecH264)
		if !ok {
			return false
		}
		var sa, sb h264.SPS
		if sa.Unmarshal(a.SPS) != nil || sb.Unmarshal(b.SPS) != nil {
			return false
		}
		return sa.Width() == sb.Width() && sa.Height() == sb.Height()
	case *mp4.CodecH265:
		b, ok := b.(*mp4.CodecH265)
		if !ok {
			return false
		}
		var sa, sb h265.SPS
		if sa.Unmarshal(a.SPS) != nil || sb.Unmarshal(b.SPS) != nil {
			return false
		}
		return sa.Width() == sb.Width() && sa.Height() == sb.Height()
	}
	return false
}

// ticksToDuration converts ticks of a time scale to a duration without
// overflowing on long recordings.
func ticksToDuration(ticks, scale int64) time.Duration {
	return time.Duration(ticks/scale*int64(time.Second) + ticks%scale*int64(time.Second)/scale)
}

// toPMP4 converts samples placed on the file's timeline: within a segment
// they keep their stored durations; the last one of a segment lasts until
// the next sample (shorter where an overlap was dropped).
func toPMP4(in []exportSample, scale int64) []*pmp4.Sample {
	out := make([]*pmp4.Sample, len(in))
	for i, s := range in {
		payload := s.sample.Payload
		dur := s.sample.Duration
		if i+1 < len(in) && in[i+1].seg != s.seg {
			dur = uint32(max(1, toTimeScale(int64(in[i+1].out-s.out), scale)))
		}
		out[i] = &pmp4.Sample{Duration: dur, PTSOffset: s.sample.PTSOffset, IsNonSyncSample: s.sample.IsNonSyncSample,
			PayloadSize: uint32(len(payload)), GetPayload: func() ([]byte, error) { return payload, nil }}
	}
	return out
}

// blobReadTries and blobReadWait bound how long a segment read is retried:
// in a cluster, the object store's stream may be electing a Raft leader
// right after a node died (4-9 s) or an ordered consumer may stall, and a
// read then times out although the blob is there.
const (
	blobReadTries   = 4
	blobReadAttempt = 5 * time.Second
	blobReadWait    = 500 * time.Millisecond
)

func (m *Manager) readBlob(ctx context.Context, key string) ([]byte, error) {
	var err error
	for try := 0; try < blobReadTries; try++ {
		if try > 0 {
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("recording %s: %w", key, err)
			case <-time.After(blobReadWait):
			}
			m.Logger.Warn("recording read retried", "key", key, "try", try+1, "error", err)
		}
		var b []byte
		if b, err = m.readBlobOnce(ctx, key); err == nil {
			return b, nil
		}
		if errors.Is(err, blob.ErrNotFound) || errors.Is(err, blob.ErrInvalidKey) || ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("recording %s: %w", key, err)
}

func (m *Manager) readBlobOnce(ctx context.Context, key string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, blobReadAttempt)
	defer cancel()
	rc, _, err := m.Store.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func (m *Manager) readInit(ctx context.Context, seg *Segment) (*fmp4.Init, error) {
	b, err := m.readBlob(ctx, seg.initKey())
	if err != nil {
		return nil, err
	}
	var init fmp4.Init
	if err := init.Unmarshal(bytes.NewReader(b)); err != nil {
		return nil, fmt.Errorf("recording %s: %w", seg.initKey(), err)
	}
	return &init, nil
}

func (m *Manager) readPart(ctx context.Context, seg *Segment, n int) (fmp4.Parts, error) {
	b, err := m.readBlob(ctx, seg.partKey(n))
	if err != nil {
		return nil, err
	}
	var parts fmp4.Parts
	if err := parts.Unmarshal(b); err != nil {
		return nil, fmt.Errorf("recording %s: %w", seg.partKey(n), err)
	}
	return parts, nil
}

// SegmentFile returns one stored segment as a fragmented MP4 (init and its
// parts, as written): what a player of fMP4 or ffprobe reads.
func (m *Manager) SegmentFile(ctx context.Context, seg Segment) ([]byte, error) {
	var out bytes.Buffer
	for n := 0; n <= seg.Parts; n++ {
		key := seg.initKey()
		if n > 0 {
			key = seg.partKey(n)
		}
		b, err := m.readBlob(ctx, key)
		if err != nil {
			return nil, err
		}
		out.Write(b)
	}
	return out.Bytes(), nil
}
