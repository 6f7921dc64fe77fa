package webrtc

import (
	"testing"
	"time"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// TestCatchUpWait paces a kept GOP at catchUpSpeed times real time, across
// an RTP timestamp wrap, and bounds one wait when the timestamps jump.
func TestCatchUpWait(t *testing.T) {
	au := func(ts uint32) *busv1.AccessUnit { return &busv1.AccessUnit{RtpTimestamp: ts, ClockRate: 90000} }
	frame := time.Second / 30 / catchUpSpeed
	for _, c := range []struct {
		name    string
		key, au uint32
		elapsed time.Duration
		want    time.Duration
	}{
		{"next frame", 0, 3000, 0, frame},
		{"next frame, part of the wait gone", 0, 3000, frame / 2, frame - frame/2},
		{"late", 0, 3000, time.Second, frame - time.Second},
		{"across the wrap", 4294967296 - 1500, 1500, 0, frame},
		{"a jump of ten seconds", 0, 900000, 0, maxCatchUpStep},
	} {
		if got := catchUpWait(au(c.key), au(c.au), c.elapsed); got != c.want {
			t.Errorf("%s: wait %v, want %v", c.name, got, c.want)
		}
	}
	if got := catchUpWait(&busv1.AccessUnit{}, &busv1.AccessUnit{RtpTimestamp: 3000}, 0); got != frame {
		t.Errorf("no clock rate: wait %v, want %v (90 kHz)", got, frame)
	}
}
