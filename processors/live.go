package processors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"gocv.io/x/gocv"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/media/imagedecode"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// Errors of the live runner.
var (
	ErrLiveConfig = errors.New("bad live runner configuration")
	ErrBadFrame   = errors.New("bad frame")
)

// maxFrameSide bounds the frames the runner accepts, so a corrupt header
// cannot make it allocate gigabytes.
const maxFrameSide = 16384

// LiveRunner runs one camera's pipeline on the frames of <prefix>.frames.<cam>
// and publishes a busv1.Result per processed frame on <prefix>.results.<cam>.
// It never queues: a frame that arrives while the pipeline is busy replaces
// the one waiting (latest wins), and each replaced frame counts as skipped.
// Exported fields are configuration; set them before Start.
type LiveRunner struct {
	// Camera is the camera id (a subject token).
	Camera string
	// Pipeline is the pipeline to run; its id goes into every Result.
	Pipeline *busv1.Pipeline
	// Registry resolves the pipeline's processors.
	Registry *Registry
	// Conn is the bus connection to subscribe and publish on.
	Conn *nats.Conn
	// Subjects names the subjects; the zero value means prefix "ifc".
	Subjects bus.Subjects
	// Metrics, when set, records step times, skipped frames and results.
	Metrics *Metrics
	// Logger receives the runner's log lines; slog.Default() when nil.
	Logger *slog.Logger
	// Options are passed to Compile (for example WithRemote).
	Options []Option
	// Observer, when set, sees every result before it is published, with
	// the frame it was computed on (the tracker sets track ids there). It
	// runs on the pipeline's goroutine and must not keep img.
	Observer ResultObserver
	// Queue, when set, joins the frames subscription to this NATS queue
	// group: every frame goes to one member, so two nodes running the
	// same camera's pipeline while it moves between them never both
	// process (and publish a result for) one frame.
	Queue string
	// Node names this process in every Result (Result.node).
	Node string
	// Local, when set, takes the frames from Offer (the camera's frame
	// source in this process) instead of a bus subscription: a 640x360
	// frame crossing the in-process NATS connection was marshalled,
	// copied through the server and unmarshalled into a new buffer, five
	// times a second, and its garbage made most of the collector's work.
	Local bool

	pl      *Pipeline
	sub     *nats.Subscription
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	wake    chan struct{}
	closeMu sync.Once

	mu        sync.Mutex
	pending   *nats.Msg
	pendingAt time.Time
	// offered is set while offer holds a frame from Offer not yet
	// processed; run swaps offer and work, so Offer never writes the
	// frame being processed.
	offered     bool
	offer, work *busv1.Frame

	skipped, processed, failed atomic.Uint64

	skippedC  prometheus.Counter
	resultsC  prometheus.Counter
	latencyH  prometheus.Observer
	ingestH   prometheus.Observer
	lastErr   string
	frame     busv1.Frame
	result    busv1.Result
	img       gocv.Mat // BGR frame buffer, reused while the size stays
	stage     gocv.Mat // staging for formats that need a conversion
	resultSub string
}

// ResultObserver sees a live camera's results before they are published.
type ResultObserver interface {
	Observe(img gocv.Mat, res *busv1.Result)
}

// Start compiles the pipeline, subscribes to the camera's frames and starts
// the processing goroutine.
func (r *LiveRunner) Start() error {
	if err := bus.ValidateToken(r.Camera); err != nil {
		return fmt.Errorf("%w: camera: %v", ErrLiveConfig, err)
	}
	if r.Conn == nil || r.Registry == nil || r.Pipeline == nil {
		return fmt.Errorf("%w: Conn, Registry and Pipeline are required", ErrLiveConfig)
	}
	if r.Subjects.Prefix == "" {
		r.Subjects.Prefix = "ifc"
	}
	if r.Logger == nil {
		r.Logger = slog.Default()
	}
	r.Logger = r.Logger.With("camera", r.Camera, "pipeline", r.Pipeline.GetId())
	opts := r.Options
	if r.Metrics != nil {
		opts = append(opts[:len(opts):len(opts)], WithMetrics(r.Metrics))
		r.skippedC = r.Metrics.FramesSkipped.WithLabelValues(r.Camera)
		r.resultsC = r.Metrics.Results.WithLabelValues(r.Camera, r.Pipeline.GetId())
		r.latencyH = r.Metrics.FrameLatency.WithLabelValues(r.Camera, r.Pipeline.GetId())
		r.ingestH = r.Metrics.IngestLatency.WithLabelValues(r.Camera, r.Pipeline.GetId())
	}
	pl, err := Compile(r.Registry, r.Pipeline, opts...)
	if err != nil {
		return err
	}
	r.pl = pl
	r.img, r.stage = gocv.NewMat(), gocv.NewMat()
	r.resultSub = r.Subjects.Results(r.Camera)
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.done = make(chan struct{})
	r.wake = make(chan struct{}, 1)
	if r.Local {
		r.offer, r.work = &busv1.Frame{}, &busv1.Frame{}
		go r.run()
		return nil
	}
	var sub *nats.Subscription
	if r.Queue != "" {
		sub, err = r.Conn.QueueSubscribe(r.Subjects.Frames(r.Camera), r.Queue, r.onFrame)
	} else {
		sub, err = r.Conn.Subscribe(r.Subjects.Frames(r.Camera), r.onFrame)
	}
	if err != nil {
		r.cancel()
		r.pl.Close()
		r.img.Close()
		r.stage.Close()
		r.done = nil // nothing for Close to stop
		return fmt.Errorf("subscribe to frames: %w", err)
	}
	// Frames can be large; never let the client's default pending limit
	// call this runner a slow consumer: it keeps at most one anyway.
	sub.SetPendingLimits(-1, -1)
	r.sub = sub
	go r.run()
	return nil
}

// Offer hands the runner a frame of its camera (Local); f is copied, so
// the caller may reuse it and its data once Offer returns. A frame still
// waiting is replaced and counted as skipped, as on the bus.
func (r *LiveRunner) Offer(f *busv1.Frame) {
	r.mu.Lock()
	if r.offer == nil {
		r.mu.Unlock()
		return
	}
	if r.offered {
		r.skipped.Add(1)
		if r.skippedC != nil {
			r.skippedC.Inc()
		}
	}
	copyFrame(r.offer, f)
	r.offered, r.pendingAt = true, time.Now()
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// copyFrame makes dst a copy of src, reusing dst's data buffer.
func copyFrame(dst, src *busv1.Frame) {
	dst.Camera, dst.Pts, dst.RtpTimestamp = src.Camera, src.Pts, src.RtpTimestamp
	dst.Width, dst.Height, dst.Format, dst.Stride = src.Width, src.Height, src.Format, src.Stride
	dst.Sequence, dst.IngestUnixNano = src.Sequence, src.IngestUnixNano
	dst.Data = append(dst.Data[:0], src.Data...)
}

// onFrame runs on the subscription's goroutine: it only parks the message.
func (r *LiveRunner) onFrame(m *nats.Msg) {
	r.mu.Lock()
	if r.pending != nil {
		r.skipped.Add(1)
		if r.skippedC != nil {
			r.skippedC.Inc()
		}
	}
	r.pending, r.pendingAt = m, time.Now()
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *LiveRunner) run() {
	defer close(r.done)
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.wake:
		}
		r.mu.Lock()
		m, at, offered := r.pending, r.pendingAt, r.offered
		r.pending, r.offered = nil, false
		if offered {
			r.offer, r.work = r.work, r.offer
		}
		r.mu.Unlock()
		var f *busv1.Frame
		var err error
		switch {
		case offered:
			f = r.work
		case m != nil:
			f = &r.frame
			if uerr := proto.Unmarshal(m.Data, f); uerr != nil {
				err = fmt.Errorf("%w: %v", ErrBadFrame, uerr)
			}
		default:
			continue
		}
		if err == nil {
			err = r.process(f, at)
		}
		if err != nil {
			r.failed.Add(1)
			if msg := err.Error(); msg != r.lastErr {
				// Log changes only: a broken camera would flood the log
				// at frame rate.
				r.lastErr = msg
				r.Logger.Warn("live pipeline", "error", err)
			}
		} else {
			r.lastErr = ""
		}
	}
}

func (r *LiveRunner) process(f *busv1.Frame, at time.Time) error {
	img, err := r.decode(f)
	if err != nil {
		return err
	}
	res, runErr := r.pl.Run(r.ctx, img)
	if res == nil {
		return runErr
	}
	if r.ctx.Err() != nil {
		return nil
	}
	out := &r.result
	out.Camera, out.Pipeline, out.Node = r.Camera, r.Pipeline.GetId(), r.Node
	out.Pts, out.RtpTimestamp, out.Sequence = f.Pts, f.RtpTimestamp, f.Sequence
	out.Width, out.Height = uint32(img.Cols()), uint32(img.Rows())
	out.Detections, out.Values = res.Detections, res.Values
	out.LatencyNs = res.Duration.Nanoseconds()
	if r.Observer != nil {
		r.Observer.Observe(img, out)
	}
	err = bus.Publish(r.Conn, r.resultSub, out)
	out.Detections, out.Values = nil, nil
	if err != nil {
		return fmt.Errorf("publish result: %w", err)
	}
	r.processed.Add(1)
	if r.resultsC != nil {
		r.resultsC.Inc()
		r.latencyH.Observe(time.Since(at).Seconds())
		if ns := f.IngestUnixNano; ns > 0 {
			r.ingestH.Observe(float64(time.Now().UnixNano()-ns) / 1e9)
		}
	}
	return runErr
}

// FrameMat decodes one bus frame into a new BGR Mat the caller closes, for
// one-off uses (the designer's "try it" on a camera's latest frame); a
// running pipeline decodes into reused buffers instead.
func FrameMat(f *busv1.Frame) (gocv.Mat, error) {
	r := &LiveRunner{img: gocv.NewMat(), stage: gocv.NewMat()}
	defer r.stage.Close()
	m, err := r.decode(f)
	if err != nil {
		r.img.Close()
		return gocv.Mat{}, err
	}
	return m, nil
}

// decode turns a frame into a BGR Mat in the runner's reused buffers: raw
// frames are copied (one memcpy, no allocation; gocv.NewMatFromBytes would
// not copy but wraps the slice in a new cv::Mat header per frame and ties
// the Mat to the message's memory), JPEG and PNG are decoded into r.img,
// header checked first. The caller closes nothing.
func (r *LiveRunner) decode(f *busv1.Frame) (gocv.Mat, error) {
	switch f.Format {
	case busv1.PixelFormat_PIXEL_FORMAT_JPEG, busv1.PixelFormat_PIXEL_FORMAT_PNG:
		if _, err := imagedecode.DecodeInto(f.Data, &r.img, imagedecode.Options{}); err != nil {
			return gocv.Mat{}, fmt.Errorf("%w: %v", ErrBadFrame, err)
		}
		return r.img, nil
	}
	w, h := int(f.Width), int(f.Height)
	if w <= 0 || h <= 0 || w > maxFrameSide || h > maxFrameSide {
		return gocv.Mat{}, fmt.Errorf("%w: size %dx%d", ErrBadFrame, w, h)
	}
	switch f.Format {
	case busv1.PixelFormat_PIXEL_FORMAT_BGR24:
		if err := copyPlane(&r.img, f.Data, int(f.Stride), w, h, 3, gocv.MatTypeCV8UC3); err != nil {
			return gocv.Mat{}, err
		}
	case busv1.PixelFormat_PIXEL_FORMAT_RGB24:
		if err := copyPlane(&r.stage, f.Data, int(f.Stride), w, h, 3, gocv.MatTypeCV8UC3); err != nil {
			return gocv.Mat{}, err
		}
		// Swapping R and B is its own inverse.
		gocv.CvtColor(r.stage, &r.img, gocv.ColorBGRToRGB)
	case busv1.PixelFormat_PIXEL_FORMAT_GRAY8:
		if err := copyPlane(&r.stage, f.Data, int(f.Stride), w, h, 1, gocv.MatTypeCV8U); err != nil {
			return gocv.Mat{}, err
		}
		gocv.CvtColor(r.stage, &r.img, gocv.ColorGrayToBGR)
	case busv1.PixelFormat_PIXEL_FORMAT_I420:
		if w%2 != 0 || h%2 != 0 {
			return gocv.Mat{}, fmt.Errorf("%w: I420 needs an even size, got %dx%d", ErrBadFrame, w, h)
		}
		// The three planes stacked make one w x 1.5h single-channel picture.
		if err := copyPlane(&r.stage, f.Data, 0, w, h*3/2, 1, gocv.MatTypeCV8U); err != nil {
			return gocv.Mat{}, err
		}
		gocv.CvtColor(r.stage, &r.img, gocv.ColorYUVToBGRIYUV)
	default:
		return gocv.Mat{}, fmt.Errorf("%w: pixel format %v not supported", ErrBadFrame, f.Format)
	}
	return r.img, nil
}

// copyPlane copies a raw frame into dst, reallocating dst only when the size
// changes.
func copyPlane(dst *gocv.Mat, data []byte, stride, w, h, bpp int, t gocv.MatType) error {
	row := w * bpp
	if stride == 0 {
		stride = row
	}
	if stride < row {
		return fmt.Errorf("%w: stride %d below row size %d", ErrBadFrame, stride, row)
	}
	if need := stride*(h-1) + row; len(data) < need {
		return fmt.Errorf("%w: %d bytes for %dx%d, want %d", ErrBadFrame, len(data), w, h, need)
	}
	if dst.Rows() != h || dst.Cols() != w || dst.Type() != t {
		dst.Close()
		*dst = gocv.NewMatWithSize(h, w, t)
	}
	b, err := dst.DataPtrUint8()
	if err != nil {
		return err
	}
	if stride == row {
		copy(b, data[:row*h])
		return nil
	}
	for y := 0; y < h; y++ {
		copy(b[y*row:(y+1)*row], data[y*stride:y*stride+row])
	}
	return nil
}

// Skipped returns how many frames were replaced by newer ones unprocessed.
func (r *LiveRunner) Skipped() uint64 { return r.skipped.Load() }

// Processed returns how many results were published.
func (r *LiveRunner) Processed() uint64 { return r.processed.Load() }

// Failed returns how many frames failed to decode, run or publish.
func (r *LiveRunner) Failed() uint64 { return r.failed.Load() }

// Wait blocks until the runner stopped (after Close).
func (r *LiveRunner) Wait() error {
	if r.done == nil {
		return nil
	}
	<-r.done
	return nil
}

// Close unsubscribes, stops the processing goroutine (cancelling the frame in
// flight), and frees the pipeline. A second Close does nothing.
func (r *LiveRunner) Close() error {
	var err error
	r.closeMu.Do(func() {
		if r.done == nil {
			return // never started
		}
		if r.sub != nil {
			err = r.sub.Unsubscribe()
			if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubscription) {
				err = nil
			}
		}
		r.cancel()
		<-r.done
		r.pl.Close()
		r.img.Close()
		r.stage.Close()
		r.mu.Lock()
		r.pending, r.offered, r.offer, r.work = nil, false, nil, nil
		r.mu.Unlock()
	})
	return err
}
