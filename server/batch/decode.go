package batch

import (
	"sync"

	"gocv.io/x/gocv"

	"github.com/imageflowcanvas/imageflow/processors"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// jpegSize reads a JPEG's picture size from its frame header (SOFn) without
// decoding anything; ok is false for anything it does not understand.
func jpegSize(b []byte) (w, h int, ok bool) {
	if len(b) < 4 || b[0] != 0xFF || b[1] != 0xD8 {
		return 0, 0, false
	}
	i := 2
	for i+2 <= len(b) {
		if b[i] != 0xFF {
			return 0, 0, false
		}
		marker := b[i+1]
		if marker == 0xFF { // fill byte
			i++
			continue
		}
		i += 2
		if marker == 0x01 || marker >= 0xD0 && marker <= 0xD8 { // no length
			continue
		}
		if marker == 0xD9 || marker == 0xDA { // end, or scan before any frame header
			return 0, 0, false
		}
		if i+2 > len(b) {
			return 0, 0, false
		}
		n := int(b[i])<<8 | int(b[i+1])
		if n < 2 || i+n > len(b) {
			return 0, 0, false
		}
		// SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
		if marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC {
			if n < 7 {
				return 0, 0, false
			}
			h, w = int(b[i+3])<<8|int(b[i+4]), int(b[i+5])<<8|int(b[i+6])
			return w, h, w > 0 && h > 0
		}
		i += n
	}
	return 0, 0, false
}

// pngSize reads a PNG's picture size from its IHDR chunk.
func pngSize(b []byte) (w, h int, ok bool) {
	if len(b) < 24 || string(b[:8]) != "\x89PNG\r\n\x1a\n" || string(b[12:16]) != "IHDR" {
		return 0, 0, false
	}
	w = int(b[16])<<24 | int(b[17])<<16 | int(b[18])<<8 | int(b[19])
	h = int(b[20])<<24 | int(b[21])<<16 | int(b[22])<<8 | int(b[23])
	return w, h, w > 0 && h > 0
}

// sizer is what a shrinking first step tells about its output (the
// built-in resize has it).
type sizer interface {
	TargetSize(w, h int) (int, int)
}

// rootSizers returns, when every step that reads the source picture can
// tell its output size, those answers; nil otherwise. With them the worker
// decodes a JPEG at 1/2, 1/4 or 1/8 scale (libjpeg scales in the DCT, about
// 2.3x faster at 1/4 for 1080p) whenever no such step needs more pixels.
func rootSizers(reg *processors.Registry, p *busv1.Pipeline) []sizer {
	var out []sizer
	for _, s := range p.GetSteps() {
		if len(s.Inputs) > 0 {
			continue
		}
		spec, ok := reg.Lookup(s.Processor)
		if !ok || spec.New == nil {
			return nil
		}
		params, err := spec.Resolve(s.GetParams().AsMap())
		if err != nil {
			return nil
		}
		proc, err := spec.New(params)
		if err != nil {
			return nil
		}
		sz, ok := proc.(sizer)
		if !ok {
			proc.Close()
			return nil
		}
		out = append(out, sz)
		// TargetSize needs no resources; the processor holds none of note.
		proc.Close()
	}
	return out
}

// reducedDecode picks the decode flag for a w x h picture: the largest
// scale-down that still gives every root step at least the pixels it keeps.
func reducedDecode(roots []sizer, w, h int) (gocv.IMReadFlag, int) {
	if len(roots) == 0 {
		return gocv.IMReadColor, 1
	}
	for _, c := range []struct {
		f    int
		flag gocv.IMReadFlag
	}{{8, gocv.IMReadReducedColor8}, {4, gocv.IMReadReducedColor4}, {2, gocv.IMReadReducedColor2}} {
		dw, dh := (w+c.f-1)/c.f, (h+c.f-1)/c.f
		fits := true
		for _, r := range roots {
			tw, th := r.TargetSize(w, h)
			if dw < tw || dh < th {
				fits = false
				break
			}
		}
		if fits {
			return c.flag, c.f
		}
	}
	return gocv.IMReadColor, 1
}

// inputCache keeps recently uploaded files in memory so a worker of the
// same process skips reading them back from the store; the store stays the
// source of truth (after a restart, or on another node, it is read).
type inputCache struct {
	mu    sync.Mutex
	m     map[string][]byte
	order []string
	size  int64
	max   int64
}

func newInputCache(max int64) *inputCache {
	return &inputCache{m: make(map[string][]byte), max: max}
}

func (c *inputCache) put(key string, b []byte) {
	if int64(len(b)) > c.max/4 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.m[key]; ok {
		c.size -= int64(len(old))
	}
	for c.size+int64(len(b)) > c.max && len(c.order) > 0 {
		k := c.order[0]
		c.order = c.order[1:]
		if v, ok := c.m[k]; ok {
			c.size -= int64(len(v))
			delete(c.m, k)
		}
	}
	c.m[key] = b
	c.size += int64(len(b))
	c.order = append(c.order, key)
	if len(c.order) > 2*len(c.m)+64 {
		kept := c.order[:0]
		for _, k := range c.order {
			if _, ok := c.m[k]; ok {
				kept = append(kept, k)
			}
		}
		c.order = kept
	}
}

// take removes and returns a cached file: each upload is processed once
// here, and a retry reads the store.
func (c *inputCache) take(key string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, ok := c.m[key]
	if ok {
		delete(c.m, key)
		c.size -= int64(len(b))
	}
	return b, ok
}
