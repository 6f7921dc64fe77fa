package webrtc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imageflowcanvas/imageflow/bus/hub"
	"github.com/imageflowcanvas/imageflow/media"
	"github.com/imageflowcanvas/imageflow/media/mediabus"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// Defaults of the live view's H.264 transcode.
const (
	// DefaultTranscodeWidth is the transcode's picture width (720p for a
	// 16:9 camera); smaller cameras keep their size.
	DefaultTranscodeWidth = 1280
	// DefaultTranscodeBitrate is the transcode's bitrate in bit/s.
	DefaultTranscodeBitrate = 2_000_000
	// transcodeGOP is the keyframe interval of the transcode, in pictures; a
	// joining viewer gets an IDR at once anyway.
	transcodeGOP = 60
)

// DerivedSource is a VideoSource that can carry streams made in this
// process (bus/hub.Hub): the H.264 transcode of a camera viewers share.
type DerivedSource interface {
	SubscribeDerived(name, kind string, depth int) (*hub.Reader, error)
	Deliver(name string, au *busv1.AccessUnit)
}

// transcodable tells whether the live view transcodes a camera codec to
// H.264 for browsers (it cannot pass through).
func transcodable(c busv1.Codec) bool {
	return c == busv1.Codec_CODEC_H265 || c == busv1.Codec_CODEC_MJPEG
}

// h264Stream names the derived stream of cam's H.264 transcode.
func h264Stream(cam string) string { return cam + "~h264" }

// videoFeeds runs at most one H.265/MJPEG→H.264 transcode per camera, shared
// by the camera's viewers through a derived hub stream and running only
// while one watches.
type videoFeeds struct {
	log            func(msg string, args ...any)
	width, bitrate int

	mu    sync.Mutex
	feeds map[string]*videoFeed
	wg    sync.WaitGroup

	// For metrics: time spent decoding and encoding (ns), pictures out.
	busy   atomic.Int64
	frames atomic.Uint64
}

// videoFeed is the transcode of one camera.
type videoFeed struct {
	cam       string
	reader    *hub.Reader
	listeners int // guarded by videoFeeds.mu
	// keyframe asks the encoder for an IDR (a viewer joined).
	keyframe atomic.Bool
}

// join counts a viewer on cam's transcode, starting it (from src) when it
// is the first, and asks for an IDR so the viewer starts at once; leave
// must be called once. The viewer reads h264Stream(cam) from src, subscribed
// before join so the IDR reaches it.
func (f *videoFeeds) join(cam string, src VideoSource, out DerivedSource) (leave func(), err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	feed := f.feeds[cam]
	if feed == nil {
		r, err := src.Subscribe(cam, "transcode", 64)
		if err != nil {
			return nil, err
		}
		feed = &videoFeed{cam: cam, reader: r}
		f.feeds[cam] = feed
		f.wg.Add(1)
		go f.run(feed, out)
	}
	feed.listeners++
	feed.keyframe.Store(true)
	var once sync.Once
	return func() { once.Do(func() { f.leave(feed) }) }, nil
}

func (f *videoFeeds) leave(feed *videoFeed) {
	f.mu.Lock()
	defer f.mu.Unlock()
	feed.listeners--
	if feed.listeners == 0 && f.feeds[feed.cam] == feed {
		// The last viewer left: the transcode stops with its reader.
		delete(f.feeds, feed.cam)
		feed.reader.Close()
	}
}

func (f *videoFeeds) running() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.feeds)
}

// run decodes the camera's access units and encodes each picture to H.264
// with the source's RTP timestamp, so overlays keyed on it still match.
func (f *videoFeeds) run(feed *videoFeed, out DerivedSource) {
	defer f.wg.Done()
	name := h264Stream(feed.cam)
	var (
		dec    *media.Decoder
		enc    *media.Encoder
		codec  busv1.Codec
		failed int
	)
	defer func() {
		if dec != nil {
			dec.Close()
		}
		if enc != nil {
			enc.Close()
		}
	}()
	fail := func(what string, err error) {
		if failed++; failed == 1 || failed%300 == 0 {
			f.log("whep transcode: "+what, "camera", feed.cam, "err", err, "failures", failed)
		}
	}
	for au := range feed.reader.C() {
		start := time.Now()
		if dec == nil || au.Codec != codec {
			if dec != nil {
				dec.Close()
				dec = nil
			}
			var err error
			// One thread: frame threads would hold pictures back.
			if dec, err = media.NewDecoder(mediabus.Codec(au.Codec), 1); err != nil {
				fail("decoder", err)
				continue
			}
			codec = au.Codec
		}
		// Tagged with the RTP timestamp, which the picture carries out.
		var n int
		var err error
		if len(au.Nalus) > 0 {
			n, err = dec.DecodeNALUs(au.Nalus, int64(au.RtpTimestamp), au.Keyframe)
		} else {
			n, err = dec.Decode(au.Data, int64(au.RtpTimestamp), au.Keyframe)
		}
		if err != nil && !errors.Is(err, media.ErrCorrupt) {
			fail("decode", err)
		}
		pic, ok := dec.Picture()
		if n == 0 || !ok {
			continue
		}
		w, h := media.ScaledSize(pic.Width, pic.Height, min(f.width, pic.Width))
		if enc != nil {
			if ew, eh := enc.Size(); ew != w || eh != h {
				enc.Close()
				enc = nil
			}
		}
		if enc == nil {
			if enc, err = media.NewH264Encoder(w, h, 30, f.bitrate, transcodeGOP); err != nil {
				fail("encoder", err)
				continue
			}
		}
		if feed.keyframe.Swap(false) {
			enc.ForceKeyframe()
		}
		eau, err := enc.EncodePicture(dec, pic.PTS)
		f.busy.Add(int64(time.Since(start)))
		if err != nil {
			fail("encode", err)
			continue
		}
		if eau == nil {
			continue
		}
		outAU := &busv1.AccessUnit{Camera: feed.cam, Codec: busv1.Codec_CODEC_H264, RtpTimestamp: uint32(eau.PTS),
			ClockRate: 90000, Keyframe: eau.Keyframe, Pts: au.Pts, Width: uint32(w), Height: uint32(h),
			IngestUnixNano: au.IngestUnixNano, CompleteUnixNano: au.CompleteUnixNano, Sequence: au.Sequence,
			Nalus: make([][]byte, len(eau.NALUs))}
		for i, n := range eau.NALUs {
			outAU.Nalus[i] = append([]byte(nil), n...)
		}
		f.frames.Add(1)
		out.Deliver(name, outAU)
	}
}

// transcodedReader joins cam's H.264 transcode for a viewer whose browser
// cannot take the camera's codec: the viewer's reader of the transcode, its
// leave func and the transcode's first keyframe. Errors: ErrCodecNotSupported
// (the offer lacks H.264, or src cannot carry a transcode), ErrNoVideo,
// ctx's error.
func (e *Engine) transcodedReader(ctx context.Context, cam string, src VideoSource, info *OfferInfo, codec busv1.Codec) (*hub.Reader, func(), *busv1.AccessUnit, error) {
	out, ok := src.(DerivedSource)
	if !ok || !info.Has(busv1.Codec_CODEC_H264) {
		return nil, nil, nil, fmt.Errorf("%w: the camera sends %s and the offer lacks H264 to transcode it to", ErrCodecNotSupported, codec)
	}
	r, err := out.SubscribeDerived(h264Stream(cam), "whep", e.cfg.ReaderDepth)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: %v", ErrNoVideo, err)
	}
	leave, err := e.video.join(cam, src, out)
	if err != nil {
		r.Close()
		return nil, nil, nil, fmt.Errorf("%w: %v", ErrNoVideo, err)
	}
	wait := time.NewTimer(e.cfg.NoVideoTimeout)
	defer wait.Stop()
	select {
	case au, open := <-r.C():
		if open {
			return r, leave, au, nil
		}
		err = ErrClosed
	case <-wait.C:
		err = ErrNoVideo
	case <-ctx.Done():
		err = ctx.Err()
	}
	leave()
	r.Close()
	return nil, nil, nil, err
}
