package media

// #include "av.h"
import "C"

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imageflowcanvas/imageflow/media/h26x"
)

// CaptureConfig configures a Capture.
type CaptureConfig struct {
	// URL is a file path or a device (/dev/video0 with Demux.Format
	// "video4linux2").
	URL   string
	Demux DemuxOptions
	// Loop seeks back to the start at the end of a file.
	Loop bool
	// Realtime paces output by the timestamps (a file played as a camera);
	// live devices pace themselves.
	Realtime bool
	// Transcode re-encodes H264 input too; other codecs are always re-encoded.
	Transcode bool
	// Width scales re-encoded video to this width (height keeps the aspect
	// ratio); 0 keeps the source size.
	Width int
	// Bitrate of re-encoded video in bits/s; 2 Mbit/s when 0.
	Bitrate int
	// GOP is the keyframe interval of re-encoded video in pictures; two
	// seconds when 0, so a late joiner waits at most that long.
	GOP int
	// Preset is the x264 preset; "veryfast" when empty.
	Preset string
}

// CaptureUnit is one H264 access unit out of a Capture. Its slices alias
// the capture's buffers and are valid only during OnUnit.
type CaptureUnit struct {
	NALUs    [][]byte
	Keyframe bool
	// PTS in nanoseconds since the capture started; it keeps increasing
	// across loops and reopens.
	PTS int64
	// RTPTimestamp is PTS in the 90 kHz clock (wraps as RTP does).
	RTPTimestamp  uint32
	Width, Height int
}

// CaptureStats counts what a Capture did; safe to read at any time.
type CaptureStats struct {
	Units        atomic.Uint64
	Loops        atomic.Uint64
	DecodeErrors atomic.Uint64
	Transcoded   atomic.Bool
}

// Capture reads a file or device and turns it into H264 access units:
// H264 passes through (parameter sets put in front of every IDR), anything
// else is decoded and re-encoded with libx264. It is the shared loop of the
// file and USB sources. Run may be called again after it returns (a
// reopen); timestamps continue where the previous run stopped.
type Capture struct {
	CaptureConfig
	// OnTrack is called when a run knows its output size.
	OnTrack func(codec Codec, width, height int)
	// OnUnit receives every access unit; an error ends Run.
	OnUnit func(u *CaptureUnit) error
	// Stats counts units, loops and decode errors.
	Stats CaptureStats

	next int64 // ns: PTS the next run or loop starts at
	unit CaptureUnit
	// Parameter sets seen last, for keyframes whose packet lacks them.
	sps, pps []byte
	fix      [][]byte
}

// Run captures until ctx ends (returns ctx.Err()), the file ends without Loop
// (io.EOF), OnUnit fails or the input fails.
func (c *Capture) Run(ctx context.Context) error {
	if c.OnUnit == nil {
		return errors.New("media: Capture.OnUnit is nil")
	}
	dm, err := OpenDemuxerContext(ctx, c.URL, c.Demux)
	if err != nil {
		return err
	}
	// A device read blocks in libavformat; the interrupt callback is the only
	// way to get it back when ctx ends.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
			dm.Interrupt()
		case <-stop:
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
		dm.Close()
	}()
	err = c.run(ctx, dm)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// frameDur is one picture's duration in ns from the stream's frame rate.
func frameDur(info StreamInfo) int64 {
	if info.FPS >= 1 && info.FPS <= 240 {
		return int64(float64(time.Second) / info.FPS)
	}
	return int64(time.Second / 30)
}

func (c *Capture) run(ctx context.Context, dm *Demuxer) error {
	info := dm.Info()
	dur := frameDur(info)
	passthrough := info.Codec == CodecH264 && !c.Transcode
	c.Stats.Transcoded.Store(!passthrough)

	var dec *Decoder
	var enc *Encoder
	if !passthrough {
		var d *C.ifc_dec
		if err := averr("open decoder "+info.CodecName, C.ifc_dec_open_stream(&d, dm.m, 1)); err != nil {
			return err
		}
		dec = &Decoder{d: d, codec: info.Codec}
		defer dec.Close()
		defer func() {
			if enc != nil {
				enc.Close()
			}
		}()
	} else if info.Width > 0 && c.OnTrack != nil {
		c.OnTrack(CodecH264, info.Width, info.Height)
	}

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	wall0 := time.Now()
	pts0 := c.next               // mapped PTS at wall0
	base := c.next               // mapped PTS of this loop's origin
	origin := int64(NoTimestamp) // stream time mapped to base
	maxEnd := c.next
	// However the run ends, the next one continues the clock after it.
	defer func() { c.next = maxEnd }()
	var count int64 // packets in this loop, for streams without timestamps
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		p, err := dm.Read()
		if errIsEOF(err) {
			if dec != nil {
				// Pictures still in the decoder's reorder buffer.
				for {
					ok, err := dec.DrainNext()
					if err != nil {
						c.Stats.DecodeErrors.Add(1)
					}
					if !ok {
						break
					}
					if enc != nil {
						pic, _ := dec.Picture()
						if err := c.encodeAndEmit(enc, dec, pic.PTS); err != nil {
							return err
						}
					}
				}
			}
			if !c.Loop {
				return io.EOF
			}
			if err := dm.SeekStart(); err != nil {
				return fmt.Errorf("loop %s: %w", c.URL, err)
			}
			c.Stats.Loops.Add(1)
			base, origin, count = maxEnd, NoTimestamp, 0
			if enc != nil {
				enc.ForceKeyframe()
			}
			continue
		}
		if err != nil {
			return err
		}
		// Map the stream's times onto the capture's continuous clock.
		ts := p.PTS
		if ts == NoTimestamp {
			ts = p.DTS
		}
		if ts == NoTimestamp {
			ts = count * dur
		}
		if origin == NoTimestamp {
			origin = ts
			if info.Start > 0 && int64(info.Start) < ts {
				origin = int64(info.Start)
			}
		}
		count++
		pts := base + ts - origin
		if pts < base {
			pts = base
		}
		pace := pts
		if p.DTS != NoTimestamp && p.PTS != NoTimestamp {
			pace = pts - (p.PTS - p.DTS)
		}
		d := p.Duration
		if d <= 0 {
			d = dur
		}
		if pts+d > maxEnd {
			maxEnd = pts + d
		}
		if c.Realtime {
			target := wall0.Add(time.Duration(pace - pts0))
			now := time.Now()
			if late := now.Sub(target); late > time.Second {
				// Fell far behind (slow machine, stalled sink): restart the clock
				// instead of bursting to catch up.
				wall0 = wall0.Add(late)
			} else if wait := target.Sub(now); wait > 0 {
				timer.Reset(wait)
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-timer.C:
				}
			}
		}
		if passthrough {
			if err := c.emitPassthrough(p, pts, info); err != nil {
				return err
			}
			continue
		}
		n, err := dec.decodePacket(dm, pts, p.Keyframe)
		if err != nil {
			c.Stats.DecodeErrors.Add(1)
		}
		if n == 0 {
			continue
		}
		pic, _ := dec.Picture()
		if enc == nil {
			w, h := ScaledSize(pic.Width, pic.Height, c.Width)
			fps := int(math.Round(info.FPS))
			if fps <= 0 || fps > 240 {
				fps = 30
			}
			gop := c.GOP
			if gop <= 0 {
				gop = 2 * fps
			}
			enc, err = NewH264EncoderConfig(EncoderConfig{Width: w, Height: h, FPS: fps, Bitrate: c.Bitrate, GOP: gop, Preset: c.Preset})
			if err != nil {
				return err
			}
			if c.OnTrack != nil {
				c.OnTrack(CodecH264, w, h)
			}
		}
		if err := c.encodeAndEmit(enc, dec, pic.PTS); err != nil {
			return err
		}
	}
}

func (c *Capture) encodeAndEmit(enc *Encoder, dec *Decoder, pts int64) error {
	// x264 counts in the 90 kHz clock; the access unit keeps the ns tag.
	au, err := enc.EncodePicture(dec, pts*9/100000)
	if err != nil {
		return err
	}
	if au == nil {
		return nil
	}
	w, h := enc.Size()
	c.unit.NALUs = au.NALUs
	c.unit.Keyframe = au.Keyframe
	return c.emit(pts, w, h)
}

func (c *Capture) emitPassthrough(p *Packet, pts int64, info StreamInfo) error {
	nalus := h26x.SplitAnnexB(c.unit.NALUs[:0], p.Data)
	hasSPS, hasPPS := false, false
	for _, n := range nalus {
		switch h26x.H264NALUType(n) {
		case h26x.H264NALUTypeSPS:
			c.sps = append(c.sps[:0], n...)
			hasSPS = true
		case h26x.H264NALUTypePPS:
			c.pps = append(c.pps[:0], n...)
			hasPPS = true
		}
	}
	c.unit.NALUs = nalus
	key := h26x.H264HasIDR(nalus)
	if key && (!hasSPS || !hasPPS) && len(c.sps) > 0 && len(c.pps) > 0 {
		// Every keyframe on the bus must start a decoder by itself.
		c.fix = append(c.fix[:0], c.sps, c.pps)
		c.fix = append(c.fix, nalus...)
		c.unit.NALUs = c.fix
	}
	if len(c.unit.NALUs) == 0 {
		return nil
	}
	c.unit.Keyframe = key
	return c.emit(pts, info.Width, info.Height)
}

func (c *Capture) emit(pts int64, w, h int) error {
	u := &c.unit
	u.PTS = pts
	u.RTPTimestamp = uint32(pts * 9 / 100000)
	u.Width, u.Height = w, h
	c.Stats.Units.Add(1)
	return c.OnUnit(u)
}
