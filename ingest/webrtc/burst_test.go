package webrtc

import (
	"runtime/debug"
	"testing"
	"time"
)

// A burst raises the GC target from its first answer until burstGCTail after
// its end (burstSettle after its last answer; a lone answer's right then),
// an answer begun within that settle time continues it, and waitQuiet waits
// for its end, or gives up after its bound; after a lone answer it does not
// wait.
func TestAnswerBurst(t *testing.T) {
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)
	gcPercent := func() int {
		p := debug.SetGCPercent(-1)
		debug.SetGCPercent(p)
		return p
	}
	var b answerBurst
	restoredWithin := func(d time.Duration) bool {
		for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if gcPercent() == 100 {
				return true
			}
		}
		return false
	}
	waited := func() time.Duration {
		start := time.Now()
		b.waitQuiet(time.Second)
		return time.Since(start)
	}
	if d := waited(); d > 10*time.Millisecond {
		t.Fatalf("no burst, yet waitQuiet took %v", d)
	}

	end1 := b.begin()
	if p := gcPercent(); p != burstGCPercent {
		t.Fatalf("GC target during a burst: %d, want %d", p, burstGCPercent)
	}
	end2 := b.begin()
	end1()
	end1() // idempotent
	time.AfterFunc(50*time.Millisecond, end2)
	if d := waited(); d < 50*time.Millisecond+burstSettle {
		t.Fatalf("waitQuiet returned %v into the burst, before its last answer's end and settle time", d)
	}
	if p := gcPercent(); p != burstGCPercent {
		t.Fatalf("GC target right after the burst: %d, want %d until its tail", p, burstGCPercent)
	}
	if !restoredWithin(burstGCTail + time.Second) {
		t.Fatalf("GC target after the burst's tail: %d, want 100 back", gcPercent())
	}

	// An answer within the settle time continues the burst.
	end3 := b.begin()
	end3()
	time.Sleep(burstSettle / 5)
	end4 := b.begin()
	time.Sleep(burstSettle * 2)
	b.mu.Lock()
	going := b.quiet != nil
	b.mu.Unlock()
	if !going {
		t.Fatal("the burst ended while an answer was in progress")
	}
	start := time.Now()
	b.waitQuiet(20 * time.Millisecond)
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Fatalf("waitQuiet returned after %v with an answer in progress, want its 20ms bound", d)
	}
	end4()
	if d := waited(); d > burstSettle+500*time.Millisecond {
		t.Fatalf("waitQuiet took %v after the last answer", d)
	}
	if !restoredWithin(burstGCTail + time.Second) {
		t.Fatalf("GC target after the second burst: %d, want 100", gcPercent())
	}

	// A lone answer's settle time holds nothing.
	end6 := b.begin()
	end6()
	if d := waited(); d > 10*time.Millisecond {
		t.Fatalf("waitQuiet took %v after a lone answer", d)
	}
	if !restoredWithin(burstSettle + burstGCTail/2) {
		t.Fatalf("GC target after a lone answer: %d, want 100 without the tail", gcPercent())
	}

	// A target already at least as lax is left alone.
	debug.SetGCPercent(800)
	end5 := b.begin()
	if p := gcPercent(); p != 800 {
		t.Fatalf("GC target 800 became %d in a burst", p)
	}
	end5()
	waited()
	if p := gcPercent(); p != 800 {
		t.Fatalf("GC target 800 became %d after a burst", p)
	}
}
