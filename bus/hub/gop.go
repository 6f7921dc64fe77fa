package hub

import (
	"context"
	"encoding/binary"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/bus"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// Why the GOP snapshot joins the live video without a gap: the requesting
// hub subscribes to the camera's video before it sends the request on the
// same connection, and NATS carries the interest and the request to the
// answering node in that order. Every access unit published there before
// the interest arrived was therefore queued to the answering hub before the
// request; answerGOP waits until its video subscription has handled what
// was queued, so the snapshot ends at or after the first access unit the
// requester receives live. The requester drops the live copies of what the
// snapshot holds (by sequence and timestamps).

// errBadGOP is a GOP reply that does not decode.
var errBadGOP = errors.New("hub: malformed GOP reply")

// fetchGOP asks the hubs already reading c (the ingest node's keeps it) for
// their kept GOP, merges it with what arrived live meanwhile, hands it to
// the readers that joined at the latest keyframe, and then answers such
// requests itself.
func (h *Hub) fetchGOP(c *camera) {
	defer h.wg.Done()
	ctx, cancel := context.WithTimeout(h.ctx, gopRequestTimeout)
	msg, err := h.nc.RequestWithContext(ctx, h.subjects.GOP(c.id), nil)
	cancel()
	var snapshot []*busv1.AccessUnit
	if err == nil {
		snapshot, err = decodeGOP(msg.Data)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || h.cams[c.id] != c {
		return
	}
	if err == nil {
		h.applySnapshot(c, snapshot)
	}
	c.fetching = false
	clear(c.pending)
	c.pending, c.pendingBytes = nil, 0
	sub, err := h.nc.Subscribe(h.subjects.GOP(c.id), func(m *nats.Msg) { h.answerGOP(c, m) })
	if err == nil {
		c.gopSub = sub
	}
}

// applySnapshot makes a peer's GOP c's kept GOP unless a keyframe arrived
// live first; h.mu is held.
func (h *Hub) applySnapshot(c *camera, snapshot []*busv1.AccessUnit) {
	if len(c.gop) > 0 || len(snapshot) == 0 || !snapshot[0].Keyframe {
		return
	}
	n := 0
	for _, au := range snapshot {
		n += auBytes(au)
	}
	if n > MaxGOPBytes {
		return
	}
	c.gop = append(c.gop[:0], snapshot...)
	c.gopBytes = n
	// The live access units that came before the reply: those the snapshot
	// holds (its tail) are dropped, the rest extend the GOP.
	i := 0
	for i < len(c.pending) && containsAU(snapshot, c.pending[i]) {
		i++
	}
	if i == len(c.pending) {
		// The snapshot may end after what arrived live so far.
		c.overlap = snapshot
	}
	for _, au := range c.pending[i:] {
		c.keep(au)
	}
	for r := range c.readers {
		if !r.wantGOP || !r.waitKey {
			continue
		}
		r.wantGOP = false
		if cap(r.ch)-len(r.ch) < len(c.gop) {
			continue // too long for its queue: it starts at the next keyframe
		}
		for _, au := range c.gop {
			r.ch <- au
		}
		r.waitKey = false
	}
}

// answerGOP replies to a peer's request with c's kept GOP; it stays silent
// without a fresh one (the peer then starts at the next keyframe).
func (h *Hub) answerGOP(c *camera, m *nats.Msg) {
	// Wait until the video queued before the request is in the GOP (see
	// the top of this file). Pending counts a message until its callback
	// returned, handled after: reading Pending first can only count one
	// message twice, which costs a wait for the next access unit.
	h.mu.Lock()
	sub := c.sub
	h.mu.Unlock()
	queued := 0
	if sub != nil {
		// Fed locally (no subscription), an access unit is in the GOP
		// before it is published: nothing to wait for.
		var err error
		if queued, _, err = sub.Pending(); err != nil {
			return
		}
	}
	target := c.handled.Load() + uint64(queued)
	deadline := time.Now().Add(gopCatchUp)
	for c.handled.Load() < target && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	h.mu.Lock()
	var gop []*busv1.AccessUnit
	if h.cams[c.id] == c && !h.closed && time.Since(c.last) < gopFresh {
		gop = append(gop, c.gop...)
	}
	h.mu.Unlock()
	if len(gop) == 0 {
		return
	}
	data, err := encodeGOP(gop)
	if err != nil {
		return
	}
	_ = m.Respond(data)
}

// encodeGOP writes access units as a sequence of length-prefixed protobuf
// messages.
func encodeGOP(gop []*busv1.AccessUnit) ([]byte, error) {
	size := 0
	for _, au := range gop {
		size += binary.MaxVarintLen64 + proto.Size(au)
	}
	b := make([]byte, 0, size)
	for _, au := range gop {
		b = binary.AppendUvarint(b, uint64(proto.Size(au)))
		var err error
		if b, err = (proto.MarshalOptions{}).MarshalAppend(b, au); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// decodeGOP reads what encodeGOP wrote.
func decodeGOP(b []byte) ([]*busv1.AccessUnit, error) {
	var gop []*busv1.AccessUnit
	for len(b) > 0 {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return nil, errBadGOP
		}
		au := &busv1.AccessUnit{}
		if err := bus.UnmarshalAccessUnit(b[k:k+int(n)], au); err != nil {
			return nil, errBadGOP
		}
		gop = append(gop, au)
		b = b[k+int(n):]
	}
	return gop, nil
}

// containsAU reports whether gop holds au (the same published access unit).
func containsAU(gop []*busv1.AccessUnit, au *busv1.AccessUnit) bool {
	for _, x := range gop {
		if x.Sequence == au.Sequence && x.CompleteUnixNano == au.CompleteUnixNano &&
			x.IngestUnixNano == au.IngestUnixNano && x.Keyframe == au.Keyframe {
			return true
		}
	}
	return false
}
