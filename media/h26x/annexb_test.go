package h26x

import (
	"bytes"
	"testing"

	"github.com/imageflowcanvas/imageflow/media/h26x/h26xtest"
)

// annexBSeeds are the first access units of a clip, Annex-B.
func annexBSeeds(tb testing.TB) [][]byte {
	var seeds [][]byte
	for _, au := range h26xtest.AccessUnits(tb, h26xtest.Small)[:4] {
		seeds = append(seeds, AppendAnnexB(nil, au))
	}
	return seeds
}

// FuzzSplitAnnexB checks the splitter's invariants: units are non-empty,
// contain no start code, and re-joined they split the same way.
func FuzzSplitAnnexB(f *testing.F) {
	for _, s := range annexBSeeds(f) {
		f.Add(s)
	}
	f.Add([]byte{0, 0, 1, 0, 0, 0, 1, 9, 0, 0})
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		nalus := SplitAnnexB(nil, data)
		for _, n := range nalus {
			if len(n) == 0 || n[len(n)-1] == 0 {
				t.Fatalf("empty or zero-terminated unit %x", n)
			}
			if bytes.Contains(n, []byte{0, 0, 1}) {
				t.Fatalf("start code inside unit %x", n)
			}
		}
		again := SplitAnnexB(nil, AppendAnnexB(nil, nalus))
		if len(again) != len(nalus) {
			t.Fatalf("resplit %d units, first split %d", len(again), len(nalus))
		}
		for i := range again {
			if !bytes.Equal(again[i], nalus[i]) {
				t.Fatalf("unit %d changed", i)
			}
		}
	})
}

// BenchmarkSplitAnnexB splits a keyframe access unit.
func BenchmarkSplitAnnexB(b *testing.B) {
	data := annexBSeeds(b)[0]
	var nalus [][]byte
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		nalus = SplitAnnexB(nalus[:0], data)
	}
}
