// Package framesource decodes a camera once and publishes sampled, scaled
// BGR24 frames on <prefix>.frames.<camera> for every pipeline and viewer that
// needs pictures. The server runs one Runner per camera however many
// consumers there are.
package framesource

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/bus/hub"
	"github.com/imageflowcanvas/imageflow/media"
	"github.com/imageflowcanvas/imageflow/media/mediabus"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// Defaults of a Runner.
const (
	DefaultFPS   = 5
	DefaultWidth = 640
	// DefaultDepth access units queue up before the hub drops for this reader
	// (about two seconds of 30 fps video).
	DefaultDepth = 60
)

// ReaderKind names the frame source's hub readers in drop metrics.
const ReaderKind = "decode"

// Errors of the frame source.
var (
	ErrNoCamera = errors.New("framesource: no camera")
	ErrNoHub    = errors.New("framesource: no hub")
	ErrNoConn   = errors.New("framesource: no NATS connection")
)

// Hub is what the Runner needs of bus/hub.
type Hub interface {
	Subscribe(cam, kind string, depth int) (*hub.Reader, error)
}

// Counters are the Runner's totals, read by the server's metrics collector.
type Counters struct {
	// Decoded counts pictures out of the decoder.
	Decoded atomic.Uint64
	// Published counts frames put out (delivered or put on the bus).
	Published atomic.Uint64
	// Skipped counts access units left undecoded (keyframe-only mode) and
	// decoded pictures not due for the sampling rate.
	Skipped atomic.Uint64
	// Errors counts damaged access units, unsupported codecs and failed
	// publishes.
	Errors atomic.Uint64
}

// Runner decodes one camera's access units and publishes sampled frames.
type Runner struct {
	// Camera is the camera id.
	Camera string
	// Hub delivers the camera's access units (reader kind "decode").
	Hub Hub
	// Conn publishes frames.
	Conn *nats.Conn
	// Subjects names the frames subject.
	Subjects bus.Subjects
	// FPS is the sampling rate; DefaultFPS when 0.
	FPS float64
	// Width of published frames (height keeps the aspect ratio, both even);
	// DefaultWidth when 0. Smaller pictures are not enlarged.
	Width int
	// Threads for the decoder; 1 when 0 (many cameras share the cores).
	Threads int
	// Depth of the hub reader queue; DefaultDepth when 0.
	Depth int
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
	// Deliver, when set, hands each frame to a consumer in this process
	// (processors.LiveRunner.Offer) before it is published; the frame and
	// its data are valid only during the call.
	Deliver func(f *busv1.Frame)
	// Interest, with Deliver, reports whether anyone else subscribes to
	// the frames subject (bus.Bus.Interest: an archiver, a "try" request,
	// another node); the frame is published on the bus only then. Nil
	// means always.
	Interest func(subject string) bool
	// Counters are updated while running.
	Counters Counters

	log   *slog.Logger
	dec   *media.Decoder
	frame busv1.Frame
	buf   []byte
	seq   uint64

	// Access units in flight in the decoder, by tag (the decoder returns
	// pictures in presentation order, tagged with what it was given).
	tag  int64
	ring [64]auTimes

	// Sampling and mode state, in the stream's clock (ns).
	nextDue  int64
	lastPTS  int64
	haveLast bool
	lastKey  int64 // PTS of the previous keyframe
	haveKey  bool
	gop      int64 // keyframe interval
	// steadyGOP is set while the last two keyframe intervals were equal:
	// the next keyframe's time is then known (see pastLastSample).
	steadyGOP bool
	// toKey is set from the first access unit left undecoded after the
	// GOP's last sample until the next keyframe: what follows it cannot
	// be decoded without it.
	toKey    bool
	frameDur int64 // average access unit interval
	// sized is set once the decoder's picture size is known and the loop
	// filter chosen for it.
	sized bool
	// waiting holds access units not due for sampling until the next one
	// that is (see canWait).
	waiting []*busv1.AccessUnit
}

type auTimes struct {
	tag    int64
	pts    int64
	rtp    uint32
	ingest int64
}

// Run decodes until ctx ends or the hub closes the reader.
func (r *Runner) Run(ctx context.Context) error {
	if err := r.setup(); err != nil {
		return err
	}
	r.waiting = make([]*busv1.AccessUnit, 0, maxWaiting)
	rd, err := r.Hub.Subscribe(r.Camera, ReaderKind, r.Depth)
	if err != nil {
		return err
	}
	defer rd.Close()
	defer func() {
		if r.dec != nil {
			r.dec.Close()
			r.dec = nil
		}
	}()
	subject := r.Subjects.Frames(r.Camera)
	// Fires when access units have waited a whole sampling interval for
	// the next one (the stream paused or ended): they are decoded then.
	idle := time.NewTimer(time.Hour)
	idle.Stop()
	defer idle.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-idle.C:
			r.decodeWaiting(subject)
		case au, ok := <-rd.C():
			if !ok {
				return nil
			}
			if r.pastLastSample(au) {
				r.observeTiming(au)
				r.Counters.Skipped.Add(1)
				continue
			}
			if r.canWait(au) {
				r.waiting = append(r.waiting, au)
				if len(r.waiting) == 1 {
					idle.Reset(time.Duration(r.interval()))
				}
				continue
			}
			r.decodeWaiting(subject)
			r.handle(au, subject)
		}
	}
}

// maxWaiting bounds the access units held back for one batch.
const maxWaiting = 32

// canWait reports whether au may wait to be decoded with the access units
// after it: its picture is not due for sampling, nor is the next one's
// (that one decodes the batch, so the due picture after it is decoded the
// moment it arrives, no later than without batching), and the stream's
// clock runs on steadily. Decoding a camera's pictures back to back, a
// few at a time, instead of one every frame interval finds the reference
// pictures still in the core's caches: a 1080p30 camera sampled at 5 fps
// took 14.1-15.2 % of a core to decode, scale and publish instead of
// 16.2-16.8 % (alternating runs).
func (r *Runner) canWait(au *busv1.AccessUnit) bool {
	if r.dec == nil || r.dec.Skip() == media.SkipNonKey || r.frameDur <= 0 || len(r.waiting) == maxWaiting {
		return false
	}
	last := r.lastPTS
	if n := len(r.waiting); n > 0 {
		last = r.waiting[n-1].Pts
	}
	if au.Pts <= last || au.Pts-last > 4*r.frameDur {
		// Out of order, a gap or a restarted clock: handle sees to it now.
		return false
	}
	return au.Pts+r.frameDur+r.frameDur/2 < r.nextDue
}

// pastLastSample reports whether au, not a keyframe, comes after the last
// picture of its GOP due for sampling: the next due picture is the next
// keyframe's or later, and nothing decoded from here to that keyframe
// would be published. A 1080p30 camera with a keyframe every second,
// sampled at 5 fps, needs pictures 0 to 24 of each 30: a sixth of the
// decoding, its largest cost, is saved. Only while the last two keyframe
// intervals were equal (steadyGOP); a keyframe later than that said costs
// the samples until it comes, and ends the skipping until the intervals
// agree again.
func (r *Runner) pastLastSample(au *busv1.AccessUnit) bool {
	if au.Keyframe || r.dec == nil {
		r.toKey = false
		return false
	}
	if !r.toKey && r.steadyGOP && r.frameDur > 0 && r.dec.Skip() != media.SkipNonKey {
		r.toKey = au.Pts > r.lastKey && r.nextDue >= r.lastKey+r.gop-r.frameDur/2
	}
	return r.toKey
}

// decodeWaiting decodes the access units held back, in order.
func (r *Runner) decodeWaiting(subject string) {
	for _, au := range r.waiting {
		r.handle(au, subject)
	}
	clear(r.waiting) // let the hub's buffers go
	r.waiting = r.waiting[:0]
}

// setup checks the configuration and fills defaults.
func (r *Runner) setup() error {
	if r.Camera == "" {
		return ErrNoCamera
	}
	if r.Hub == nil {
		return ErrNoHub
	}
	if r.Conn == nil {
		return ErrNoConn
	}
	if r.FPS <= 0 {
		r.FPS = DefaultFPS
	}
	if r.Width <= 0 {
		r.Width = DefaultWidth
	}
	if r.Threads <= 0 {
		r.Threads = 1
	}
	if r.Depth <= 0 {
		r.Depth = DefaultDepth
	}
	r.log = r.Logger
	if r.log == nil {
		r.log = slog.Default()
	}
	r.log = r.log.With("camera", r.Camera, "component", "framesource")
	return nil
}

func (r *Runner) interval() int64 { return int64(float64(time.Second) / r.FPS) }

func (r *Runner) handle(au *busv1.AccessUnit, subject string) {
	if r.dec == nil || r.dec.Codec() != mediabus.Codec(au.Codec) {
		if !au.Keyframe {
			r.Counters.Skipped.Add(1)
			return
		}
		if r.dec != nil {
			r.dec.Close()
			r.dec = nil
		}
		dec, err := media.NewDecoder(mediabus.Codec(au.Codec), r.Threads)
		if err != nil {
			if r.Counters.Errors.Add(1) == 1 {
				r.log.Warn("cannot decode camera", "codec", au.Codec, "err", err)
			}
			return
		}
		r.dec = dec
		r.nextDue, r.haveKey, r.haveLast, r.gop, r.steadyGOP, r.frameDur, r.sized = au.Pts, false, false, 0, false, 0, false
	}
	r.observeTiming(au)
	if au.Keyframe {
		if r.haveKey && au.Pts > r.lastKey {
			gop := au.Pts - r.lastKey
			r.steadyGOP = r.gop > 0 && abs(gop-r.gop) <= r.frameDur/2
			r.gop = gop
		}
		r.lastKey, r.haveKey = au.Pts, true
		// Modes change only at keyframes: leaving keyframe-only decoding in
		// the middle of a GOP would decode against missing references.
		if m := ChooseSkip(r.interval(), r.gop, r.frameDur); m != r.dec.Skip() {
			r.dec.SetSkip(m)
			r.log.Debug("decode mode", "skip", m.String())
		}
	}
	if r.dec.Skip() == media.SkipNonKey && !au.Keyframe {
		r.Counters.Skipped.Add(1)
		return
	}
	r.tag++
	slot := &r.ring[r.tag%int64(len(r.ring))]
	*slot = auTimes{tag: r.tag, pts: au.Pts, rtp: au.RtpTimestamp, ingest: au.IngestUnixNano}
	// The decoder gets the tag as its PTS and hands it back with the picture.
	var n int
	var err error
	if len(au.Nalus) > 0 {
		n, err = r.dec.DecodeNALUs(au.Nalus, r.tag, au.Keyframe)
	} else {
		n, err = r.dec.Decode(au.Data, r.tag, au.Keyframe)
	}
	if err != nil {
		if c := r.Counters.Errors.Add(1); c == 1 || c%100 == 0 {
			r.log.Debug("decode", "err", err, "errors", c)
		}
	}
	if n == 0 {
		return
	}
	r.Counters.Decoded.Add(uint64(n))
	pic, _ := r.dec.Picture()
	if !r.sized {
		r.sized = true
		// Frames scaled down at least twice hide the block edges the
		// deblocking filter would smooth; skipping it saves a sixth to a
		// third of the decoding time (the largest cost of a camera with
		// detection).
		r.dec.SetSkipLoopFilter(pic.Width >= 2*r.Width)
	}
	src := &r.ring[pic.PTS%int64(len(r.ring))]
	if src.tag != pic.PTS {
		// Older than the ring (a decoder with a very deep delay): no times.
		r.Counters.Skipped.Add(1)
		return
	}
	// Due from half a picture early: a clock in whole nanoseconds puts
	// 30 fps picture 6 at 199.99 ms, and sampling it, not picture 7, keeps
	// the samples on the keyframes' grid (see pastLastSample).
	if src.pts < r.nextDue-r.frameDur/2 {
		r.Counters.Skipped.Add(1)
		return
	}
	r.nextDue += r.interval()
	if r.nextDue <= src.pts+r.frameDur/2 {
		r.nextDue = src.pts + r.interval()
	}
	r.publish(src, pic, subject)
}

// observeTiming follows the stream's clock (restarts, the access unit
// interval) for every access unit, decoded or not.
func (r *Runner) observeTiming(au *busv1.AccessUnit) {
	if r.haveLast && (au.Pts < r.lastPTS-int64(time.Second) || au.Pts > r.lastPTS+10*int64(time.Second)) {
		// The source restarted its clock: sample from here.
		r.nextDue, r.haveKey, r.gop, r.steadyGOP = au.Pts, false, 0, false
	}
	if d := au.Pts - r.lastPTS; r.haveLast && d > 0 && d < int64(time.Second) {
		if r.frameDur == 0 {
			r.frameDur = d
		} else {
			r.frameDur += (d - r.frameDur) / 8
		}
	}
	r.lastPTS, r.haveLast = au.Pts, true
}

func abs(d int64) int64 {
	if d < 0 {
		return -d
	}
	return d
}

func (r *Runner) publish(src *auTimes, pic media.Picture, subject string) {
	width := r.Width
	if pic.Width < width {
		width = pic.Width
	}
	buf, w, h, err := r.dec.ScaleBGR(r.buf, width)
	r.buf = buf
	if err != nil {
		r.Counters.Errors.Add(1)
		return
	}
	r.seq++
	f := &r.frame
	*f = busv1.Frame{
		Camera:         r.Camera,
		Pts:            src.pts,
		RtpTimestamp:   src.rtp,
		Width:          uint32(w),
		Height:         uint32(h),
		Format:         busv1.PixelFormat_PIXEL_FORMAT_BGR24,
		Stride:         uint32(w * 3),
		Data:           buf,
		Sequence:       r.seq,
		IngestUnixNano: src.ingest,
	}
	if r.Deliver != nil {
		r.Deliver(f)
	}
	if r.Deliver == nil || r.Interest == nil || r.Interest(subject) {
		if err := bus.Publish(r.Conn, subject, f); err != nil {
			r.Counters.Errors.Add(1)
			return
		}
	}
	r.Counters.Published.Add(1)
}

// ChooseSkip picks the cheapest decoding that still serves a sampling
// interval: keyframes only when the interval is at least a GOP, dropping
// non-reference pictures when at least two source pictures fall in one
// interval, else everything. gop and frameDur are 0 while unknown.
func ChooseSkip(interval, gop, frameDur int64) media.SkipMode {
	switch {
	case gop > 0 && interval >= gop-gop/20:
		return media.SkipNonKey
	case frameDur > 0 && interval >= 2*frameDur:
		return media.SkipNonRef
	}
	return media.SkipNone
}
