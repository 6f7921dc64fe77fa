package remote

import (
	"context"
	"fmt"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/imageflowcanvas/imageflow/processors"
	pb "github.com/imageflowcanvas/imageflow/proto/processorv1"
)

// Health answers the remote's grpc.health.v1 status for the whole service
// ("SERVING", "NOT_SERVING", ...), or the error of the check.
func (c *Client) Health(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	r, err := healthpb.NewHealthClient(c.conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return "", err
	}
	return r.GetStatus().String(), nil
}

// Describe connects to the Processor service at addr (host:port) and reads
// its Info, for registering it with a server.
func Describe(ctx context.Context, addr string, opts ClientOptions) (*pb.InfoResponse, error) {
	c, err := newClient(addr, opts)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	info, err := c.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("remote %s: Info: %w", addr, err)
	}
	return info, nil
}

// CheckHealth asks the Processor service at addr for its health.
func CheckHealth(ctx context.Context, addr string, opts ClientOptions) (string, error) {
	c, err := newClient(addr, opts)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.Health(ctx)
}

// InfoToSpec is the spec a server validates a remote step's parameters
// against: the remote's Info under name (its grpc://host:port), with no
// factory (the engine builds remote steps itself).
func InfoToSpec(name string, info *pb.InfoResponse) processors.Spec {
	spec := processors.Spec{Name: name, Description: info.GetDescription(), Outputs: info.GetOutputs(), Remote: true}
	if n := info.GetName(); n != "" {
		spec.Description = n + ": " + spec.Description
	}
	for _, p := range info.GetParams() {
		ps := processors.ParamSpec{Name: p.GetName(), Type: processors.ParamType(p.GetType()), Description: p.GetDescription(),
			Required: p.GetRequired(), Min: p.Min, Max: p.Max, Choices: p.GetChoices()}
		if d := p.GetDefault(); d != nil {
			v := d.AsInterface()
			// Ints travel as JSON numbers (float64); defaults keep the type
			// Resolve gives an int parameter.
			if f, ok := v.(float64); ok && ps.Type == processors.ParamInt {
				v = int64(f)
			}
			ps.Default = v
		}
		spec.Params = append(spec.Params, ps)
	}
	return spec
}
