// Package memtrim gives back to the kernel, once start-up is over, the pages
// that only start-up needed: the program's and its shared libraries' code and
// read-only data that the dynamic loader and package initialisers touched, and
// the C and Go heap freed since; then, while the server runs, the heap that
// bursts of work free.
//
// The server links OpenCV and libav, which pull in some 260 shared libraries
// (Qt through highgui, GDAL through imgcodecs, codec libraries through
// libavcodec). Loading them and running their constructors leaves about 70 MB
// of their pages, and 30 MB of the binary's, resident in a process that may
// never decode or analyse a picture. Those pages are clean copies of files:
// dropping them loses nothing, and the few that are used again fault back in
// from the page cache.
package memtrim

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"time"
)

// Result says what one Trim gave back.
type Result struct {
	// Mappings is how many file mappings were dropped.
	Mappings int
	// FileBytes is the resident size of those mappings before the drop.
	FileBytes int64
}

// Trim drops the resident pages of every file mapping that can be re-read
// from its file unchanged, returns the Go heap's free pages to the kernel and
// asks the C allocator to do the same with its free memory.
func Trim() (Result, error) {
	// Streamed, not read whole: the file is about a megabyte for the
	// server's 1,300 mappings, which would grow the heap being trimmed.
	smaps, err := os.Open("/proc/self/smaps")
	if err != nil {
		return Result{}, err
	}
	maps, err := droppable(smaps)
	smaps.Close()
	if err != nil {
		return Result{}, err
	}
	var res Result
	files := map[string]bool{}
	for _, m := range maps {
		if dropPages(m.start, m.end) == nil {
			res.Mappings++
			res.FileBytes += m.rss
			files[m.path] = true
		}
	}
	for path := range files {
		_ = evictUnmapped(path)
	}
	trimCHeap()
	debug.FreeOSMemory()
	return res, nil
}

// mapping is one line of /proc/self/smaps with the fields Trim reads.
type mapping struct {
	start, end uintptr
	writable   bool
	file       bool
	rss, anon  int64
	path       string
}

// droppable lists the mappings whose pages all equal their file's: backed by
// a file, not writable (so nothing can make a private copy of a page while we
// look) and with no private copy made before (Anonymous 0, which rules out
// relocated read-only data and debugger breakpoints). Dropping such pages is
// invisible to the program; dropping any other would lose data.
func droppable(smaps io.Reader) ([]mapping, error) {
	var out []mapping
	var cur mapping
	have := false
	flush := func() {
		if have && cur.file && !cur.writable && cur.anon == 0 && cur.rss > 0 {
			out = append(out, cur)
		}
	}
	sc := bufio.NewScanner(smaps)
	for sc.Scan() {
		line := sc.Bytes()
		if m, ok := parseHeader(line); ok {
			flush()
			cur, have = m, true
			continue
		}
		switch {
		case bytes.HasPrefix(line, []byte("Rss:")):
			cur.rss = kilobytes(line)
		case bytes.HasPrefix(line, []byte("Anonymous:")):
			cur.anon = kilobytes(line)
		}
	}
	flush()
	return out, sc.Err()
}

// parseHeader reads "start-end perms offset dev inode [path]"; ok is false
// for the "Key: value" lines in between.
func parseHeader(line []byte) (mapping, bool) {
	f := bytes.Fields(line)
	if len(f) < 5 || bytes.HasSuffix(f[0], []byte(":")) {
		return mapping{}, false
	}
	dash := bytes.IndexByte(f[0], '-')
	if dash < 0 || len(f[1]) != 4 {
		return mapping{}, false
	}
	start, err1 := strconv.ParseUint(string(f[0][:dash]), 16, 64)
	end, err2 := strconv.ParseUint(string(f[0][dash+1:]), 16, 64)
	if err1 != nil || err2 != nil || end <= start {
		return mapping{}, false
	}
	inode, _ := strconv.ParseUint(string(f[4]), 10, 64)
	path := ""
	if len(f) >= 6 {
		path = string(f[5])
	}
	return mapping{
		path:     path,
		start:    uintptr(start),
		end:      uintptr(end),
		writable: f[1][1] == 'w',
		// A path and an inode: a real file, not [heap], [stack] or an
		// anonymous mapping.
		file: inode != 0 && len(path) > 0 && path[0] == '/',
	}, true
}

// kilobytes reads the number of "Key:   123 kB" in bytes.
func kilobytes(line []byte) int64 {
	f := bytes.Fields(line)
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.ParseInt(string(f[1]), 10, 64)
	return n << 10
}

// GiveBackAfterBursts checks the process's private memory every interval
// until ctx ends, and when it stands more than slack above the lowest seen
// since the last give-back, hands the free C and Go heap back to the kernel
// (onGiveBack, if set, hears the before and after figures in bytes).
//
// After a burst (a batch of pictures decoded in parallel, a flood of
// requests) the Go heap keeps its high-water goal until the next collection,
// up to two minutes away on a quiet server, and glibc keeps the freed
// memory of each thread's arena; on a small box that memory is better given
// back. A forced collection every interval while memory grows is the cost.
//
// A give-back in the middle of a burst finds most of it still in use and
// leaves the lowest point since then high, so what the burst leaves behind
// once it ends would stay: memory more than slack above the lowest seen
// since start is also given back every three intervals (a forced
// collection every 30 s on a server whose pipelines legitimately hold
// more, the price of not keeping a flood's garbage).
//
// busy, if set, postpones a give-back to the next check while it reports
// true (the WebRTC engine's burst of answers, which puts collections off).
func GiveBackAfterBursts(ctx context.Context, interval time.Duration, slack int64, busy func() bool, onGiveBack func(before, after int64)) {
	low := privateBytes()
	floor := low
	var last time.Time
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := privateBytes()
		if now <= 0 {
			return
		}
		low, floor = min(low, now), min(floor, now)
		grew := now-floor > slack
		settled := now-low > slack && time.Since(last) >= 3*interval
		if !grew && !settled || (busy != nil && busy()) {
			continue
		}
		trimCHeap()
		debug.FreeOSMemory()
		floor, last = privateBytes(), time.Now()
		if onGiveBack != nil {
			onGiveBack(now, floor)
		}
	}
}

// privateBytes is the process's anonymous resident memory (RssAnon), or 0
// when /proc cannot say.
func privateBytes() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if bytes.HasPrefix(line, []byte("RssAnon:")) {
			return kilobytes(line)
		}
	}
	return 0
}
