package webrtc

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/imageflowcanvas/imageflow/bus/hub"
	"github.com/imageflowcanvas/imageflow/media"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// opusListenerDepth is a viewer's queue of transcoded frames (~1 s).
const opusListenerDepth = 50

// opusFeeds runs at most one AAC/G.711→Opus transcode per camera, shared by
// the camera's listening viewers and running only while one listens.
type opusFeeds struct {
	log   func(msg string, args ...any)
	mu    sync.Mutex
	feeds map[string]*opusFeed
	wg    sync.WaitGroup

	// For metrics: time spent transcoding (ns) and Opus packets out.
	cpu     atomic.Int64
	packets atomic.Uint64
}

// opusFeed is the transcode of one camera.
type opusFeed struct {
	cam    string
	reader *hub.Reader
	// listeners is guarded by opusFeeds.mu.
	listeners map[chan *busv1.AccessUnit]struct{}
}

// join adds a listener to cam's Opus feed, starting the feed (from src's
// audio) when it is the first; leave must be called once.
func (f *opusFeeds) join(cam string, src AudioSource) (frames <-chan *busv1.AccessUnit, leave func(), err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	feed := f.feeds[cam]
	if feed == nil {
		r, err := src.SubscribeAudio(cam, "whep-opus", audioDepth)
		if err != nil {
			return nil, nil, err
		}
		feed = &opusFeed{cam: cam, reader: r, listeners: make(map[chan *busv1.AccessUnit]struct{})}
		f.feeds[cam] = feed
		f.wg.Add(1)
		go f.run(feed)
	}
	ch := make(chan *busv1.AccessUnit, opusListenerDepth)
	feed.listeners[ch] = struct{}{}
	var once sync.Once
	return ch, func() { once.Do(func() { f.leave(feed, ch) }) }, nil
}

func (f *opusFeeds) leave(feed *opusFeed, ch chan *busv1.AccessUnit) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(feed.listeners, ch)
	if len(feed.listeners) == 0 && f.feeds[feed.cam] == feed {
		// The last listener left: the transcode stops (its reader closes,
		// run returns) and costs nothing until someone listens again.
		delete(f.feeds, feed.cam)
		feed.reader.Close()
	}
}

// running is the number of cameras being transcoded.
func (f *opusFeeds) running() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.feeds)
}

// run transcodes the camera's audio frames and hands each Opus packet to
// every listener (a full listener loses that packet, never holds the others).
func (f *opusFeeds) run(feed *opusFeed) {
	defer f.wg.Done()
	var (
		tr       *media.AudioTranscoder
		codec    busv1.Codec
		rate     uint32
		channels uint32
		ext      int64 // source RTP time, unwrapped
		last     uint32
		failed   int
	)
	defer func() {
		if tr != nil {
			tr.Close()
		}
	}()
	emit := func(opus []byte, pts48 int64) {
		au := &busv1.AccessUnit{Codec: busv1.Codec_CODEC_OPUS, ClockRate: media.OpusRate, Channels: 2,
			RtpTimestamp: uint32(pts48), Keyframe: true, Data: append([]byte(nil), opus...)}
		f.packets.Add(1)
		f.mu.Lock()
		for ch := range feed.listeners {
			select {
			case ch <- au:
			default:
			}
		}
		f.mu.Unlock()
	}
	for au := range feed.reader.C() {
		if au.ClockRate == 0 || len(au.Data) == 0 {
			continue
		}
		if tr == nil || au.Codec != codec || au.ClockRate != rate || au.Channels != channels {
			if tr != nil {
				tr.Close()
				tr = nil
			}
			codec, rate, channels = au.Codec, au.ClockRate, au.Channels
			ch := int(channels)
			if ch == 0 {
				ch = 1
			}
			var err error
			tr, err = media.NewAudioTranscoder(audioCodecOf(codec), int(rate), ch, nil, 0)
			if err != nil {
				f.log("whep audio: cannot transcode to Opus", "camera", feed.cam, "codec", codec, "rate", rate, "err", err)
				continue
			}
			ext, last = int64(au.RtpTimestamp), au.RtpTimestamp
		}
		ext += int64(int32(au.RtpTimestamp - last))
		last = au.RtpTimestamp
		start := time.Now()
		err := tr.Transcode(au.Data, ext*media.OpusRate/int64(rate), emit)
		f.cpu.Add(int64(time.Since(start)))
		if err != nil {
			if failed++; failed == 1 || failed%500 == 0 {
				f.log("whep audio: transcode", "camera", feed.cam, "err", err, "failures", failed)
			}
		}
	}
}

// audioCodecOf is media's audio codec for a bus codec.
func audioCodecOf(c busv1.Codec) media.AudioCodec {
	switch c {
	case busv1.Codec_CODEC_AAC:
		return media.AudioAAC
	case busv1.Codec_CODEC_PCMU:
		return media.AudioPCMU
	case busv1.Codec_CODEC_PCMA:
		return media.AudioPCMA
	case busv1.Codec_CODEC_OPUS:
		return media.AudioOpus
	}
	return media.AudioUnknown
}

// TranscodeStats is what the engine's transcodes cost, for metrics.
type TranscodeStats struct {
	// AudioRunning is the number of cameras whose audio is being
	// transcoded to Opus (zero when nobody listens).
	AudioRunning int
	// AudioBusy is the time spent transcoding audio so far.
	AudioBusy time.Duration
	// AudioPackets is the number of Opus packets made so far.
	AudioPackets uint64
	// VideoRunning is the number of cameras being transcoded to H.264.
	VideoRunning int
	// VideoBusy is the time spent decoding and encoding video so far.
	VideoBusy time.Duration
	// VideoFrames is the number of H.264 pictures made so far.
	VideoFrames uint64
}

// Transcodes reports the engine's transcodes.
func (e *Engine) Transcodes() TranscodeStats {
	return TranscodeStats{
		AudioRunning: e.opus.running(), AudioBusy: time.Duration(e.opus.cpu.Load()), AudioPackets: e.opus.packets.Load(),
		VideoRunning: e.video.running(), VideoBusy: time.Duration(e.video.busy.Load()), VideoFrames: e.video.frames.Load(),
	}
}
