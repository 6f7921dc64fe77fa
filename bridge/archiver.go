package bridge

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"gocv.io/x/gocv"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/bus"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// Defaults of an Archiver.
const (
	DefaultArchiveInterval = time.Second
	DefaultJPEGQuality     = 80
	// maxArchiveSide bounds frame dimensions taken from the bus, so a bad
	// header cannot ask for a huge allocation.
	maxArchiveSide = 16384
)

// Errors of the Archiver.
var (
	// ErrBadFrame reports a frame the Archiver cannot encode.
	ErrBadFrame = errors.New("bridge: bad frame")
	// ErrQuality reports a JPEG quality outside 1 to 100.
	ErrQuality = errors.New("bridge: JPEG quality outside 1 to 100")
)

// ArchiverCounters are an Archiver's totals, for the server's metrics
// collector.
type ArchiverCounters struct {
	// Archived counts ArchiveFrames published.
	Archived atomic.Uint64
	// Skipped counts frames not due for the interval or arriving while the
	// encoder was busy.
	Skipped atomic.Uint64
	// Errors counts undecodable or unsupported frames and failed publishes.
	Errors atomic.Uint64
}

// Archiver keeps a JPEG of one camera at most every Interval for the data
// platform: it reads the decoded frames on <prefix>.frames.<cam> and the
// results on <prefix>.results.<cam>, and publishes busv1.ArchiveFrame on
// <prefix>.archive.<cam> (the ARCHIVE stream, which the Mirror carries to
// Kafka) with the latest result attached. Its result may belong to an
// earlier frame: compare ArchiveFrame.pts with result.pts.
type Archiver struct {
	// Conn subscribes and publishes.
	Conn *nats.Conn
	// Subjects names the frames, results and archive subjects.
	Subjects bus.Subjects
	// Camera is the camera id (a bus token).
	Camera string
	// Interval between archived frames; DefaultArchiveInterval when 0.
	Interval time.Duration
	// Quality of the JPEG, 1 to 100; DefaultJPEGQuality when 0.
	Quality int
	// Logger; slog.Default() when nil.
	Logger *slog.Logger

	// Counters are read by the server's metrics collector.
	Counters ArchiverCounters

	mu        sync.Mutex
	started   bool
	closed    bool
	subs      []*nats.Subscription
	due       chan []byte
	stop      chan struct{}
	wg        sync.WaitGroup
	nextNanos atomic.Int64
	result    atomic.Pointer[busv1.Result]

	// Encoder state, owned by the encoder goroutine.
	frame  busv1.Frame
	packed []byte
	out    busv1.ArchiveFrame
	params []int
}

// Start checks the configuration and subscribes; frames are encoded on one
// goroutine until Close.
func (a *Archiver) Start() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.started || a.closed {
		return ErrStarted
	}
	if a.Conn == nil {
		return ErrNoConn
	}
	if err := bus.ValidateToken(a.Camera); err != nil {
		return fmt.Errorf("bridge: archive camera %q: %w", a.Camera, err)
	}
	if a.Quality < 0 || a.Quality > 100 {
		return fmt.Errorf("%w: %d", ErrQuality, a.Quality)
	}
	if a.Subjects.Prefix == "" {
		a.Subjects.Prefix = "ifc"
	}
	setDefault(&a.Interval, DefaultArchiveInterval)
	setDefault(&a.Quality, DefaultJPEGQuality)
	if a.Logger == nil {
		a.Logger = slog.Default()
	}
	a.Logger = a.Logger.With("component", "archiver", "camera", a.Camera)
	a.params = []int{gocv.IMWriteJpegQuality, a.Quality}
	a.due = make(chan []byte, 1)
	a.stop = make(chan struct{})

	rs, err := a.Conn.Subscribe(a.Subjects.Results(a.Camera), a.onResult)
	if err != nil {
		return fmt.Errorf("bridge: subscribe results: %w", err)
	}
	fs, err := a.Conn.Subscribe(a.Subjects.Frames(a.Camera), a.onFrame)
	if err != nil {
		_ = rs.Unsubscribe()
		return fmt.Errorf("bridge: subscribe frames: %w", err)
	}
	a.subs = []*nats.Subscription{rs, fs}
	a.started = true
	a.wg.Go(a.encodeLoop)
	return nil
}

// Close unsubscribes and waits for the encoder; a second call does nothing.
func (a *Archiver) Close() {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	a.closed = true
	started := a.started
	a.mu.Unlock()
	if !started {
		return
	}
	for _, s := range a.subs {
		_ = s.Unsubscribe()
	}
	close(a.stop)
	a.wg.Wait()
}

func (a *Archiver) onResult(msg *nats.Msg) {
	r := &busv1.Result{}
	if err := proto.Unmarshal(msg.Data, r); err != nil {
		a.Counters.Errors.Add(1)
		return
	}
	a.result.Store(r)
}

// onFrame only decides whether the frame is due, so the frames between two
// archived ones cost nothing beyond their delivery.
func (a *Archiver) onFrame(msg *nats.Msg) {
	now := time.Now().UnixNano()
	next := a.nextNanos.Load()
	if now < next || !a.nextNanos.CompareAndSwap(next, now+int64(a.Interval)) {
		a.Counters.Skipped.Add(1)
		return
	}
	select {
	case a.due <- msg.Data:
	default:
		a.Counters.Skipped.Add(1)
	}
}

func (a *Archiver) encodeLoop() {
	for {
		select {
		case <-a.stop:
			return
		case data := <-a.due:
			if err := a.archive(data); err != nil {
				a.Counters.Errors.Add(1)
				a.Logger.Warn("archive frame", "error", err)
			}
		}
	}
}

func (a *Archiver) archive(data []byte) error {
	if err := proto.Unmarshal(data, &a.frame); err != nil {
		return fmt.Errorf("%w: %v", ErrBadFrame, err)
	}
	f := &a.frame
	a.out.Reset()
	a.out.Camera = a.Camera
	a.out.Pts = f.Pts
	a.out.UnixNano = f.IngestUnixNano
	if a.out.UnixNano == 0 {
		a.out.UnixNano = time.Now().UnixNano()
	}
	a.out.ContentType = "image/jpeg"
	a.out.Result = a.result.Load()
	if f.Format == busv1.PixelFormat_PIXEL_FORMAT_JPEG {
		// Already a JPEG: keep it as it is.
		a.out.Data = f.Data
		return a.publish()
	}
	buf, err := a.encode(f)
	if err != nil {
		return err
	}
	defer buf.Close()
	a.out.Data = buf.GetBytes()
	return a.publish()
}

func (a *Archiver) publish() error {
	// bus.Publish copies the marshalled bytes before it returns, so the JPEG
	// buffer may be freed right after.
	err := bus.Publish(a.Conn, a.Subjects.Archive(a.Camera), &a.out)
	a.out.Data = nil
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	a.Counters.Archived.Add(1)
	return nil
}

// encode turns a raw frame into a JPEG. Rows with padding (stride) are
// packed first, since a Mat over Go bytes cannot carry a row step.
func (a *Archiver) encode(f *busv1.Frame) (*gocv.NativeByteBuffer, error) {
	var channels int
	var mt gocv.MatType
	switch f.Format {
	case busv1.PixelFormat_PIXEL_FORMAT_BGR24, busv1.PixelFormat_PIXEL_FORMAT_RGB24:
		channels, mt = 3, gocv.MatTypeCV8UC3
	case busv1.PixelFormat_PIXEL_FORMAT_GRAY8:
		channels, mt = 1, gocv.MatTypeCV8UC1
	default:
		return nil, fmt.Errorf("%w: pixel format %v not supported", ErrBadFrame, f.Format)
	}
	w, h := int(f.Width), int(f.Height)
	if w <= 0 || h <= 0 || w > maxArchiveSide || h > maxArchiveSide {
		return nil, fmt.Errorf("%w: size %dx%d", ErrBadFrame, w, h)
	}
	row := w * channels
	stride := int(f.Stride)
	if stride == 0 {
		stride = row
	}
	if stride < row {
		return nil, fmt.Errorf("%w: stride %d below row size %d", ErrBadFrame, stride, row)
	}
	if need := stride*(h-1) + row; len(f.Data) < need {
		return nil, fmt.Errorf("%w: %d bytes for %dx%d (stride %d), want %d", ErrBadFrame, len(f.Data), w, h, stride, need)
	}
	pix := f.Data[:row*h]
	if stride != row {
		if cap(a.packed) < row*h {
			a.packed = make([]byte, row*h)
		}
		pix = a.packed[:row*h]
		for y := range h {
			copy(pix[y*row:(y+1)*row], f.Data[y*stride:])
		}
	}
	mat, err := gocv.NewMatFromBytes(h, w, mt, pix)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadFrame, err)
	}
	defer mat.Close()
	if f.Format == busv1.PixelFormat_PIXEL_FORMAT_RGB24 {
		// The same channel swap as BGR to RGB (OpenCV code 4 is both).
		gocv.CvtColor(mat, &mat, gocv.ColorBGRToRGB)
	}
	buf, err := gocv.IMEncodeWithParams(gocv.JPEGFileExt, mat, a.params)
	if err != nil {
		return nil, fmt.Errorf("jpeg: %w", err)
	}
	return buf, nil
}
