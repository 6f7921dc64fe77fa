package ingest

import (
	"testing"
	"time"
)

func TestRTPClock(t *testing.T) {
	c := RTPClock{Rate: 90000}
	start := uint32(0xFFFFFFFF - 1500) // wraps after the first frame
	cases := []struct {
		ts   uint32
		want time.Duration
	}{
		{start, 0},
		{start + 3000, 3000 * time.Second / 90000}, // across the 2^32 wrap
		{start + 1500, 1500 * time.Second / 90000}, // a B-frame shown earlier
		{start + 90000*3600, 3600 * time.Second},   // an hour later
	}
	for _, tc := range cases {
		if got := time.Duration(c.PTS(tc.ts)); got != tc.want {
			t.Fatalf("PTS(%d) = %v, want %v", tc.ts, got, tc.want)
		}
	}
}
