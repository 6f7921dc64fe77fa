package media

// #include "av.h"
import "C"

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// ErrNoVideo is returned when the input has no video stream.
var ErrNoVideo = errors.New("media: no video stream")

// NoTimestamp marks a packet time the container did not give.
const NoTimestamp = math.MinInt64

// DemuxOptions selects the input format and its options.
type DemuxOptions struct {
	// Format forces an input format ("video4linux2" for /dev/videoN); empty
	// probes the file.
	Format string
	// Options are format options (v4l2: "input_format"="mjpeg",
	// "video_size"="1280x720", "framerate"="30").
	Options map[string]string
}

// StreamInfo describes the video stream a Demuxer reads.
type StreamInfo struct {
	Codec Codec
	// CodecName is libavcodec's name ("h264", "msmpeg4v3", "rawvideo").
	CodecName     string
	Width, Height int
	// FPS is the average frame rate, 0 when unknown.
	FPS float64
	// TimeBase of the container's timestamps (Packet times are converted to
	// nanoseconds already).
	TimeBaseNum, TimeBaseDen int
	// Start and Duration of the stream; Duration is 0 when unknown (devices).
	Start, Duration time.Duration
}

// Packet is one video packet. Data aliases the demuxer's buffer until the
// next Read. H264/H265 packets are Annex-B with parameter sets before every
// keyframe.
type Packet struct {
	Data []byte
	// PTS, DTS and Duration in nanoseconds; PTS/DTS are NoTimestamp when
	// missing.
	PTS, DTS, Duration int64
	Keyframe           bool
}

// Demuxer reads the video packets of a file or device through libavformat.
// Read, SeekStart and Close belong to one goroutine; Interrupt may be called
// from any.
type Demuxer struct {
	mu   sync.Mutex // guards m against Interrupt racing Close
	m    *C.ifc_dmx
	info StreamInfo
	pkt  Packet
	buf  []byte
}

// OpenDemuxer opens url (a path, or a device with opts.Format).
func OpenDemuxer(url string, opts DemuxOptions) (*Demuxer, error) {
	return OpenDemuxerContext(context.Background(), url, opts)
}

// OpenDemuxerContext is OpenDemuxer whose opening and probing (which may wait
// on a device) give up when ctx ends.
func OpenDemuxerContext(ctx context.Context, url string, opts DemuxOptions) (*Demuxer, error) {
	libavInit()
	if opts.Format != "" {
		if err := loadDevices(); err != nil {
			return nil, err
		}
	}
	curl := C.CString(url)
	defer C.free(unsafe.Pointer(curl))
	cfmt := C.CString(opts.Format)
	defer C.free(unsafe.Pointer(cfmt))
	keys := make([]string, 0, len(opts.Options))
	for k := range opts.Options {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var sb strings.Builder
	for _, k := range keys {
		v := opts.Options[k]
		if strings.ContainsAny(k, "=\n") || strings.Contains(v, "\n") {
			return nil, fmt.Errorf("media: bad demuxer option %q", k)
		}
		sb.WriteString(k + "=" + v + "\n")
	}
	copts := C.CString(sb.String())
	defer C.free(unsafe.Pointer(copts))
	var m *C.ifc_dmx
	if err := averr("open "+url, C.ifc_dmx_alloc(&m)); err != nil {
		return nil, err
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	if ctx.Done() != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-ctx.Done():
				C.ifc_dmx_interrupt(m)
			case <-stop:
			}
		}()
	}
	r := C.ifc_dmx_open(m, curl, cfmt, copts)
	close(stop)
	wg.Wait()
	if r >= 0 && ctx.Err() != nil {
		r = C.AVERROR_EXIT
	}
	if r < 0 {
		C.ifc_dmx_close(m)
		if r == C.AVERROR_STREAM_NOT_FOUND {
			return nil, fmt.Errorf("%w in %s", ErrNoVideo, url)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, averr("open "+url, r)
	}
	var ci C.ifc_dmx_info
	C.ifc_dmx_info_get(m, &ci)
	info := StreamInfo{
		Codec:       codecOf(ci.codec_id),
		CodecName:   C.GoString(ci.codec_name),
		Width:       int(ci.width),
		Height:      int(ci.height),
		TimeBaseNum: int(ci.tb_num),
		TimeBaseDen: int(ci.tb_den),
	}
	if ci.fps_num > 0 && ci.fps_den > 0 {
		info.FPS = float64(ci.fps_num) / float64(ci.fps_den)
	}
	if int64(ci.start_ns) != NoTimestamp {
		info.Start = time.Duration(ci.start_ns)
	}
	if int64(ci.duration_ns) != NoTimestamp {
		info.Duration = time.Duration(ci.duration_ns)
	}
	return &Demuxer{m: m, info: info}, nil
}

// Info describes the video stream.
func (d *Demuxer) Info() StreamInfo { return d.info }

// Read returns the next video packet, io.EOF at the end of a file.
func (d *Demuxer) Read() (*Packet, error) {
	if d.m == nil {
		return nil, ErrClosed
	}
	r := C.ifc_dmx_read(d.m)
	if r == C.AVERROR_EOF {
		return nil, io.EOF
	}
	if err := averr("read", r); err != nil {
		return nil, err
	}
	out := d.m.out
	d.buf = append(d.buf[:0], unsafe.Slice((*byte)(unsafe.Pointer(out.data)), int(out.size))...)
	m := d.m
	d.pkt = Packet{Data: d.buf, PTS: int64(m.pts_ns), DTS: int64(m.dts_ns), Duration: int64(m.dur_ns), Keyframe: m.key != 0}
	return &d.pkt, nil
}

// SeekStart rewinds to the first packet (file loops).
func (d *Demuxer) SeekStart() error {
	if d.m == nil {
		return ErrClosed
	}
	return averr("seek", C.ifc_dmx_seek_start(d.m))
}

// Interrupt makes a blocked Read (a device waiting for a frame) return; the
// demuxer is unusable afterwards.
func (d *Demuxer) Interrupt() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m != nil {
		C.ifc_dmx_interrupt(d.m)
	}
}

// Close frees the demuxer; a second call does nothing.
func (d *Demuxer) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m != nil {
		C.ifc_dmx_close(d.m)
		d.m = nil
	}
}

// errIsEOF reports whether err ends a file.
func errIsEOF(err error) bool { return errors.Is(err, io.EOF) || IsEOF(err) }
