package server

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/bus"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// Placement timing. A lease not renewed for leaseTTL (as seen by the other
// nodes, on their own clocks) may be taken over, after routeLostTTL when
// the holder's route is gone. An owner cut off from the leases Raft group's
// majority stops ingesting once no renewal it started in ownerStopAfter
// succeeded, so it overlaps with a new owner for at most one lease.
const (
	leaseTTL      = 2500 * time.Millisecond
	leaseRenew    = 500 * time.Millisecond
	placementTick = 250 * time.Millisecond
	// renewCheck is how often the renewal loop looks for due leases, and
	// so how soon a failed renewal is tried again.
	renewCheck = 100 * time.Millisecond
	// renewTimeout bounds one renewal: a write waiting for a Raft leader
	// is abandoned and tried again rather than left hanging.
	renewTimeout   = time.Second
	nodeHeartbeat  = time.Second
	nodeStaleAfter = 5 * time.Second
	// routeLostTTL replaces leaseTTL for a holder this node has no route
	// to: a killed node's routes close at once, so its lease is given up
	// after two renewal periods instead of the full TTL.
	// The takeover is still the compare-and-set on the revision seen: a
	// holder that is alive and renewing (over another path) keeps it.
	routeLostTTL = 2 * leaseRenew
	// ownerStopAfter is how long an owner without routes to a majority of
	// the leases group keeps ingesting without a successful renewal: the
	// earliest takeover comes routeLostTTL after its last write, so the
	// overlap is at most leaseTTL.
	ownerStopAfter = leaseTTL + routeLostTTL
	// leaseRead bounds one read of a lease: a direct get answered by no
	// replica (a frozen node's) is asked again next tick.
	leaseRead = 500 * time.Millisecond
	// listWait bounds one read of the camera list or the heartbeats;
	// meanwhile placement goes on with the last ones read.
	listWait = 2 * time.Second
	// rebalanceEvery is the least time between two cameras a node hands
	// away to even the load, and the least time it holds a camera before
	// it may hand it away (cameras do not flap).
	rebalanceEvery = 10 * time.Second
	// rebalanceMargin is how much more loaded than the least-loaded node
	// that could take a camera a node must be to hand one away: moving
	// one camera then narrows the gap without inverting it.
	rebalanceMargin = 2
	// stepdownEvery spaces this node's requests to hand the leases
	// group's leadership to a node without cameras.
	stepdownEvery = 30 * time.Second
	// peersEvery is how often the leases group's members are read.
	peersEvery = 5 * time.Second
)

// lease is the value of a camera's key in the leases bucket.
type lease struct {
	Node string `json:"node"`
}

// nodeInfo is a node's heartbeat in the nodes bucket and a row of
// GET /api/v1/nodes.
type nodeInfo struct {
	Node string `json:"node"`
	// Role is roleServe or roleWorker; cameras are placed on serving nodes
	// only.
	Role      string    `json:"role"`
	Cameras   int       `json:"cameras"`
	Sessions  int       `json:"sessions"`
	CPU       float64   `json:"cpu"`
	UpdatedAt time.Time `json:"updated_at"`
	Leader    bool      `json:"meta_leader"`
	Labels    []string  `json:"labels,omitempty"`
}

// Roles of nodes in GET /api/v1/nodes.
const (
	// roleServe is an `imageflow serve` node: cameras, API, processors.
	roleServe = "serve"
	// roleWorker is an `imageflow worker`: processors only, never a camera.
	roleWorker = "worker"
)

// heartbeat is a node's record in the nodes bucket: its API row plus what
// placement alone needs.
type heartbeat struct {
	nodeInfo
	LeadsLeases bool `json:"leads_leases,omitempty"`
	// Shedding: the node has a camera it would hand away to even the load.
	// Of the nodes shedding only the most loaded hands one away, so two do
	// not hand cameras to the same least-loaded node at once.
	Shedding bool `json:"shedding,omitempty"`
}

// load is the node's weight when cameras are shared: the leader of the
// leases Raft group counts two cameras more, because its death stalls
// every takeover for a Raft election (4-9 s in nats-server).
func (h heartbeat) load() int {
	if h.LeadsLeases {
		return h.Cameras + 2
	}
	return h.Cameras
}

// seenLease is the last revision of another node's lease this node read,
// and when (its own clock) it first saw that revision.
type seenLease struct {
	rev uint64
	at  time.Time
}

// ownedLease is a lease this node holds.
type ownedLease struct {
	rev uint64
	// renewed is when the last successful renewal (or the claim) was
	// started: the write happened after it, so expiry counted from here
	// is on the safe side.
	renewed time.Time
	// since is when this node took the camera (rebalancing hysteresis).
	since time.Time
	// ran is the camera's UpdatedUnixNano last handed to the starter.
	ran    int64
	pinned bool
}

// placement decides which cameras this node ingests in a cluster: a lease
// per camera in the leases bucket, taken with Create, renewed and taken
// over with compare-and-set on the revision, so JetStream's Raft log, not
// our code, settles every race.
//
// Four loops share the work so that none holds another up: the reader
// reads the camera list and the heartbeats (their buckets' Raft leaders
// may be electing for seconds), the tick claims and releases leases from
// the last lists read, the renewal loop keeps the held leases alive (a
// camera's start must not let a fresh lease lapse), and the starter starts
// and stops the cameras' ingest. A fifth goroutine watches the pipelines
// bucket and restarts the held cameras whose pipeline changed.
type placement struct {
	s      *Server
	node   string
	leases jetstream.KeyValue
	nodes  jetstream.KeyValue

	mu    sync.Mutex
	owned map[string]*ownedLease // camera → our lease
	seen  map[string]seenLease   // camera → another node's lease as last read
	// peers are the members of the leases Raft group, as last read.
	peers []string
	// lastCams and lastNodes are the latest lists the reader read;
	// nodesAt is when the heartbeats were last read.
	lastCams  []*busv1.Camera
	lastNodes map[string]heartbeat
	nodesAt   time.Time

	starter *starter

	kick   chan struct{} // wakes the reader
	listed chan struct{} // wakes the tick
	cancel context.CancelFunc
	done   sync.WaitGroup

	// lastRenewLoop is the renewal loop's last round (its goroutine only).
	lastRenewLoop time.Time
	// Reader goroutine only.
	cpu       cpuMeter
	lastBeat  time.Time
	lastPeers time.Time
	// shedding is published in the heartbeat (set by the tick goroutine).
	shedding atomic.Bool
	// Tick goroutine only.
	lastRebalance time.Time
	lastStepdown  time.Time
	// noLeaderAt is the last tick at which the leases group had no leader
	// this node heard from: silence before it does not count.
	noLeaderAt time.Time
}

func newPlacement(s *Server) *placement {
	return &placement{s: s, node: s.Config.Node,
		leases: s.bus.KV(bus.BucketLeases), nodes: s.bus.KV(bus.BucketNodes),
		owned: map[string]*ownedLease{}, seen: map[string]seenLease{},
		starter: newStarter(s.super), kick: make(chan struct{}, 1), listed: make(chan struct{}, 1)}
}

// start runs the placement loops until stop.
func (p *placement) start() {
	ctx, cancel := context.WithCancel(p.s.ctx)
	p.cancel = cancel
	// A node starting up waits one rebalancing period before it hands
	// cameras away: the heartbeats it compares with must settle first.
	p.lastRebalance = time.Now()
	p.done.Add(5)
	go func() {
		defer p.done.Done()
		p.watchPipelines(ctx)
	}()
	go func() {
		defer p.done.Done()
		t := time.NewTicker(placementTick)
		defer t.Stop()
		for {
			p.read(ctx)
			select {
			case p.listed <- struct{}{}:
			default:
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-p.kick:
			}
		}
	}()
	go func() {
		defer p.done.Done()
		p.starter.run(ctx)
	}()
	go func() {
		defer p.done.Done()
		t := time.NewTicker(renewCheck)
		defer t.Stop()
		for {
			p.renewDue(ctx, time.Now())
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	go func() {
		defer p.done.Done()
		// A round after each read, or placementTick after the last round
		// while the reader waits for a bucket.
		t := time.NewTimer(placementTick)
		defer t.Stop()
		for {
			p.tick(ctx)
			t.Reset(placementTick)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-p.listed:
			}
		}
	}()
}

// read refreshes the camera list and the heartbeats; a read that fails
// (a bucket electing its leader) leaves the last ones in place.
func (p *placement) read(parent context.Context) {
	ctx, cancel := context.WithTimeout(parent, listWait)
	cams, err := p.s.cameras.list(ctx)
	cancel()
	if err == nil {
		p.mu.Lock()
		p.lastCams = cams
		p.mu.Unlock()
	}
	now := time.Now()
	ctx, cancel = context.WithTimeout(parent, listWait)
	nodes, err := p.liveNodes(ctx, now, false)
	cancel()
	if err == nil {
		p.mu.Lock()
		p.lastNodes, p.nodesAt = nodes, now
		p.mu.Unlock()
	}
	// Writes to the nodes bucket and reads of the leases group's members
	// may wait for a Raft leader too: here they hold up no claim.
	ctx, cancel = context.WithTimeout(parent, listWait)
	defer cancel()
	if now.Sub(p.lastBeat) >= nodeHeartbeat {
		p.lastBeat = now
		p.heartbeat(ctx, now)
	}
	if now.Sub(p.lastPeers) >= peersEvery {
		p.lastPeers = now
		p.readPeers(ctx)
	}
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
		p.done.Wait()
		p.release()
	}
}

// release hands this node's leases back on a clean shutdown, so the other
// nodes take its cameras at once instead of after the lease.
func (p *placement) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	p.mu.Lock()
	owned := p.owned
	p.owned = map[string]*ownedLease{}
	p.mu.Unlock()
	for cam, l := range owned {
		p.s.super.remove(cam)
		_ = p.leases.Delete(ctx, cam, jetstream.LastRevision(l.rev))
	}
	_ = p.nodes.Delete(ctx, p.node)
}

// tick is one placement round: claim, take over, release, rebalance.
func (p *placement) tick(parent context.Context) {
	now := time.Now()
	// Listing keys needs the bucket's Raft leader, which a dead node may
	// have been: the reader's last lists stand in meanwhile, so a
	// takeover, which only needs the leases bucket, is not held up.
	p.mu.Lock()
	cams, nodes, nodesAt := p.lastCams, p.lastNodes, p.nodesAt
	p.mu.Unlock()
	if cams == nil {
		return
	}
	fresh := now.Sub(nodesAt) < 2*nodeHeartbeat
	if !p.s.bus.LeasesCurrent() {
		p.noLeaderAt = now
	}
	ctx, cancel := context.WithTimeout(parent, 2*time.Second)
	defer cancel()
	want := make(map[string]*busv1.Camera, len(cams))
	for _, cam := range cams {
		want[cam.Id] = cam
		p.place(ctx, cam, nodes, now)
	}
	// Deleted cameras: stop and free what we held.
	p.mu.Lock()
	var gone []string
	for cam := range p.owned {
		if want[cam] == nil {
			gone = append(gone, cam)
		}
	}
	for cam := range p.seen {
		if want[cam] == nil {
			delete(p.seen, cam)
		}
	}
	p.mu.Unlock()
	for _, cam := range gone {
		p.giveUp(ctx, cam)
	}
	if fresh {
		p.rebalance(ctx, want, nodes, now)
		p.stepDownIfOwner(ctx, nodes, now)
	}
}

// place runs one camera's claim logic; renewing is the renewal loop's.
func (p *placement) place(ctx context.Context, cam *busv1.Camera, nodes map[string]heartbeat, now time.Time) {
	id := cam.Id
	p.mu.Lock()
	held := p.owned[id]
	restart := held != nil && held.ran != cam.UpdatedUnixNano
	if restart {
		held.ran = cam.UpdatedUnixNano
		held.pinned = cam.Node != ""
	}
	p.mu.Unlock()
	if !cam.Enabled || !mayRun(cam, p.node, p.s.Config.NodeLabels) {
		if held != nil {
			p.giveUp(ctx, id)
		}
		return
	}
	if held != nil {
		if restart {
			p.starter.start(cam)
		}
		return
	}
	val, _ := json.Marshal(lease{Node: p.node})
	gctx, gcancel := context.WithTimeout(ctx, leaseRead)
	e, err := p.leases.Get(gctx, id)
	gcancel()
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
		// No answer (a frozen replica took the direct get, or no quorum):
		// the revision seen and its clock stay as they are. A claim is a
		// compare-and-set on that revision, which a renewal since defeats.
	default:
		var l lease
		_ = json.Unmarshal(e.Value(), &l)
		if l.Node == p.node {
			// Ours from before a restart, or handed to us by a loaded
			// node: carry on under the same name.
			if rev, err := p.leases.Update(ctx, id, val, e.Revision()); err == nil {
				p.take(cam, rev, now, "named here")
			}
			return
		}
		p.mu.Lock()
		s, ok := p.seen[id]
		if !ok || s.rev != e.Revision() {
			p.seen[id] = seenLease{rev: e.Revision(), at: now}
		}
		p.mu.Unlock()
		if !ok || s.rev != e.Revision() {
			return
		}
		allowed := p.silenceAllowed(l.Node)
		from := s.at
		if allowed == leaseTTL && p.noLeaderAt.After(from) {
			// The holder could not renew while the leases group had no
			// leader either: its silence counts from the group's return.
			// A holder without a route is not waited for (it is dead or
			// cut off from us; the compare-and-set settles the rest).
			from = p.noLeaderAt
		}
		if now.Sub(from) < allowed || !p.shouldClaim(cam, nodes) {
			return
		}
		if rev, err := p.leases.Update(ctx, id, val, e.Revision()); err == nil {
			p.s.Logger.Info("camera taken over", "camera", id, "from", l.Node, "node", p.node,
				"silent", now.Sub(s.at).Round(time.Millisecond), "counted", now.Sub(from).Round(time.Millisecond), "allowed", allowed)
			p.take(cam, rev, now, "takeover")
		}
	}
}

// silenceAllowed is how long another node's lease may keep one revision
// before this node claims the camera: leaseTTL, or routeLostTTL when no
// route to the holder is connected (it died or is cut off from us).
func (p *placement) silenceAllowed(holder string) time.Duration {
	if routed := p.s.bus.RoutedNodes(); routed != nil && !routed[holder] {
		return routeLostTTL
	}
	return leaseTTL
}

// mayRun reports whether a node with these labels may ingest a camera:
// its pinned node, or any node when it is not pinned, and only a node
// carrying every label the camera asks for.
func mayRun(cam *busv1.Camera, node string, labels []string) bool {
	if cam.Node != "" && cam.Node != node {
		return false
	}
	for _, want := range cam.Labels {
		if !slices.Contains(labels, want) {
			return false
		}
	}
	return true
}

// checkLabels validates a list of labels (camera labels, node_labels):
// tokens, no duplicates, at most 16; sorted.
func checkLabels(field string, labels []string) ([]string, error) {
	if len(labels) > 16 {
		return nil, invalidf("%s: %d labels, at most 16", field, len(labels))
	}
	out := slices.Clone(labels)
	for _, l := range out {
		if err := bus.ValidateToken(l); err != nil {
			return nil, invalidf("%s: label %q: %v", field, l, err)
		}
	}
	slices.Sort(out)
	if len(slices.Compact(slices.Clone(out))) != len(out) {
		return nil, invalidf("%s: a label is listed twice", field)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// myLoad is this node's load as the others will see it in its heartbeat.
func (p *placement) myLoad() int {
	p.mu.Lock()
	n := len(p.owned)
	p.mu.Unlock()
	return heartbeat{nodeInfo: nodeInfo{Cameras: n}, LeadsLeases: p.s.bus.LeadsLeases()}.load()
}

// leastLoad is the lowest load among the other live nodes this node has a
// route to that may run cam (ok false when there is none). A node without
// a route is not counted: a dead node's last heartbeat stays for
// nodeStaleAfter and would hold every claim back.
func (p *placement) leastLoad(cam *busv1.Camera, nodes map[string]heartbeat) (least int, ok bool) {
	n, ok := p.leastLoaded(cam, nodes)
	return n.load(), ok
}

// leastLoaded is the heartbeat behind leastLoad.
func (p *placement) leastLoaded(cam *busv1.Camera, nodes map[string]heartbeat) (least heartbeat, ok bool) {
	routed := p.s.bus.RoutedNodes()
	for name, n := range nodes {
		if name == p.node || (routed != nil && !routed[name]) || !mayRun(cam, name, n.Labels) {
			continue
		}
		if !ok || n.load() < least.load() {
			least, ok = n, true
		}
	}
	return least, ok
}

// shouldClaim spreads free cameras: a pinned camera goes to its node, any
// other to a least-loaded live node (ties are settled by the lease's CAS).
func (p *placement) shouldClaim(cam *busv1.Camera, nodes map[string]heartbeat) bool {
	if !mayRun(cam, p.node, p.s.Config.NodeLabels) {
		return false
	}
	if cam.Node != "" {
		return true
	}
	least, ok := p.leastLoad(cam, nodes)
	return !ok || least >= p.myLoad()
}

// rebalance hands one camera away when this node carries rebalanceMargin
// more than a node that could take it: the camera is stopped here, then
// its lease deleted, and the least-loaded node claims it as a free camera.
// At most one camera per rebalanceEvery, never a pinned camera, never one
// held for less than rebalanceEvery, and only by the most loaded of the
// nodes that would hand one away (see heartbeat.Shedding): two nodes that
// each handed a camera to the same least-loaded node made it the most
// loaded, and a camera moved twice.
func (p *placement) rebalance(ctx context.Context, cams map[string]*busv1.Camera, nodes map[string]heartbeat, now time.Time) {
	mine := p.myLoad()
	p.mu.Lock()
	held := len(p.owned)
	var candidates []string
	for id, l := range p.owned {
		if !l.pinned && now.Sub(l.since) >= rebalanceEvery && cams[id] != nil {
			candidates = append(candidates, id)
		}
	}
	p.mu.Unlock()
	sort.Strings(candidates)
	for _, id := range candidates {
		// The other node must also hold fewer cameras: the leases group's
		// leadership moving (nats-server may move it at any time) must not
		// by itself move cameras back and forth.
		n, ok := p.leastLoaded(cams[id], nodes)
		if !ok || mine-n.load() < rebalanceMargin || held <= n.Cameras {
			continue
		}
		p.shedding.Store(true)
		if now.Sub(p.lastRebalance) < rebalanceEvery || !p.turnToShed(nodes, mine) {
			return
		}
		p.lastRebalance = now
		p.s.Logger.Info("camera handed away to even the load", "camera", id, "node", p.node, "load", mine, "to", n.Node, "least", n.load())
		p.handOver(ctx, id, n.Node)
		return
	}
	p.shedding.Store(false)
}

// turnToShed reports whether no other live node that would hand a camera
// away carries more than this node's load (at equal load the lower name
// goes first).
func (p *placement) turnToShed(nodes map[string]heartbeat, mine int) bool {
	routed := p.s.bus.RoutedNodes()
	for name, n := range nodes {
		if name == p.node || !n.Shedding || (routed != nil && !routed[name]) {
			continue
		}
		if n.load() > mine || (n.load() == mine && name < p.node) {
			return false
		}
	}
	return true
}

// stepDownIfOwner asks the leases Raft group to elect another leader when
// this node leads it and holds cameras while a live node holds none: the
// death of a node that both ingests and leads the leases group costs a
// Raft election (4-9 s) before its cameras can be taken over.
func (p *placement) stepDownIfOwner(ctx context.Context, nodes map[string]heartbeat, now time.Time) {
	if now.Sub(p.lastStepdown) < stepdownEvery || !p.s.bus.LeadsLeases() {
		return
	}
	p.mu.Lock()
	held := len(p.owned)
	peers := p.peers
	p.mu.Unlock()
	if held == 0 {
		return
	}
	routed := p.s.bus.RoutedNodes()
	var idle []string
	for _, name := range peers {
		if n, ok := nodes[name]; ok && name != p.node && routed[name] && n.Cameras == 0 {
			idle = append(idle, name)
		}
	}
	if len(idle) == 0 {
		return
	}
	sort.Strings(idle)
	p.lastStepdown = now
	req, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": idle[0]}})
	_, err := p.s.bus.Conn().RequestWithContext(ctx, "$JS.API.STREAM.LEADER.STEPDOWN.KV_"+bus.BucketLeases, req)
	p.s.Logger.Info("leases group leadership handed to a node without cameras", "node", p.node, "to", idle[0], "error", err)
}

// readPeers reads the members of the leases Raft group.
func (p *placement) readPeers(ctx context.Context) {
	st, err := p.s.bus.JetStream().Stream(ctx, "KV_"+bus.BucketLeases)
	if err != nil {
		return
	}
	info := st.CachedInfo()
	if info.Cluster == nil {
		return
	}
	peers := []string{}
	if info.Cluster.Leader != "" {
		peers = append(peers, info.Cluster.Leader)
	}
	for _, r := range info.Cluster.Replicas {
		peers = append(peers, r.Name)
	}
	p.mu.Lock()
	p.peers = peers
	p.mu.Unlock()
}

// reachesQuorum reports whether this node has routes to a majority of the
// leases Raft group (counting itself when a member). Such a node's lease
// cannot be taken over without its renewal being refused, so it keeps
// ingesting while the group elects a leader; a node that is cut off stops.
func (p *placement) reachesQuorum() bool {
	routed := p.s.bus.RoutedNodes()
	if routed == nil {
		return false
	}
	p.mu.Lock()
	peers := p.peers
	p.mu.Unlock()
	if len(peers) == 0 {
		return false
	}
	reach := 0
	for _, name := range peers {
		if name == p.node || routed[name] {
			reach++
		}
	}
	return reach > len(peers)/2
}

func (p *placement) take(cam *busv1.Camera, rev uint64, now time.Time, why string) {
	p.mu.Lock()
	p.owned[cam.Id] = &ownedLease{rev: rev, renewed: now, since: now, ran: cam.UpdatedUnixNano, pinned: cam.Node != ""}
	delete(p.seen, cam.Id)
	p.mu.Unlock()
	p.s.Logger.Info("camera placed here", "camera", cam.Id, "node", p.node, "why", why)
	p.starter.start(cam)
}

// giveUp stops a camera held here and deletes its lease, so another node
// may claim it at once.
func (p *placement) giveUp(ctx context.Context, id string) {
	p.mu.Lock()
	l := p.owned[id]
	delete(p.owned, id)
	p.mu.Unlock()
	if l == nil {
		return
	}
	p.starter.stopNow(id)
	_ = p.leases.Delete(ctx, id, jetstream.LastRevision(l.rev))
}

// handOver stops a camera held here and writes its lease in another
// node's name (compare-and-set on our revision): that node finds a lease
// naming it and takes it at once, and should it not, the others take it
// over after the usual silence. Deleting the lease instead would let any
// node race the intended one to claim the free camera.
func (p *placement) handOver(ctx context.Context, id, to string) {
	p.mu.Lock()
	l := p.owned[id]
	delete(p.owned, id)
	p.mu.Unlock()
	if l == nil {
		return
	}
	p.starter.stopNow(id)
	val, _ := json.Marshal(lease{Node: to})
	if _, err := p.leases.Update(ctx, id, val, l.rev); err != nil {
		_ = p.leases.Delete(ctx, id, jetstream.LastRevision(l.rev))
	}
}

// renewDue renews every held lease whose last renewal is leaseRenew old,
// all at once, and stops the cameras whose lease is lost or expired.
func (p *placement) renewDue(parent context.Context, now time.Time) {
	type due struct {
		id  string
		rev uint64
	}
	var todo []due
	var expired []string
	quorum := p.reachesQuorum()
	// A loop that did not run for a lease was stalled itself (a frozen
	// process, a stalled VM): others may have taken its cameras meanwhile,
	// so it stops them at once instead of waiting for a refused renewal;
	// the tick takes back those whose lease still names this node.
	stalled := !p.lastRenewLoop.IsZero() && now.Sub(p.lastRenewLoop) >= leaseTTL
	p.lastRenewLoop = now
	p.mu.Lock()
	for id, l := range p.owned {
		switch {
		case stalled && now.Sub(l.renewed) >= leaseTTL,
			now.Sub(l.renewed) >= ownerStopAfter && !quorum:
			expired = append(expired, id)
			delete(p.owned, id)
		case now.Sub(l.renewed) >= leaseRenew:
			todo = append(todo, due{id, l.rev})
		}
	}
	p.mu.Unlock()
	for _, id := range expired {
		p.s.Logger.Warn("camera lease not renewed in time, stopping", "camera", id, "node", p.node, "stalled", stalled, "quorum", quorum)
		p.starter.stopNow(id)
	}
	if len(todo) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(parent, renewTimeout)
	defer cancel()
	val, _ := json.Marshal(lease{Node: p.node})
	var wg sync.WaitGroup
	for _, d := range todo {
		wg.Add(1)
		go func() {
			defer wg.Done()
			newRev, err := p.leases.Update(ctx, d.id, val, d.rev)
			p.renewed(ctx, d.id, d.rev, newRev, now, err)
		}()
	}
	wg.Wait()
}

// renewed records one renewal's outcome.
func (p *placement) renewed(ctx context.Context, id string, oldRev, newRev uint64, started time.Time, err error) {
	p.mu.Lock()
	l := p.owned[id]
	current := l != nil && l.rev == oldRev
	switch {
	case err == nil && current:
		l.rev, l.renewed = newRev, started
	case err == nil:
		// Given up while the renewal was under way: free it again.
		p.mu.Unlock()
		_ = p.leases.Delete(ctx, id, jetstream.LastRevision(newRev))
		return
	case current && (errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyNotFound) || isWrongSequence(err)):
		p.mu.Unlock()
		// A renewal that timed out may have been written after all: the
		// lease still names this node at a newer revision. Carry on with
		// it (nobody else writes our name) rather than stop and restart.
		gctx, gcancel := context.WithTimeout(context.WithoutCancel(ctx), leaseRead)
		e, gerr := p.leases.Get(gctx, id)
		gcancel()
		var now lease
		if gerr == nil && json.Unmarshal(e.Value(), &now) == nil && now.Node == p.node {
			p.mu.Lock()
			if l := p.owned[id]; l != nil && l.rev == oldRev {
				l.rev = e.Revision()
			}
			p.mu.Unlock()
			return
		}
		// Another node holds it now.
		p.mu.Lock()
		if l := p.owned[id]; l == nil || l.rev != oldRev {
			p.mu.Unlock()
			return
		}
		delete(p.owned, id)
		p.mu.Unlock()
		p.s.Logger.Warn("camera lease lost", "camera", id, "node", p.node)
		p.starter.stopNow(id)
		return
	}
	p.mu.Unlock()
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// starter starts and stops cameras' ingest off the placement loops: a
// camera's start reads its pipeline and opens its source, which may wait
// seconds for a Raft group, and the leases must be renewed meanwhile.
// The latest wish per camera wins; stops go before starts.
type starter struct {
	super *supervisor

	mu      sync.Mutex
	pending map[string]*busv1.Camera // camera → configuration to start, nil to stop
	wake    chan struct{}
}

func newStarter(super *supervisor) *starter {
	return &starter{super: super, pending: map[string]*busv1.Camera{}, wake: make(chan struct{}, 1)}
}

func (st *starter) start(cam *busv1.Camera) { st.want(cam.Id, cloneCamera(cam)) }

// stopNow stops a camera's ingest, ahead of any start waiting.
func (st *starter) stopNow(id string) { st.want(id, nil) }

func (st *starter) want(id string, cam *busv1.Camera) {
	st.mu.Lock()
	st.pending[id] = cam
	st.mu.Unlock()
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

// run applies the wishes until ctx ends.
func (st *starter) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-st.wake:
		}
		for st.next(ctx) {
		}
	}
}

// next applies one pending wish, a stop first when there is one; false
// when none is left.
func (st *starter) next(ctx context.Context) bool {
	if ctx.Err() != nil {
		return false
	}
	st.mu.Lock()
	id, found := "", false
	var cam *busv1.Camera
	for k, c := range st.pending {
		if !found || (c == nil && cam != nil) {
			id, cam, found = k, c, true
		}
	}
	delete(st.pending, id)
	st.mu.Unlock()
	if !found {
		return false
	}
	if cam == nil {
		st.super.remove(id)
	} else {
		st.super.apply(cam)
	}
	return true
}

// liveNodes reads the heartbeats younger than nodeStaleAfter; workers' only
// withWorkers (no camera is placed on a worker).
func (p *placement) liveNodes(ctx context.Context, now time.Time, withWorkers bool) (map[string]heartbeat, error) {
	return liveNodes(ctx, p.nodes, now, withWorkers)
}

// liveNodes reads the heartbeats in the nodes bucket younger than
// nodeStaleAfter; workers' only withWorkers.
func liveNodes(ctx context.Context, nodes jetstream.KeyValue, now time.Time, withWorkers bool) (map[string]heartbeat, error) {
	out := map[string]heartbeat{}
	keys, err := nodes.ListKeys(ctx)
	if err != nil {
		return out, err
	}
	for k := range keys.Keys() {
		e, err := nodes.Get(ctx, k)
		if err != nil {
			continue
		}
		var n heartbeat
		if json.Unmarshal(e.Value(), &n) != nil || now.Sub(e.Created()) > nodeStaleAfter {
			continue
		}
		if n.Role == roleWorker && !withWorkers {
			continue
		}
		out[n.Node] = n
	}
	// Stop after the list ended reports the closed subscription: no error.
	_ = keys.Stop()
	return out, nil
}

func (p *placement) heartbeat(ctx context.Context, now time.Time) {
	p.mu.Lock()
	held := len(p.owned)
	p.mu.Unlock()
	b, _ := json.Marshal(heartbeat{nodeInfo: p.s.localNode(held, p.cpu.sample(now)), LeadsLeases: p.s.bus.LeadsLeases(),
		Shedding: p.shedding.Load()})
	_, _ = p.nodes.Put(ctx, p.node, b)
}

// cpuMeter measures this process's CPU use between two samples.
type cpuMeter struct {
	last time.Duration
	at   time.Time
}

// sample is the CPU used since the previous sample, in cores (0 the first
// time).
func (m *cpuMeter) sample(now time.Time) float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	used := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	var v float64
	if !m.at.IsZero() {
		v = (used - m.last).Seconds() / now.Sub(m.at).Seconds()
	}
	m.last, m.at = used, now
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
	m, _ := p.liveNodes(ctx, time.Now(), true)
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
	return nodeInfo{Node: s.Config.Node, Role: roleServe, Cameras: cameras, Sessions: sessions, CPU: cpu,
		UpdatedAt: time.Now().UTC(), Leader: s.bus.MetaLeader() == s.bus.ServerName(), Labels: s.Config.NodeLabels}
}

// pipelineRewatch is how long the pipelines watch waits before it is set
// up again after it failed or ended (a bucket electing its Raft leader).
const pipelineRewatch = time.Second

// watchPipelines restarts the cameras this node ingests whose pipeline was
// written through any node's API: the camera's own changes reach its owner
// through the reader (their UpdatedUnixNano), a pipeline's would not.
// The watch is an ordered consumer that resumes after the last update it
// delivered, so an update made while a route or leader was down still
// arrives.
func (p *placement) watchPipelines(ctx context.Context) {
	kv := p.s.bus.KV(bus.BucketPipelines)
	for ctx.Err() == nil {
		w, err := kv.WatchAll(ctx, jetstream.UpdatesOnly(), jetstream.IgnoreDeletes())
		if err == nil {
			p.followPipelines(ctx, w)
			_ = w.Stop()
		} else {
			p.s.Logger.Debug("pipelines watch", "error", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(pipelineRewatch):
		}
	}
}

// followPipelines hands each pipeline written to pipelineChanged until
// ctx ends or the watch does.
func (p *placement) followPipelines(ctx context.Context, w jetstream.KeyWatcher) {
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e != nil {
				p.pipelineChanged(e.Key())
			}
		}
	}
}

// pipelineChanged restarts, through the starter, the cameras held here
// that run the pipeline: a stop or newer start wished meanwhile wins.
func (p *placement) pipelineChanged(pipeline string) {
	running := p.s.super.camerasUsing(pipeline)
	p.mu.Lock()
	var restart []*busv1.Camera
	for _, cam := range running {
		if p.owned[cam.Id] != nil {
			restart = append(restart, cam)
		}
	}
	p.mu.Unlock()
	for _, cam := range restart {
		p.s.Logger.Info("pipeline changed, restarting camera", "camera", cam.Id, "pipeline", pipeline)
		p.starter.start(cam)
	}
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
		items := []nodeInfo{s.localNode(cams, 0)}
		// Workers joined through this node's client port (nats_url) beat
		// into its nodes bucket too.
		ctx, cancel := context.WithTimeout(c.UserContext(), listWait)
		defer cancel()
		var workers map[string]heartbeat
		if kv := s.bus.KV(bus.BucketNodes); kv != nil {
			workers, _ = liveNodes(ctx, kv, time.Now(), true)
		}
		for _, w := range workers {
			if w.Role == roleWorker {
				items = append(items, w.nodeInfo)
			}
		}
		sort.Slice(items[1:], func(i, j int) bool { return items[1+i].Node < items[1+j].Node })
		return c.JSON(fiber.Map{"items": items})
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
