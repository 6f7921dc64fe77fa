package server

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/bus"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// Placement timing. A lease not renewed for leaseTTL (as seen by the other
// nodes, on their own clocks) may be taken over; its owner stops ingesting
// once it could not renew for 2×leaseTTL, so a node cut off from the
// cluster overlaps with the new owner for at most one lease.
const (
	leaseTTL       = 2500 * time.Millisecond
	leaseRenew     = 500 * time.Millisecond
	placementTick  = 250 * time.Millisecond
	nodeHeartbeat  = time.Second
	nodeStaleAfter = 5 * time.Second
	// routeLostTTL replaces leaseTTL for a holder this node has no route
	// to: a killed node's routes close at once, so its lease is given up
	// after two renewal periods instead of the full TTL.
	// The takeover is still the compare-and-set on the revision seen: a
	// holder that is alive and renewing (over another path) keeps it.
	routeLostTTL = 2 * leaseRenew
	// listWaitWithLast bounds a tick's reads of the camera list and the
	// heartbeats when the last ones can stand in for them.
	listWaitWithLast = 600 * time.Millisecond
)

// lease is the value of a camera's key in the leases bucket.
type lease struct {
	Node string `json:"node"`
}

// nodeInfo is a node's heartbeat in the nodes bucket and a row of
// GET /api/v1/nodes.
type nodeInfo struct {
	Node      string    `json:"node"`
	Cameras   int       `json:"cameras"`
	Sessions  int       `json:"sessions"`
	CPU       float64   `json:"cpu"`
	UpdatedAt time.Time `json:"updated_at"`
	Leader    bool      `json:"meta_leader"`
}

// seenLease is the last revision of another node's lease this node read,
// and when (its own clock) it first saw that revision.
// heartbeat is a node's record in the nodes bucket: its API row plus what
// placement alone needs.
type heartbeat struct {
	nodeInfo
	LeadsLeases bool `json:"leads_leases,omitempty"`
}

// load is the node's weight when free cameras are shared: the leader of
// the leases Raft group counts two cameras more, because its death stalls
// every takeover for a Raft election (4-9 s in nats-server).
func (h heartbeat) load() int {
	if h.LeadsLeases {
		return h.Cameras + 2
	}
	return h.Cameras
}

type seenLease struct {
	rev uint64
	at  time.Time
}

// placement decides which cameras this node ingests in a cluster: a lease
// per camera in the leases bucket, taken with Create, renewed and taken
// over with compare-and-set on the revision, so JetStream's Raft log, not
// our code, settles every race.
type placement struct {
	s      *Server
	node   string
	leases jetstream.KeyValue
	nodes  jetstream.KeyValue

	mu    sync.Mutex
	owned map[string]uint64    // camera → revision of our lease
	renew map[string]time.Time // camera → last successful renewal
	seen  map[string]seenLease // camera → another node's lease as last read
	ran   map[string]int64     // camera → UpdatedUnixNano applied locally

	kick   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}

	cpuLast  time.Duration
	cpuAt    time.Time
	lastBeat time.Time

	// lastCams and lastNodes are the latest lists read (tick goroutine only).
	lastCams  []*busv1.Camera
	lastNodes map[string]heartbeat
}

func newPlacement(s *Server) *placement {
	return &placement{s: s, node: s.Config.Node,
		leases: s.bus.KV(bus.BucketLeases), nodes: s.bus.KV(bus.BucketNodes),
		owned: map[string]uint64{}, renew: map[string]time.Time{}, seen: map[string]seenLease{}, ran: map[string]int64{},
		kick: make(chan struct{}, 1), done: make(chan struct{})}
}

// start runs the placement loop until stop.
func (p *placement) start() {
	ctx, cancel := context.WithCancel(p.s.ctx)
	p.cancel = cancel
	go func() {
		defer close(p.done)
		t := time.NewTicker(placementTick)
		defer t.Stop()
		for {
			p.tick(ctx)
			select {
			case <-ctx.Done():
				p.release()
				return
			case <-t.C:
			case <-p.kick:
			}
		}
	}()
}

// changed asks for a placement round now (a camera was created, changed or
// deleted through this node's API).
func (p *placement) changed() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (p *placement) stop() {
	if p.cancel != nil {
		p.cancel()
		<-p.done
	}
}

// release hands this node's leases back on a clean shutdown, so the other
// nodes take its cameras at once instead of after the lease.
func (p *placement) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	p.mu.Lock()
	defer p.mu.Unlock()
	for cam, rev := range p.owned {
		p.s.super.remove(cam)
		_ = p.leases.Delete(ctx, cam, jetstream.LastRevision(rev))
	}
	_ = p.nodes.Delete(ctx, p.node)
}

// tick is one placement round: renew, give up, take over, apply.
func (p *placement) tick(parent context.Context) {
	now := time.Now()
	// Listing keys needs the bucket's Raft leader; while a dead leader is
	// being replaced (4-9 s) the last lists stand in, so a takeover, which
	// only needs the leases bucket, is not held up by the other buckets.
	// Once there are last lists, a read waits only briefly: a tick held
	// up for seconds would delay the takeover it exists for.
	wait := 2 * time.Second
	if p.lastCams != nil {
		wait = listWaitWithLast
	}
	lctx, lcancel := context.WithTimeout(parent, wait)
	cams, err := p.s.cameras.list(lctx)
	lcancel()
	if err != nil {
		if p.lastCams == nil {
			p.expire(now)
			return
		}
		cams = p.lastCams
	} else {
		p.lastCams = cams
	}
	lctx, lcancel = context.WithTimeout(parent, wait)
	nodes, err := p.liveNodes(lctx, now)
	lcancel()
	if err != nil {
		nodes = p.lastNodes
	} else {
		p.lastNodes = nodes
	}
	ctx, cancel := context.WithTimeout(parent, 2*time.Second)
	defer cancel()
	p.mu.Lock()
	defer p.mu.Unlock()
	want := make(map[string]bool, len(cams))
	for _, cam := range cams {
		want[cam.Id] = true
		p.place(ctx, cam, nodes, now)
	}
	// Deleted cameras: stop and free what we held.
	for cam, rev := range p.owned {
		if !want[cam] {
			p.drop(cam)
			_ = p.leases.Delete(ctx, cam, jetstream.LastRevision(rev))
		}
	}
	for cam := range p.seen {
		if !want[cam] {
			delete(p.seen, cam)
		}
	}
	if now.Sub(p.lastBeat) >= nodeHeartbeat {
		p.lastBeat = now
		p.heartbeat(ctx, now)
	}
}

// place runs one camera's lease logic.
func (p *placement) place(ctx context.Context, cam *busv1.Camera, nodes map[string]heartbeat, now time.Time) {
	id := cam.Id
	if !cam.Enabled || (cam.Node != "" && cam.Node != p.node) {
		if rev, ok := p.owned[id]; ok {
			p.drop(id)
			_ = p.leases.Delete(ctx, id, jetstream.LastRevision(rev))
		}
		return
	}
	if rev, ok := p.owned[id]; ok {
		if now.Sub(p.renew[id]) >= leaseRenew {
			p.renewLease(ctx, id, rev, now)
		}
		if _, still := p.owned[id]; still && p.ran[id] != cam.UpdatedUnixNano {
			p.ran[id] = cam.UpdatedUnixNano
			p.s.super.apply(cam)
		}
		return
	}
	val, _ := json.Marshal(lease{Node: p.node})
	e, err := p.leases.Get(ctx, id)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		if !p.shouldClaim(cam, nodes) {
			return
		}
		rev, err := p.leases.Create(ctx, id, val)
		if err == nil {
			p.take(cam, rev, now, "free")
		}
	case err != nil:
		// The bucket does not answer (leader election, no quorum): the
		// staleness clock only runs while reads succeed.
		delete(p.seen, id)
	default:
		var l lease
		_ = json.Unmarshal(e.Value(), &l)
		if l.Node == p.node {
			// Ours from before a restart: carry on under the same name.
			if rev, err := p.leases.Update(ctx, id, val, e.Revision()); err == nil {
				p.take(cam, rev, now, "restart")
			}
			return
		}
		s, ok := p.seen[id]
		if !ok || s.rev != e.Revision() {
			p.seen[id] = seenLease{rev: e.Revision(), at: now}
			return
		}
		allowed := p.silenceAllowed(l.Node)
		if now.Sub(s.at) < allowed || !p.shouldClaim(cam, nodes) {
			return
		}
		if rev, err := p.leases.Update(ctx, id, val, e.Revision()); err == nil {
			p.s.Logger.Info("camera taken over", "camera", id, "from", l.Node, "node", p.node,
				"silent", now.Sub(s.at).Round(time.Millisecond), "allowed", allowed)
			p.take(cam, rev, now, "takeover")
		}
	}
}

// shouldClaim spreads free cameras: a pinned camera goes to its node, any
// other to a least-loaded live node (ties are settled by the lease's CAS).
// silenceAllowed is how long another node's lease may keep one revision
// before this node claims the camera: leaseTTL, or routeLostTTL when no
// route to the holder is connected (it died or is cut off from us).
func (p *placement) silenceAllowed(holder string) time.Duration {
	if routed := p.s.bus.RoutedNodes(); routed != nil && !routed[holder] {
		return routeLostTTL
	}
	return leaseTTL
}

func (p *placement) shouldClaim(cam *busv1.Camera, nodes map[string]heartbeat) bool {
	if cam.Node != "" {
		return cam.Node == p.node
	}
	mine := heartbeat{nodeInfo: nodeInfo{Cameras: len(p.owned)}, LeadsLeases: p.s.bus.LeadsLeases()}.load()
	// A node this one has no route to is not counted: a dead node's last
	// heartbeat stays for nodeStaleAfter and would hold every claim back.
	routed := p.s.bus.RoutedNodes()
	for name, n := range nodes {
		if routed != nil && !routed[name] {
			continue
		}
		if name != p.node && n.load() < mine {
			return false
		}
	}
	return true
}

func (p *placement) take(cam *busv1.Camera, rev uint64, now time.Time, why string) {
	p.owned[cam.Id] = rev
	p.renew[cam.Id] = now
	delete(p.seen, cam.Id)
	p.ran[cam.Id] = cam.UpdatedUnixNano
	p.s.Logger.Info("camera placed here", "camera", cam.Id, "node", p.node, "why", why)
	p.s.super.apply(cam)
}

func (p *placement) renewLease(ctx context.Context, id string, rev uint64, now time.Time) {
	val, _ := json.Marshal(lease{Node: p.node})
	newRev, err := p.leases.Update(ctx, id, val, rev)
	switch {
	case err == nil:
		p.owned[id] = newRev
		p.renew[id] = now
	case errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyNotFound) || isWrongSequence(err):
		// Another node holds it now.
		p.s.Logger.Warn("camera lease lost", "camera", id, "node", p.node)
		p.drop(id)
	default:
		if now.Sub(p.renew[id]) >= 2*leaseTTL {
			p.s.Logger.Warn("camera lease not renewed in time, stopping", "camera", id, "error", err)
			p.drop(id)
		}
	}
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// expire stops the cameras whose leases could not be renewed for 2×TTL
// while the camera list itself was unreadable.
func (p *placement) expire(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id := range p.owned {
		if now.Sub(p.renew[id]) >= 2*leaseTTL {
			p.s.Logger.Warn("camera lease not renewed in time, stopping", "camera", id)
			p.drop(id)
		}
	}
}

func (p *placement) drop(id string) {
	delete(p.owned, id)
	delete(p.renew, id)
	delete(p.ran, id)
	p.s.super.remove(id)
}

// liveNodes reads the heartbeats younger than nodeStaleAfter.
func (p *placement) liveNodes(ctx context.Context, now time.Time) (map[string]heartbeat, error) {
	out := map[string]heartbeat{}
	keys, err := p.nodes.ListKeys(ctx)
	if err != nil {
		return out, err
	}
	for k := range keys.Keys() {
		e, err := p.nodes.Get(ctx, k)
		if err != nil {
			continue
		}
		var n heartbeat
		if json.Unmarshal(e.Value(), &n) != nil || now.Sub(e.Created()) > nodeStaleAfter {
			continue
		}
		out[n.Node] = n
	}
	// Stop after the list ended reports the closed subscription: no error.
	_ = keys.Stop()
	return out, nil
}

func (p *placement) heartbeat(ctx context.Context, now time.Time) {
	b, _ := json.Marshal(heartbeat{nodeInfo: p.s.localNode(len(p.owned), p.cpu(now)), LeadsLeases: p.s.bus.LeadsLeases()})
	_, _ = p.nodes.Put(ctx, p.node, b)
}

// cpu is this process's CPU use since the last heartbeat, in cores.
func (p *placement) cpu(now time.Time) float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	used := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	var v float64
	if !p.cpuAt.IsZero() {
		v = (used - p.cpuLast).Seconds() / now.Sub(p.cpuAt).Seconds()
	}
	p.cpuLast, p.cpuAt = used, now
	return v
}

// owner names the node holding a camera's lease ("" when none).
func (p *placement) owner(ctx context.Context, id string) string {
	e, err := p.leases.Get(ctx, id)
	if err != nil {
		return ""
	}
	var l lease
	_ = json.Unmarshal(e.Value(), &l)
	return l.Node
}

// list returns the live nodes, sorted by name.
func (p *placement) list(ctx context.Context) []nodeInfo {
	m, _ := p.liveNodes(ctx, time.Now())
	out := make([]nodeInfo, 0, len(m))
	for _, n := range m {
		out = append(out, n.nodeInfo)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// localNode is this node's row of GET /api/v1/nodes.
func (s *Server) localNode(cameras int, cpu float64) nodeInfo {
	sessions := 0
	if s.webrtc != nil {
		sessions = s.webrtc.Sessions()
	}
	return nodeInfo{Node: s.Config.Node, Cameras: cameras, Sessions: sessions, CPU: cpu,
		UpdatedAt: time.Now().UTC(), Leader: s.bus.MetaLeader() == s.bus.ServerName()}
}

// cameraChanged starts, restarts or stops a camera after its configuration
// changed through the API: here at once when alone, wherever its lease
// lands in a cluster.
func (s *Server) cameraChanged(cam *busv1.Camera) {
	if s.placement != nil {
		s.placement.changed()
		return
	}
	s.super.apply(cam)
}

// cameraOwner names the node ingesting a camera: this node when alone and
// the camera is enabled, the lease holder in a cluster.
func (s *Server) cameraOwner(cam *busv1.Camera) string {
	if s.placement == nil {
		if cam.Enabled {
			return s.Config.Node
		}
		return ""
	}
	ctx, cancel := context.WithTimeout(s.ctx, 2*time.Second)
	defer cancel()
	return s.placement.owner(ctx, cam.Id)
}

func (s *Server) listNodes(c *fiber.Ctx) error {
	if s.placement == nil {
		cams := 0
		if list, err := s.cameras.list(c.UserContext()); err == nil {
			for _, cam := range list {
				if cam.Enabled {
					cams++
				}
			}
		}
		return c.JSON(fiber.Map{"items": []nodeInfo{s.localNode(cams, 0)}})
	}
	return c.JSON(fiber.Map{"items": s.placement.list(c.UserContext())})
}

// remoteStatus is the live state of a camera another node ingests: the last
// state change it published on the STATUS stream (nil when none).
func (s *Server) remoteStatus(id string) *busv1.CameraStatus {
	ctx, cancel := context.WithTimeout(s.ctx, 2*time.Second)
	defer cancel()
	stream, err := s.bus.JetStream().Stream(ctx, "STATUS")
	if err != nil {
		return nil
	}
	msg, err := stream.GetLastMsgForSubject(ctx, s.bus.Subjects().Status(id))
	if err != nil {
		return nil
	}
	var ev busv1.CameraEvent
	if proto.Unmarshal(msg.Data, &ev) != nil {
		return nil
	}
	return ev.Status
}
