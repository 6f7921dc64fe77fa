package remote

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/imageflowcanvas/imageflow/processors"
	pb "github.com/imageflowcanvas/imageflow/proto/processorv1"
)

// ErrRemote reports a processing failure the remote returned in its response
// (not retried: the same input would fail again).
var ErrRemote = errors.New("remote processor")

// ClientOptions tune NewClient; zero values take the defaults.
type ClientOptions struct {
	// Params are sent with every call (the step's parameters).
	Params map[string]any
	// Timeout is the deadline of one attempt (default 2 s).
	Timeout time.Duration
	// Attempts is how many times a call is tried on Unavailable or
	// DeadlineExceeded (default 3).
	Attempts int
	// Backoff is the wait after the first failed attempt, doubled after
	// each further one up to MaxBackoff (defaults 50 ms and 400 ms).
	Backoff, MaxBackoff time.Duration
	// OnError, when set, is called for every failed attempt (for metrics
	// and logs).
	OnError func(err error)
	// DialOptions are added to the connection's (e.g. TLS credentials;
	// plaintext by default).
	DialOptions []grpc.DialOption
	// Dial, when set, opens every connection to the remote (addr is the
	// resolved host:port); the server passes its host policy's dialer so a
	// denied address is refused at connect time too.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// Client is a processors.Processor running on a remote Processor service.
// Its counters are safe to read at any time.
type Client struct {
	// Calls counts Process calls; Failures those that returned an error;
	// Retries the extra attempts made.
	Calls, Failures, Retries atomic.Uint64

	opts   ClientOptions
	conn   *grpc.ClientConn
	client pb.ProcessorClient
	params *structpb.Struct
	// req and raw are reused: Process calls never overlap.
	req pb.ProcessRequest
	raw pb.RawImage
	img pb.Image
}

// NewClient connects (lazily) to the Processor service at addr (host:port).
// The connection is re-established by gRPC when the remote comes back; a
// dead remote fails fast rather than waiting for it.
func NewClient(addr string, opts ClientOptions) (processors.Processor, error) {
	return newClient(addr, opts)
}

func newClient(addr string, opts ClientOptions) (*Client, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Second
	}
	if opts.Attempts <= 0 {
		opts.Attempts = 3
	}
	if opts.Backoff <= 0 {
		opts.Backoff = 50 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 400 * time.Millisecond
	}
	params, err := structpb.NewStruct(normaliseMap(opts.Params))
	if err != nil {
		return nil, fmt.Errorf("%w: params: %v", processors.ErrBadParam, err)
	}
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(windowSize), grpc.WithInitialConnWindowSize(windowSize),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize),
			grpc.WaitForReady(false)),
		// Reconnect within about a second of the remote coming back, instead
		// of gRPC's default backoff of up to two minutes.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
			BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: time.Second}),
	}
	if opts.Dial != nil {
		dial = append(dial, grpc.WithContextDialer(opts.Dial))
	}
	conn, err := grpc.NewClient(addr, append(dial, opts.DialOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("remote %s: %w", addr, err)
	}
	c := &Client{opts: opts, conn: conn, client: pb.NewProcessorClient(conn), params: params}
	c.img.Data = &pb.Image_Raw{Raw: &c.raw}
	return c, nil
}

func normaliseMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = normalise(v)
	}
	return out
}

// Info asks the remote for its description.
func (c *Client) Info(ctx context.Context) (*pb.InfoResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	return c.client.Info(ctx, &pb.InfoRequest{})
}

// retryable says whether another attempt may succeed.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
		return true
	}
	return false
}

// Process implements processors.Processor: the picture travels as raw BGR.
func (c *Client) Process(ctx context.Context, in *processors.Input, out *processors.Output) error {
	c.Calls.Add(1)
	if err := matToRaw(in.Image, &c.raw); err != nil {
		c.Failures.Add(1)
		return err
	}
	c.req.Image = &c.img
	c.req.Params = c.params
	c.req.Detections = in.Detections
	c.req.Values = in.Values
	// Do not keep the picture's memory referenced after the call.
	defer func() { c.raw.Data = nil; c.req.Detections = nil; c.req.Values = nil }()

	var resp *pb.ProcessResponse
	var err error
	wait := c.opts.Backoff
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
		resp, err = c.client.Process(actx, &c.req)
		cancel()
		if err == nil {
			break
		}
		if c.opts.OnError != nil {
			c.opts.OnError(err)
		}
		if attempt >= c.opts.Attempts || !retryable(err) || ctx.Err() != nil {
			c.Failures.Add(1)
			return fmt.Errorf("remote %s: %w", c.conn.Target(), err)
		}
		c.Retries.Add(1)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			c.Failures.Add(1)
			return fmt.Errorf("remote %s: %w", c.conn.Target(), ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, c.opts.MaxBackoff)
	}
	if resp.Error != "" {
		c.Failures.Add(1)
		return fmt.Errorf("%w %s: %s", ErrRemote, c.conn.Target(), resp.Error)
	}
	if resp.Image != nil {
		m, err := imageToMat(resp.Image)
		if err != nil {
			c.Failures.Add(1)
			return fmt.Errorf("remote %s: returned image: %w", c.conn.Target(), err)
		}
		out.Image = m
	}
	out.Detections = append(out.Detections, resp.Detections...)
	out.ReplaceDetections = resp.ReplaceDetections
	if len(resp.Values) > 0 {
		if out.Values == nil {
			out.Values = make(map[string]string, len(resp.Values))
		}
		for k, v := range resp.Values {
			out.Values[k] = v
		}
	}
	return nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

var _ processors.Processor = (*Client)(nil)
