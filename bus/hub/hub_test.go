package hub

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/bus"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newHub(t *testing.T) (*Hub, *bus.Bus) {
	t.Helper()
	b := &bus.Bus{Config: bus.Config{DataDir: t.TempDir()}}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	h := New(b.Conn(), b.Subjects())
	t.Cleanup(func() { h.Close(); b.Close() })
	return h, b
}

func publish(t *testing.T, b *bus.Bus, seq uint64, key bool) {
	t.Helper()
	au := &busv1.AccessUnit{Camera: "cam", Codec: busv1.Codec_CODEC_H264, Keyframe: key, Sequence: seq, Nalus: [][]byte{{0x65, 1, 2, 3}}}
	if err := bus.Publish(b.Conn(), b.Subjects().Video("cam"), au); err != nil {
		t.Fatal(err)
	}
}

func TestReaderStartsOnKeyframe(t *testing.T) {
	h, b := newHub(t)
	r, err := h.Subscribe("cam", "test", 16)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_ = b.Conn().Flush()
	publish(t, b, 1, false)
	publish(t, b, 2, true)
	publish(t, b, 3, false)
	for _, want := range []uint64{2, 3} {
		select {
		case au := <-r.C():
			if au.Sequence != want {
				t.Fatalf("got sequence %d, want %d", au.Sequence, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no access unit %d", want)
		}
	}
}

// A reader that never reads loses access units (counted) while a second
// reader of the same camera gets every one.
func TestSlowReaderDropsWithoutBlockingOthers(t *testing.T) {
	h, b := newHub(t)
	var dropsSeen int
	h.OnDrop = func(cam, kind string) {
		if cam == "cam" && kind == "slow" {
			dropsSeen++
		}
	}
	slow, _ := h.Subscribe("cam", "slow", 2)
	fast, _ := h.Subscribe("cam", "fast", 1024)
	defer slow.Close()
	defer fast.Close()
	if h.Readers("cam") != 2 {
		t.Fatalf("readers: %d", h.Readers("cam"))
	}
	const n = 200
	for i := uint64(1); i <= n; i++ {
		publish(t, b, i, i%10 == 1)
	}
	for i := uint64(1); i <= n; i++ {
		select {
		case au := <-fast.C():
			if au.Sequence != i {
				t.Fatalf("fast reader: sequence %d, want %d", au.Sequence, i)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("fast reader stalled at %d", i)
		}
	}
	if slow.Dropped() == 0 || h.Dropped.Load() != slow.Dropped() {
		t.Fatalf("drops: reader %d, hub %d", slow.Dropped(), h.Dropped.Load())
	}
	if uint64(dropsSeen) != slow.Dropped() {
		t.Fatalf("OnDrop called %d times for %d drops", dropsSeen, slow.Dropped())
	}
	// The slow reader kept what fitted in its queue; after a drop it resumes
	// on a keyframe only, so its decoder never sees a broken chain.
	<-slow.C()
	<-slow.C()
	publish(t, b, n+1, false)
	publish(t, b, n+2, true)
	select {
	case au := <-slow.C():
		if au.Sequence != n+2 || !au.Keyframe {
			t.Fatalf("slow reader resumed on %d (key %v), want keyframe %d", au.Sequence, au.Keyframe, n+2)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("slow reader never resumed")
	}
}

func TestCloseEndsReaders(t *testing.T) {
	h, _ := newHub(t)
	r, _ := h.Subscribe("cam", "x", 1)
	r2, _ := h.Subscribe("cam", "x", 1)
	r.Close()
	r.Close()
	if h.Readers("cam") != 1 {
		t.Fatalf("readers after close: %d", h.Readers("cam"))
	}
	h.Close()
	if _, ok := <-r2.C(); ok {
		t.Fatal("reader channel open after hub Close")
	}
	if _, err := h.Subscribe("cam", "x", 1); err != ErrClosed {
		t.Fatalf("subscribe after close: %v", err)
	}
}

// Audio readers get every audio frame from the first one, and nothing of
// the video; closing the last one drops the audio subscription.
func TestAudioReader(t *testing.T) {
	h, b := newHub(t)
	a, err := h.SubscribeAudio("cam", "test", 16)
	if err != nil {
		t.Fatal(err)
	}
	_ = b.Conn().Flush()
	publish(t, b, 1, true)
	for i := uint64(1); i <= 3; i++ {
		au := &busv1.AccessUnit{Camera: "cam", Codec: busv1.Codec_CODEC_OPUS, Sequence: 100 + i, Data: []byte{0xfc, 1}}
		if err := bus.Publish(b.Conn(), b.Subjects().Audio("cam"), au); err != nil {
			t.Fatal(err)
		}
	}
	for i := uint64(1); i <= 3; i++ {
		select {
		case au := <-a.C():
			if au.Sequence != 100+i || au.Codec != busv1.Codec_CODEC_OPUS {
				t.Fatalf("audio reader got %d %v, want opus %d", au.Sequence, au.Codec, 100+i)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no audio frame %d", i)
		}
	}
	if h.Readers("cam") != 0 {
		t.Fatalf("audio reader counted as video reader")
	}
	a.Close()
	h.mu.Lock()
	left := len(h.audio)
	h.mu.Unlock()
	if left != 0 {
		t.Fatalf("audio subscription kept after the last reader left")
	}
}

// A derived stream reaches its readers from the first keyframe and is
// forgotten with its last reader.
func TestDerivedStream(t *testing.T) {
	h, _ := newHub(t)
	h.Deliver("cam~h264", &busv1.AccessUnit{Sequence: 1, Keyframe: true}) // no reader: dropped
	r, err := h.SubscribeDerived("cam~h264", "test", 4)
	if err != nil {
		t.Fatal(err)
	}
	for i, key := range []bool{false, true, false} {
		h.Deliver("cam~h264", &busv1.AccessUnit{Sequence: uint64(10 + i), Keyframe: key})
	}
	for _, want := range []uint64{11, 12} {
		select {
		case au := <-r.C():
			if au.Sequence != want {
				t.Fatalf("got %d, want %d", au.Sequence, want)
			}
		case <-time.After(time.Second):
			t.Fatalf("no access unit %d", want)
		}
	}
	r.Close()
	h.mu.Lock()
	n := len(h.derived)
	h.mu.Unlock()
	if n != 0 {
		t.Fatal("derived stream kept after its last reader")
	}
}

// A reader joining with SubscribeLatest gets the camera's latest keyframe and
// what followed at once; a plain Subscribe still waits for the next keyframe.
func TestSubscribeLatestStartsOnKeptGOP(t *testing.T) {
	h, b := newHub(t)
	defer h.Keep("cam")() // ingested here: kept without readers
	_ = b.Conn().Flush()
	publish(t, b, 1, true)
	publish(t, b, 2, false)
	publish(t, b, 3, true)
	publish(t, b, 4, false)
	publish(t, b, 5, false)
	_ = b.Conn().Flush()
	waitKept := time.Now().Add(5 * time.Second)
	for {
		h.mu.Lock()
		n := 0
		if c := h.cams["cam"]; c != nil {
			n = len(c.gop)
		}
		h.mu.Unlock()
		if n == 3 {
			break
		}
		if time.Now().After(waitKept) {
			t.Fatalf("kept GOP has %d access units, want 3", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	late, err := h.SubscribeLatest("cam", "test", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	plain, _ := h.Subscribe("cam", "test", 4)
	defer plain.Close()
	for _, want := range []uint64{3, 4, 5} {
		select {
		case au := <-late.C():
			if au.Sequence != want {
				t.Fatalf("got sequence %d, want %d", au.Sequence, want)
			}
		default:
			t.Fatalf("access unit %d not queued at once", want)
		}
	}
	select {
	case au := <-plain.C():
		t.Fatalf("plain reader got %d before a new keyframe", au.Sequence)
	default:
	}
	// The queue kept its own depth for what comes next.
	publish(t, b, 6, false)
	select {
	case au := <-late.C():
		if au.Sequence != 6 {
			t.Fatalf("got sequence %d, want 6", au.Sequence)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no live access unit after the kept GOP")
	}
}

// A GOP larger than MaxGOPBytes is not kept: a joiner waits for a keyframe.
func TestOversizedGOPNotKept(t *testing.T) {
	h, b := newHub(t)
	defer h.Keep("cam")()
	_ = b.Conn().Flush()
	big := make([]byte, MaxGOPBytes/2+1)
	for i, key := range []bool{true, false, false} {
		au := &busv1.AccessUnit{Camera: "cam", Codec: busv1.Codec_CODEC_H264, Keyframe: key, Sequence: uint64(i + 1), Nalus: [][]byte{big}}
		if err := bus.Publish(b.Conn(), b.Subjects().Video("cam"), au); err != nil {
			t.Fatal(err)
		}
	}
	_ = b.Conn().Flush()
	waitFor := time.Now().Add(5 * time.Second)
	for {
		h.mu.Lock()
		c := h.cams["cam"]
		seen := c != nil && !c.last.IsZero()
		n := 0
		if c != nil {
			n = len(c.gop)
		}
		h.mu.Unlock()
		if seen && n == 0 {
			break
		}
		if time.Now().After(waitFor) {
			t.Fatalf("GOP of %d access units still kept", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r, _ := h.SubscribeLatest("cam", "test", 4)
	defer r.Close()
	select {
	case au := <-r.C():
		t.Fatalf("got %d from an oversized GOP", au.Sequence)
	default:
	}
}

// marshalAU is an access unit as the ingest feeds it (KeepLocal).
func marshalAU(t *testing.T, seq uint64, key bool) []byte {
	t.Helper()
	au := &busv1.AccessUnit{Camera: "cam", Codec: busv1.Codec_CODEC_H264, Keyframe: key, Sequence: seq, Nalus: [][]byte{{0x65, 1, 2, 3}}}
	data, err := proto.Marshal(au)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// A camera fed in-process reaches its readers with no bus subscription
// (the bus sees no interest in its video, so the ingest need not publish);
// after release its readers get the camera from the bus again.
func TestKeepLocalFeedsWithoutBusSubscription(t *testing.T) {
	h, b := newHub(t)
	subject := b.Subjects().Video("cam")
	feed, release := h.KeepLocal("cam")
	r, err := h.Subscribe("cam", "test", 16)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_ = b.Conn().Flush()
	if b.Interest(subject) {
		t.Fatal("the hub subscribed to a camera fed in-process")
	}
	next := func(want uint64) {
		t.Helper()
		select {
		case au := <-r.C():
			if au.Sequence != want {
				t.Fatalf("got sequence %d, want %d", au.Sequence, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no access unit %d", want)
		}
	}
	if !feed(marshalAU(t, 1, true)) {
		t.Fatal("feed refused before release")
	}
	next(1)
	// Published on the bus while fed: not the hub's to deliver.
	publish(t, b, 2, false)
	_ = b.Conn().Flush()
	time.Sleep(100 * time.Millisecond)
	feed(marshalAU(t, 3, false))
	next(3)
	if h.Readers("cam") != 1 || !h.Subscribed("cam") {
		t.Fatal("camera state lost")
	}

	release()
	if feed(marshalAU(t, 4, false)) {
		t.Fatal("feed accepted after release")
	}
	_ = b.Conn().Flush()
	if !b.Interest(subject) {
		t.Fatal("no bus subscription for the remaining reader after release")
	}
	publish(t, b, 5, false)
	next(5)
}
