package record

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"reflect"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/pmp4"
)

// MaxExport is the longest range one export may span, and MaxExportBytes
// the most recorded data it may read: the file is built in memory.
const (
	MaxExport      = 30 * time.Minute
	MaxExportBytes = 512 << 20
)

// exportSample is a stored sample with its wall-clock time.
type exportSample struct {
	at      time.Time
	sample  *fmp4.Sample
	trackID int
}

// Export builds one plain MP4 of cam from the keyframe at or before since
// up to until. Holes between segments are skipped (the file plays the
// recorded pictures back to back); a change of codec parameters ends the
// file early.
func (m *Manager) Export(ctx context.Context, cam string, since, until time.Time) ([]byte, error) {
	if !until.After(since) {
		return nil, fmt.Errorf("%w: until must be after since", ErrRange)
	}
	if until.Sub(since) > MaxExport {
		return nil, fmt.Errorf("%w: %s is longer than the %s an export may span", ErrRange, until.Sub(since), MaxExport)
	}
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
		video      *fmp4.InitTrack
		audio      *fmp4.InitTrack
		videoSamps []exportSample
		audioSamps []exportSample
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
		} else if !reflect.DeepEqual(video.Codec, v.Codec) {
			break
		}
		sameAudio := audio != nil && a != nil && a.TimeScale == audio.TimeScale && reflect.DeepEqual(audio.Codec, a.Codec)
		for n := 1; n <= seg.Parts; n++ {
			parts, err := m.readPart(ctx, seg, n)
			if err != nil {
				return nil, err
			}
			for _, p := range parts {
				for _, pt := range p.Tracks {
					scale := int64(videoTimeScale)
					if pt.ID == audioTrackID {
						if !sameAudio {
							continue
						}
						scale = int64(a.TimeScale)
					} else if pt.ID != videoTrackID {
						continue
					}
					t := pt.BaseTime
					for _, s := range pt.Samples {
						at := seg.Start.Add(ticksToDuration(int64(t), scale))
						t += uint64(s.Duration)
						if !at.Before(until) {
							break
						}
						if pt.ID == videoTrackID {
							videoSamps = append(videoSamps, exportSample{at: at, sample: s, trackID: pt.ID})
						} else {
							audioSamps = append(audioSamps, exportSample{at: at, sample: s, trackID: pt.ID})
						}
					}
				}
			}
		}
	}
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
	start := videoSamps[0].at
	pres := pmp4.Presentation{Tracks: []*pmp4.Track{{ID: videoTrackID, TimeScale: videoTimeScale, Codec: video.Codec, Samples: toPMP4(videoSamps)}}}
	if audio != nil {
		for len(audioSamps) > 0 && audioSamps[0].at.Before(start) {
			audioSamps = audioSamps[1:]
		}
		if len(audioSamps) > 0 {
			offset := toTimeScale(int64(audioSamps[0].at.Sub(start)), int64(audio.TimeScale))
			pres.Tracks = append(pres.Tracks, &pmp4.Track{ID: audioTrackID, TimeScale: audio.TimeScale,
				TimeOffset: int32(offset), Codec: audio.Codec, Samples: toPMP4(audioSamps)})
		}
	}
	var out bytes.Buffer
	if err := pres.Marshal(&out); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	return out.Bytes(), nil
}

// ticksToDuration converts ticks of a time scale to a duration without
// overflowing on long recordings.
func ticksToDuration(ticks, scale int64) time.Duration {
	return time.Duration(ticks/scale*int64(time.Second) + ticks%scale*int64(time.Second)/scale)
}

func toPMP4(in []exportSample) []*pmp4.Sample {
	out := make([]*pmp4.Sample, len(in))
	for i, s := range in {
		payload := s.sample.Payload
		out[i] = &pmp4.Sample{Duration: s.sample.Duration, PTSOffset: s.sample.PTSOffset, IsNonSyncSample: s.sample.IsNonSyncSample,
			PayloadSize: uint32(len(payload)), GetPayload: func() ([]byte, error) { return payload, nil }}
	}
	return out
}

func (m *Manager) readBlob(ctx context.Context, key string) ([]byte, error) {
	rc, _, err := m.Store.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("recording %s: %w", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("recording %s: %w", key, err)
	}
	return b, nil
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
