package record

import (
	"testing"
	"time"

	"github.com/imageflowcanvas/imageflow/internal/testkit"
)

// BenchmarkRecord measures the recorder's CPU per stored byte: one camera's
// access units (a real clip, each picture padded to the 16.7 kB a 4 Mbit/s
// 30 fps stream averages) through the hub into the embedded object store.
func BenchmarkRecord(b *testing.B) {
	e := startEnv(b)
	m := e.manager(b)
	if err := m.Record("bench", Settings{}); err != nil {
		b.Fatal(err)
	}
	clip := testkit.H264Clip(b, 2)
	pad := make([]byte, 16_000)
	for i := range pad {
		pad[i] = byte(i*7 + 1)
	}
	aus := make([][][]byte, len(clip))
	for i, au := range clip {
		for _, n := range au {
			if t := n[0] & 0x1f; t == 1 || t == 5 {
				n = append(append([]byte(nil), n...), pad...)
			}
			aus[i] = append(aus[i], n)
		}
	}
	base := time.Now().Add(-time.Hour)
	m.mu.Lock()
	r := m.recs["bench"]
	m.mu.Unlock()
	b.SetBytes(int64(16_700))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		au := aus[i%len(aus)]
		// The clip loops; timestamps keep running.
		e.publishAU(b, "bench", au, int64(i)*int64(time.Second)/30, base)
		if i%64 == 63 {
			// Let the recorder keep up: the hub drops for a slow reader.
			for len(r.reader.C()) > 256 {
				time.Sleep(time.Millisecond)
			}
		}
	}
	m.Close()
	b.StopTimer()
}
