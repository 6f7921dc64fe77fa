package ingest

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/bus/hub"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

func startNATS(t *testing.T) *nats.Conn {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(s.Shutdown)
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// TestSinkTellsViewersAboutAudio: a session's keyframes say whether the
// camera sends audio once the session has run long enough to know, so a
// WHEP answer for a silent camera need not wait for audio.
func TestSinkTellsViewersAboutAudio(t *testing.T) {
	nc := startNATS(t)
	subjects := bus.Subjects{Prefix: "ifc"}
	keyframes := func(cam string) func() *busv1.AccessUnit {
		sub, err := nc.SubscribeSync(subjects.Video(cam))
		if err != nil {
			t.Fatal(err)
		}
		return func() *busv1.AccessUnit {
			m, err := sub.NextMsg(5 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			var au busv1.AccessUnit
			if err := bus.UnmarshalAccessUnit(m.Data, &au); err != nil {
				t.Fatal(err)
			}
			return &au
		}
	}
	key := &busv1.AccessUnit{Codec: busv1.Codec_CODEC_H264, Keyframe: true, Nalus: [][]byte{{0x65, 1}}}
	write := func(s *BusSink, au *busv1.AccessUnit) {
		au.Camera, au.Sequence, au.IngestUnixNano = "", 0, 0
		if err := s.WriteAccessUnit(au); err != nil {
			t.Fatal(err)
		}
	}

	silent, loud := NewBusSink(nc, subjects, "silent", nil), NewBusSink(nc, subjects, "loud", nil)
	nextSilent, nextLoud := keyframes("silent"), keyframes("loud")
	nc.Flush()
	write(silent, key)
	if au := nextSilent(); au.AudioKnown {
		t.Fatalf("a session's first keyframe claims to know its audio: %v", au)
	}
	write(loud, &busv1.AccessUnit{Codec: busv1.Codec_CODEC_OPUS, Data: []byte{1}})
	write(loud, key)
	if au := nextLoud(); au.AudioKnown {
		t.Fatalf("a session's first keyframe claims to know its audio: %v", au)
	}
	time.Sleep(audioSettle + 100*time.Millisecond)
	write(silent, key)
	if au := nextSilent(); !au.AudioKnown || au.AudioCodec != busv1.Codec_CODEC_UNSPECIFIED {
		t.Fatalf("silent camera's keyframe: known %v codec %v", au.AudioKnown, au.AudioCodec)
	}
	write(loud, &busv1.AccessUnit{Codec: busv1.Codec_CODEC_OPUS, Data: []byte{1}})
	write(loud, key)
	if au := nextLoud(); !au.AudioKnown || au.AudioCodec != busv1.Codec_CODEC_OPUS {
		t.Fatalf("camera with audio's keyframe: known %v codec %v", au.AudioKnown, au.AudioCodec)
	}
	// A picture after the keyframe, written from the same reused message,
	// does not carry the keyframe's claim.
	key.Keyframe = false
	write(loud, key)
	if au := nextLoud(); au.AudioKnown {
		t.Fatalf("a non-keyframe claims to know the audio: %v", au)
	}
	key.Keyframe = true

	// The camera's audio stops: after audioGone its keyframes say so.
	time.Sleep(audioGone)
	write(loud, key)
	if au := nextLoud(); !au.AudioKnown || au.AudioCodec != busv1.Codec_CODEC_UNSPECIFIED {
		t.Fatalf("after the audio stopped: known %v codec %v", au.AudioKnown, au.AudioCodec)
	}
	// A reconnect starts a new session that does not know yet.
	loud.SetState(StateConnecting, nil)
	write(loud, key)
	if au := nextLoud(); au.AudioKnown {
		t.Fatalf("a new session's first keyframe claims to know its audio: %v", au)
	}
}

// A sink feeding this process's hub publishes the camera's video on the
// bus only while someone else subscribes, and every reader gets each
// access unit exactly once, by either way; after the hub's release it
// publishes everything again. The access unit message is reused between
// writes, as the RTSP ingest does.
func TestBusSinkFeedsLocalAndPublishesOnInterest(t *testing.T) {
	b := &bus.Bus{Config: bus.Config{DataDir: t.TempDir()}}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	h := hub.New(b.Conn(), b.Subjects())
	defer h.Close()

	sink := NewBusSink(b.Conn(), b.Subjects(), "cam", nil)
	feed, release := h.KeepLocal("cam")
	sink.FeedLocal(feed, b.Interest)
	r, err := h.Subscribe("cam", "test", 64)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	payload := bytes.Repeat([]byte{0x41}, 20000)
	au := &busv1.AccessUnit{Codec: busv1.Codec_CODEC_H264, Nalus: [][]byte{nil}}
	seq := uint64(0)
	write := func() {
		t.Helper()
		seq++
		au.Sequence, au.Keyframe, au.IngestUnixNano = seq, seq == 1, 0
		au.Nalus[0] = payload
		if err := sink.WriteAccessUnit(au); err != nil {
			t.Fatal(err)
		}
	}
	got := func(want uint64) {
		t.Helper()
		select {
		case a := <-r.C():
			if a.Sequence != want || len(a.Nalus) != 1 || !bytes.Equal(a.Nalus[0], payload) {
				t.Fatalf("got access unit %d (%d NAL units), want %d with the payload", a.Sequence, len(a.Nalus), want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no access unit %d", want)
		}
	}

	// Nobody else listens: fed to the hub, not published.
	before := b.Stats().InBytes
	for range 5 {
		write()
	}
	_ = b.Conn().Flush()
	if in := b.Stats().InBytes - before; in >= int64(len(payload)) {
		t.Fatalf("%d bytes went through the bus with no one else subscribed", in)
	}
	for i := uint64(1); i <= 5; i++ {
		got(i)
	}

	// Another subscriber: published for it, still fed once to the hub.
	other, err := b.Conn().SubscribeSync(b.Subjects().Video("cam"))
	if err != nil {
		t.Fatal(err)
	}
	_ = b.Conn().Flush()
	write()
	m, err := other.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("the other subscriber got nothing: %v", err)
	}
	var a busv1.AccessUnit
	if err := bus.UnmarshalAccessUnit(m.Data, &a); err != nil || a.Sequence != 6 {
		t.Fatalf("other subscriber: access unit %d, %v", a.Sequence, err)
	}
	got(6)
	_ = other.Unsubscribe()

	// Released (the camera stopped here): published, the hub reads the bus.
	release()
	_ = b.Conn().Flush()
	write()
	got(7)
	select {
	case a := <-r.C():
		t.Fatalf("access unit %d delivered twice or out of turn", a.Sequence)
	case <-time.After(200 * time.Millisecond):
	}
}
