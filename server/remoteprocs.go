package server

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/processors/remote"
	pb "github.com/imageflowcanvas/imageflow/proto/processorv1"
	"github.com/imageflowcanvas/imageflow/server/rest"
)

// remoteHealthTimeout bounds each remote's health check when processors are
// listed.
const remoteHealthTimeout = time.Second

// processorInput is the body of POST /api/v1/processors.
type processorInput struct {
	Address string `json:"address"`
}

// processorView is a processor as the API lists it: its spec, and for a
// registered remote its health (grpc.health.v1) checked when listed.
type processorView struct {
	processors.Spec
	Health      string `json:"health,omitempty"`
	HealthError string `json:"health_error,omitempty"`
}

func newRemoteStore(kv jetstream.KeyValue) *kvStore[*pb.InfoResponse] {
	return &kvStore[*pb.InfoResponse]{kv: kv, newT: func() *pb.InfoResponse { return &pb.InfoResponse{} }, noun: "processor"}
}

// remoteKey is a KV key for a host:port (which may hold ':' and '[').
func remoteKey(hostport string) string { return base64.RawURLEncoding.EncodeToString([]byte(hostport)) }

// loadRemotes registers the stored remote processors.
func (s *Server) loadRemotes(ctx context.Context) error {
	keys, err := s.remotes.kv.ListKeys(ctx)
	if err != nil {
		return err
	}
	for k := range keys.Keys() {
		addr, err := base64.RawURLEncoding.DecodeString(k)
		if err != nil {
			continue
		}
		info, _, err := s.remotes.get(ctx, k)
		if err != nil {
			continue
		}
		s.Registry.Register(remote.InfoToSpec(processors.RemotePrefix+string(addr), info))
	}
	return nil
}

func (s *Server) remoteOptions() remote.ClientOptions {
	return remote.ClientOptions{Timeout: 5 * time.Second, Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		return s.sources.hosts.DialContext(ctx, "tcp", addr)
	}}
}

// registerProcessor reads a remote processor's Info and registers it: it
// then shows in the palette and its steps' parameters are validated on save.
func (s *Server) registerProcessor(c *fiber.Ctx) error {
	var in processorInput
	if err := decodeStrict(c.Body(), &in); err != nil {
		return writeError(c, err)
	}
	// The address's form and the deny list, as for a pipeline step.
	addr, err := s.Registry.CheckRemote(in.Address)
	if err != nil {
		return writeError(c, invalidf("address: %v", err))
	}
	info, err := remote.Describe(c.UserContext(), addr, s.remoteOptions())
	if err != nil {
		return writeError(c, fmt.Errorf("%w: %v", rest.ErrInvalid, err))
	}
	key := remoteKey(addr)
	if _, rev, err := s.remotes.get(c.UserContext(), key); err == nil {
		err = s.remotes.update(c.UserContext(), key, info, rev)
		if err != nil {
			return writeError(c, err)
		}
	} else if err := s.remotes.create(c.UserContext(), key, info); err != nil {
		return writeError(c, err)
	}
	spec := remote.InfoToSpec(processors.RemotePrefix+addr, info)
	s.Registry.Register(spec)
	s.Logger.Info("remote processor registered", "address", addr, "name", info.GetName())
	return c.Status(fiber.StatusCreated).JSON(s.viewProcessor(c.UserContext(), spec))
}

// unregisterProcessor forgets a registered remote processor; pipelines that
// use it keep working (their steps are then validated by the remote itself).
func (s *Server) unregisterProcessor(c *fiber.Ctx) error {
	addr, err := processors.ParseRemote(c.Query("address"))
	if err != nil {
		return writeError(c, invalidf("address: %v", err))
	}
	if err := s.remotes.delete(c.UserContext(), remoteKey(addr)); err != nil {
		return writeError(c, err)
	}
	s.Registry.Unregister(processors.RemotePrefix + addr)
	return c.SendStatus(fiber.StatusNoContent)
}

func (s *Server) viewProcessor(ctx context.Context, spec processors.Spec) processorView {
	v := processorView{Spec: spec}
	if !spec.Remote {
		return v
	}
	addr, err := processors.ParseRemote(spec.Name)
	if err != nil {
		return v
	}
	opts := s.remoteOptions()
	opts.Timeout = remoteHealthTimeout
	v.Health, err = remote.CheckHealth(ctx, addr, opts)
	if err != nil {
		v.Health, v.HealthError = "UNREACHABLE", err.Error()
	}
	return v
}

func (s *Server) listProcessors(c *fiber.Ctx) error {
	specs := s.Registry.Specs()
	items := make([]processorView, len(specs))
	var wg sync.WaitGroup
	for i, spec := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			items[i] = s.viewProcessor(c.UserContext(), spec)
		}()
	}
	wg.Wait()
	return c.JSON(fiber.Map{"items": items})
}

func (s *Server) processorRoutes() []route {
	return []route{
		{Method: "GET", Path: "/api/v1/processors", Summary: "List processors and their parameters; registered remote processors with their gRPC health", Handler: s.listProcessors, Response: "ProcessorList", Statuses: []int{200}, Role: rest.RoleViewer},
		{Method: "POST", Path: "/api/v1/processors", Summary: "Register a remote processor (grpc://host:port): the server reads its Info; its steps' parameters are then validated on save", Handler: s.registerProcessor,
			Request: "ProcessorInput", Response: "Processor", Statuses: []int{201, 400}, Role: rest.RoleOperator},
		{Method: "DELETE", Path: "/api/v1/processors", Summary: "Forget a registered remote processor (?address=grpc://host:port)", Handler: s.unregisterProcessor,
			Query: []rest.QueryParam{{Name: "address", Description: "grpc://host:port of the registered processor"}}, Statuses: []int{204, 400, 404}, Role: rest.RoleOperator},
	}
}
