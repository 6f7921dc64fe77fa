package ingest

import "time"

// RTPClock turns 32-bit RTP timestamps into nanoseconds since the first one,
// across wrap-arounds (RFC 3550 section 5.1: timestamps wrap and may jump
// backwards for reordered B-frames, so the signed difference is used).
type RTPClock struct {
	// Rate is the RTP clock rate in Hz (90000 for video).
	Rate int64

	started bool
	last    uint32
	ticks   int64
}

// PTS returns the presentation time of ts in nanoseconds.
func (c *RTPClock) PTS(ts uint32) int64 {
	if !c.started {
		c.started, c.last = true, ts
		return 0
	}
	c.ticks += int64(int32(ts - c.last))
	c.last = ts
	if c.Rate <= 0 {
		return 0
	}
	// Split so ticks*1e9 cannot overflow on long sessions.
	return c.ticks/c.Rate*int64(time.Second) + c.ticks%c.Rate*int64(time.Second)/c.Rate
}
