package memtrim

import (
	"bytes"
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const sampleSmaps = `00400000-0040d000 r--p 00000000 fe:00 10642593                           /opt/imageflow
Size:                 52 kB
Rss:                  48 kB
Anonymous:             0 kB
VmFlags: rd mr mw me dw sd
0040d000-016c0000 r-xp 0000d000 fe:00 10642593                           /opt/imageflow
Rss:               18880 kB
Anonymous:             0 kB
02d4f000-02d50000 r--p 0294f000 fe:00 10642593                           /opt/imageflow
Rss:                   4 kB
Anonymous:             4 kB
02d50000-02e61000 rw-p 02950000 fe:00 10642593                           /opt/imageflow
Rss:                 772 kB
Anonymous:           184 kB
02e61000-02e70000 rw-p 00000000 00:00 0
Rss:                 100 kB
Anonymous:           100 kB
03000000-03100000 rw-p 00000000 00:00 0                                  [heap]
Rss:                5272 kB
Anonymous:          5272 kB
7f0000000000-7f0000010000 r--p 00000000 fe:00 42                         /usr/lib/libunused.so
Rss:                   0 kB
Anonymous:             0 kB
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
Rss:                   8 kB
Anonymous:             0 kB
`

func TestDroppableKeepsWhatCannotBeReread(t *testing.T) {
	maps, err := droppable(strings.NewReader(sampleSmaps))
	if err != nil {
		t.Fatal(err)
	}
	// Only the binary's code and its first read-only part: the relocated
	// read-only page (a private copy), the writable data, anonymous memory,
	// the heap, a mapping with nothing resident and the vDSO stay.
	var got []string
	for _, m := range maps {
		got = append(got, strconv.FormatUint(uint64(m.start), 16)+" "+strconv.FormatInt(m.rss>>10, 10))
	}
	want := []string{"400000 48", "40d000 18880"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("droppable mappings %v, want %v", got, want)
	}
	if maps[0].path != "/opt/imageflow" {
		t.Fatalf("path %q", maps[0].path)
	}
}

// TestTrimGivesFilePagesBack trims this test process and checks its resident
// file pages fell, that read-only data in the dropped pages reads back the
// same and that code keeps running.
func TestTrimGivesFilePagesBack(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc/self/smaps is Linux's")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	readOnly := strings.Clone(sampleSmaps)
	before := statusKB(t, "RssFile")
	res, err := Trim()
	if err != nil {
		t.Fatal(err)
	}
	after := statusKB(t, "RssFile")
	t.Logf("RssFile %d → %d kB; %d mappings dropped, %d kB", before, after, res.Mappings, res.FileBytes>>10)
	if res.Mappings == 0 || res.FileBytes == 0 {
		t.Fatalf("nothing dropped: %+v", res)
	}
	if after >= before {
		t.Fatalf("RssFile did not fall: %d → %d kB", before, after)
	}
	// The binary's read-only data (this string among it) reads back from
	// the file unchanged, and the binary on disk is what it was.
	if sampleSmaps != readOnly {
		t.Fatal("read-only data changed")
	}
	again, err := os.ReadFile(exe)
	if err != nil || !bytes.Equal(again, want) {
		t.Fatal("the executable changed on disk")
	}
}

func statusKB(t *testing.T, key string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, key+":") {
			f := strings.Fields(line)
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	t.Fatalf("no %s in /proc/self/status", key)
	return 0
}

// watchGiveBacks runs GiveBackAfterBursts every 20 ms with a 16 MiB slack
// until the test ends and returns the before and after figures of each
// give-back.
func watchGiveBacks(t *testing.T, busy func() bool) <-chan [2]int64 {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("/proc/self/status is Linux's")
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	gaveBack := make(chan [2]int64, 64)
	go GiveBackAfterBursts(ctx, 20*time.Millisecond, 16<<20, busy, func(before, after int64) {
		select {
		case gaveBack <- [2]int64{before, after}:
		default:
		}
	})
	return gaveBack
}

// burst64 makes 64 MiB of Go memory resident.
func burst64() []byte {
	burst := make([]byte, 64<<20)
	for i := 0; i < len(burst); i += 4096 {
		burst[i] = 1
	}
	return burst
}

// waitGivenBack waits (10 s at most) for a give-back of at least 32 MiB.
func waitGivenBack(t *testing.T, gaveBack <-chan [2]int64, failure string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case g := <-gaveBack:
			t.Logf("RssAnon %d → %d MiB", g[0]>>20, g[1]>>20)
			if g[0]-g[1] >= 32<<20 {
				return
			}
		case <-deadline:
			t.Fatal(failure)
		}
	}
}

// TestGiveBackAfterBursts makes a 64 MiB burst of Go memory, lets go of it
// and checks the watcher hands it back to the kernel, not while busy says
// to wait.
func TestGiveBackAfterBursts(t *testing.T) {
	var busy atomic.Bool
	busy.Store(true)
	gaveBack := watchGiveBacks(t, busy.Load)
	time.Sleep(200 * time.Millisecond)
	burst := burst64()
	runtime.KeepAlive(burst)
	burst = nil
	select {
	case g := <-gaveBack:
		t.Fatalf("gave back while busy: %d → %d MiB", g[0]>>20, g[1]>>20)
	case <-time.After(200 * time.Millisecond):
	}
	busy.Store(false)
	// A give-back may come while the burst is still being written (and
	// still referenced); the one after it is let go must hand it back.
	waitGivenBack(t, gaveBack, "the burst was never given back")
}

// A give-back in the middle of a burst, while the burst's memory is still
// in use, must not keep the process from giving that memory back once the
// burst lets it go.
func TestGiveBackAfterBurstThatOutlivedAGiveBack(t *testing.T) {
	var busy atomic.Bool
	busy.Store(true)
	gaveBack := watchGiveBacks(t, busy.Load)
	time.Sleep(200 * time.Millisecond)
	burst := burst64()
	// The give-back that sees the whole burst finds it in use.
	busy.Store(false)
	select {
	case g := <-gaveBack:
		t.Logf("during the burst: RssAnon %d → %d MiB", g[0]>>20, g[1]>>20)
		if g[0]-g[1] >= 32<<20 {
			t.Fatalf("gave back memory still in use: %d → %d MiB", g[0]>>20, g[1]>>20)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no give-back while memory grew")
	}
	runtime.KeepAlive(burst)
	burst = nil
	waitGivenBack(t, gaveBack, "the burst, let go after a give-back, was never given back")
}
