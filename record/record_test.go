package record

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/pmp4"
	"go.uber.org/goleak"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/bus/hub"
	"github.com/imageflowcanvas/imageflow/internal/testkit"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	"github.com/imageflowcanvas/imageflow/server/blob"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect"),
		goleak.IgnoreTopFunction("time.Sleep"),
	)
}

type env struct {
	bus   *bus.Bus
	hub   *hub.Hub
	store blob.Store
}

func startEnv(t testing.TB) *env {
	t.Helper()
	b := &bus.Bus{Config: bus.Config{DataDir: t.TempDir()}}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	h := hub.New(b.Conn(), b.Subjects())
	t.Cleanup(func() { h.Close(); b.Close() })
	return &env{bus: b, hub: h, store: blob.NewJetStream(b.Objects())}
}

func (e *env) manager(t testing.TB) *Manager {
	t.Helper()
	m := &Manager{Config: Config{Store: e.store, Index: e.bus.KV(bus.BucketRecordings), Video: e.hub,
		Conn: e.bus.Conn(), Subjects: e.bus.Subjects(), SegmentDuration: time.Second, FragmentDuration: 500 * time.Millisecond}}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// publishClip puts a real 30 fps H264 clip (a keyframe every 30 pictures)
// on the camera's video subject, timestamped from base.
func (e *env) publishClip(t *testing.T, cam string, aus [][][]byte, base time.Time) {
	t.Helper()
	for i, au := range aus {
		e.publishAU(t, cam, au, int64(i)*int64(time.Second)/30, base)
	}
}

// publishAU puts one access unit with presentation time pts on the bus.
func (e *env) publishAU(t testing.TB, cam string, au [][]byte, pts int64, base time.Time) {
	t.Helper()
	key := false
	for _, n := range au {
		if len(n) > 0 && n[0]&0x1f == 5 {
			key = true
		}
	}
	msg := &busv1.AccessUnit{Camera: cam, Codec: busv1.Codec_CODEC_H264, Pts: pts, Keyframe: key, Nalus: au,
		ClockRate: 90000, IngestUnixNano: base.UnixNano() + pts}
	if err := bus.Publish(e.bus.Conn(), e.bus.Subjects().Video(cam), msg); err != nil {
		t.Fatal(err)
	}
}

func completeSegments(m *Manager, cam string) []Segment {
	var out []Segment
	for _, s := range m.Segments(cam, time.Time{}, time.Now().Add(time.Hour)) {
		if s.Complete {
			out = append(out, s)
		}
	}
	return out
}

// samplesIn parses a stored segment as fMP4 and counts its video samples.
func samplesIn(t *testing.T, m *Manager, s Segment) int {
	t.Helper()
	data, err := m.SegmentFile(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	var init fmp4.Init
	if err := init.Unmarshal(bytes.NewReader(data)); err != nil {
		t.Fatalf("segment %s init: %v", s.Start, err)
	}
	var parts fmp4.Parts
	if err := parts.Unmarshal(data); err != nil {
		t.Fatalf("segment %s parts: %v", s.Start, err)
	}
	n := 0
	for i, p := range parts {
		for _, tr := range p.Tracks {
			if tr.ID != videoTrackID {
				continue
			}
			if i == 0 && tr.Samples[0].IsNonSyncSample {
				t.Fatalf("segment %s does not start on a keyframe", s.Start)
			}
			n += len(tr.Samples)
		}
	}
	return n
}

// TestRecordSegmentsAndExport records 4 s of a clip into 1 s segments of
// 0.5 s fragments, then exports ranges of it.
func TestRecordSegmentsAndExport(t *testing.T) {
	e := startEnv(t)
	m := e.manager(t)
	if err := m.Record("cam", Settings{}); err != nil {
		t.Fatal(err)
	}
	aus := testkit.H264Clip(t, 4)
	base := time.Now().Add(-10 * time.Second).Truncate(time.Second)
	e.publishClip(t, "cam", aus, base)
	// The camera goes quiet: its last segment closes by itself.
	testkit.WaitFor(t, 20*time.Second, "4 complete segments", func() bool { return len(completeSegments(m, "cam")) == 4 })
	segs := completeSegments(m, "cam")
	total := 0
	for i, s := range segs {
		if s.Parts != 2 || s.Codec != "h264" {
			t.Fatalf("segment %d: %+v", i, s)
		}
		// Within a tick or so of the 90 kHz clock.
		if d := s.End.Sub(s.Start); d < time.Second-time.Millisecond || d > time.Second+time.Millisecond {
			t.Fatalf("segment %d lasts %v", i, d)
		}
		total += samplesIn(t, m, s)
	}
	if total != len(aus) {
		t.Fatalf("%d pictures stored of %d", total, len(aus))
	}
	if g := Gaps(segs); len(g) != 0 || !segs[0].Start.Equal(base) {
		t.Fatalf("gaps %v, first start %v (want %v)", g, segs[0].Start, base)
	}

	// From 1.5 s: the keyframe at 1 s, up to 3.2 s: 2.2 s of pictures.
	out, err := m.Export(context.Background(), "cam", base.Add(1500*time.Millisecond), base.Add(3200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	var pres pmp4.Presentation
	if err := pres.Unmarshal(bytes.NewReader(out)); err != nil {
		t.Fatalf("export is no MP4: %v", err)
	}
	if len(pres.Tracks) != 1 || len(pres.Tracks[0].Samples) != 66 || pres.Tracks[0].Samples[0].IsNonSyncSample {
		t.Fatalf("export: %d tracks, %d samples", len(pres.Tracks), len(pres.Tracks[0].Samples))
	}

	for _, bad := range [][2]time.Time{{base, base}, {base.Add(time.Second), base}, {base, base.Add(MaxExport + time.Second)}} {
		if _, err := m.Export(context.Background(), "cam", bad[0], bad[1]); err == nil || !strings.Contains(err.Error(), ErrRange.Error()) {
			t.Fatalf("range %v: %v", bad, err)
		}
	}
	if _, err := m.Export(context.Background(), "cam", base.Add(-10*time.Minute), base.Add(-time.Minute)); err != ErrNoRecording {
		t.Fatalf("empty range: %v", err)
	}
}

// TestRepairAfterCrash builds the states an unclean stop leaves behind and
// checks that the next start makes the index and the store agree.
func TestRepairAfterCrash(t *testing.T) {
	e := startEnv(t)
	ctx := context.Background()
	m := e.manager(t)
	if err := m.Record("cam", Settings{}); err != nil {
		t.Fatal(err)
	}
	e.publishClip(t, "cam", testkit.H264Clip(t, 4), time.Now().Add(-time.Minute))
	testkit.WaitFor(t, 20*time.Second, "4 complete segments", func() bool { return len(completeSegments(m, "cam")) == 4 })
	segs := completeSegments(m, "cam")
	m.Close()

	kv := e.bus.KV(bus.BucketRecordings)
	putEntry := func(s Segment) {
		b, _ := json.Marshal(s)
		if _, err := kv.Put(ctx, s.kvKey(), b); err != nil {
			t.Fatal(err)
		}
	}
	// 0: still open in the index, which names one part; the store has two
	// (the crash came between storing part 2 and indexing it).
	open := segs[0]
	open.Complete, open.Parts = false, 1
	putEntry(open)
	// 1: its second part went missing.
	if err := e.store.Delete(ctx, segs[1].partKey(2)); err != nil {
		t.Fatal(err)
	}
	// 2: its init went missing: nothing of it is playable.
	if err := e.store.Delete(ctx, segs[2].initKey()); err != nil {
		t.Fatal(err)
	}
	// An orphan: blobs of a segment the index never heard of.
	orphan := Segment{Camera: "cam", Node: m.Node, Start: time.Unix(0, 12345)}
	for _, k := range []string{orphan.initKey(), orphan.partKey(1)} {
		if err := e.store.Put(ctx, k, strings.NewReader("x"), 1, ""); err != nil {
			t.Fatal(err)
		}
	}
	// Another server sharing the bucket: its open segment and its blobs
	// are not this server's to repair or delete.
	foreign := Segment{Camera: "cam", Node: "other", Start: time.Unix(0, 99999), End: time.Unix(0, 99999).Add(time.Second), Parts: 1}
	putEntry(foreign)
	foreignOrphan := Segment{Camera: "cam", Node: "other", Start: time.Unix(0, 77777)}
	for _, k := range append(foreign.Keys(), foreignOrphan.initKey()) {
		if err := e.store.Put(ctx, k, strings.NewReader("x"), 1, ""); err != nil {
			t.Fatal(err)
		}
	}

	m2 := e.manager(t)
	all := m2.Segments("cam", time.Time{}, time.Now().Add(time.Hour))
	var got []Segment
	for _, s := range all {
		if s.Node == "other" {
			if s.Complete || !s.Start.Equal(foreign.Start) {
				t.Fatalf("another server's segment changed: %+v", s)
			}
			continue
		}
		got = append(got, s)
	}
	if len(got) != 3 || len(all) != 4 {
		t.Fatalf("%d segments after repair, want 3 (and 1 of another server): %+v", len(got), all)
	}
	for _, s := range got {
		if !s.Complete {
			t.Fatalf("segment %s still open", s.Start)
		}
		if s.Start.Equal(segs[0].Start) || s.Start.Equal(segs[1].Start) {
			if s.Parts != 1 {
				t.Fatalf("segment %s has %d parts, want 1", s.Start, s.Parts)
			}
		}
		if samplesIn(t, m2, s) == 0 {
			t.Fatalf("segment %s empty", s.Start)
		}
	}
	// The store holds exactly what the index names.
	blobs, err := e.store.List(ctx, blobPrefix)
	if err != nil {
		t.Fatal(err)
	}
	named := map[string]bool{foreignOrphan.initKey(): true}
	for _, s := range all {
		for _, k := range s.Keys() {
			named[k] = true
		}
	}
	if len(blobs) != len(named) {
		t.Fatalf("store holds %d blobs, index names %d", len(blobs), len(named))
	}
	for _, b := range blobs {
		if !named[b.Key] {
			t.Fatalf("store holds %s, not in the index", b.Key)
		}
	}
	// The index bucket agrees with the memory copy.
	entries, err := m2.ix.load(ctx)
	if err != nil || len(entries) != 4 {
		t.Fatalf("bucket has %d entries (%v)", len(entries), err)
	}
}

// TestRetentionCaps deletes oldest first by camera size and total size.
func TestRetentionCaps(t *testing.T) {
	e := startEnv(t)
	m := e.manager(t)
	if err := m.Record("a", Settings{}); err != nil {
		t.Fatal(err)
	}
	e.publishClip(t, "a", testkit.H264Clip(t, 4), time.Now().Add(-time.Minute))
	testkit.WaitFor(t, 20*time.Second, "4 complete segments", func() bool { return len(completeSegments(m, "a")) == 4 })
	segs := completeSegments(m, "a")
	keepTwo := segs[2].Size + segs[3].Size
	m.mu.Lock()
	m.settings["a"] = Settings{MaxBytes: keepTwo}
	m.mu.Unlock()
	m.Sweep(context.Background(), time.Now())
	left := completeSegments(m, "a")
	if len(left) != 2 || !left[0].Start.Equal(segs[2].Start) {
		t.Fatalf("after the camera cap: %d segments", len(left))
	}
	m.MaxTotalBytes = segs[3].Size
	m.Sweep(context.Background(), time.Now())
	left = completeSegments(m, "a")
	if len(left) != 1 || !left[0].Start.Equal(segs[3].Start) {
		t.Fatalf("after the total cap: %d segments", len(left))
	}
	// Age: everything ended more than the default retention before "now".
	m.Sweep(context.Background(), time.Now().Add(DefaultRetention+time.Hour))
	if left = completeSegments(m, "a"); len(left) != 0 {
		t.Fatalf("after the retention: %d segments", len(left))
	}
	blobs, err := e.store.List(context.Background(), blobPrefix)
	if err != nil || len(blobs) != 0 {
		t.Fatalf("store still holds %d blobs (%v)", len(blobs), err)
	}
}

// TestRecordAudio records Opus audio beside the video: segments started
// after the audio appeared carry it as a second track, and exports too.
func TestRecordAudio(t *testing.T) {
	e := startEnv(t)
	m := e.manager(t)
	if err := m.Record("av", Settings{}); err != nil {
		t.Fatal(err)
	}
	aus := testkit.H264Clip(t, 4)
	base := time.Now().Add(-time.Minute).Truncate(time.Second)
	frame := []byte{0xfc, 0xff, 0xfe} // an Opus TOC byte and padding: the muxer does not decode
	audioAt := func(pts int64) {
		msg := &busv1.AccessUnit{Camera: "av", Codec: busv1.Codec_CODEC_OPUS, Pts: pts, Keyframe: true, Data: frame,
			ClockRate: 48000, Channels: 2, IngestUnixNano: base.UnixNano() + pts}
		if err := bus.Publish(e.bus.Conn(), e.bus.Subjects().Audio("av"), msg); err != nil {
			t.Fatal(err)
		}
	}
	next := int64(0)
	start := time.Now()
	for i := range aus {
		pts := int64(i) * int64(time.Second) / 30
		// In real time, as a camera sends: audio and video reach the
		// recorder interleaved.
		time.Sleep(time.Until(start.Add(time.Duration(pts))))
		for ; next <= pts; next += int64(20 * time.Millisecond) {
			audioAt(next)
		}
		e.publishAU(t, "av", aus[i], pts, base)
	}
	testkit.WaitFor(t, 20*time.Second, "4 complete segments", func() bool { return len(completeSegments(m, "av")) == 4 })
	segs := completeSegments(m, "av")
	for _, s := range segs[1:] {
		if s.Audio != "opus" {
			t.Fatalf("segment %s: audio %q", s.Start, s.Audio)
		}
	}
	out, err := m.Export(context.Background(), "av", segs[1].Start, segs[3].Start)
	if err != nil {
		t.Fatal(err)
	}
	// ffprobe reads both tracks of the plain MP4.
	testkit.NeedCommand(t, "ffprobe")
	path := filepath.Join(t.TempDir(), "av.mp4")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	probe, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "stream=codec_name,nb_frames", "-of", "csv=p=0", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe: %v: %s", err, probe)
	}
	lines := strings.Fields(string(probe))
	if len(lines) != 2 || lines[0] != "h264,60" {
		t.Fatalf("export streams: %q", lines)
	}
	// 2 s of 20 ms frames, give or take the one held back at each cut.
	var n int
	if _, err := fmt.Sscanf(lines[1], "opus,%d", &n); err != nil || n < 95 || n > 101 {
		t.Fatalf("export audio: %q", lines[1])
	}
}

// TestIndexSharedByNodes runs two managers on one bucket and store, as two
// nodes of a cluster: each lists what the other records as it is written,
// and retention on one never deletes the other's segments.
func TestIndexSharedByNodes(t *testing.T) {
	e := startEnv(t)
	nodeManager := func(node string) *Manager {
		m := &Manager{Config: Config{Store: e.store, Index: e.bus.KV(bus.BucketRecordings), Video: e.hub, Node: node,
			SegmentDuration: time.Second, FragmentDuration: 500 * time.Millisecond}}
		if err := m.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(m.Close)
		return m
	}
	a, b := nodeManager("a"), nodeManager("b")
	if err := a.Record("cam", Settings{}); err != nil {
		t.Fatal(err)
	}
	e.publishClip(t, "cam", testkit.H264Clip(t, 3), time.Now().Add(-time.Minute))
	testkit.WaitFor(t, 20*time.Second, "node b lists node a's 3 segments", func() bool { return len(completeSegments(b, "cam")) == 3 })
	for _, s := range completeSegments(b, "cam") {
		if s.Node != "a" {
			t.Fatalf("segment %s written by %q, want a", s.Start, s.Node)
		}
		if n := samplesIn(t, b, s); n != 30 {
			t.Fatalf("node b reads %d pictures of a segment, want 30", n)
		}
	}
	later := time.Now().Add(DefaultRetention + time.Hour)
	b.Sweep(context.Background(), later)
	if n := len(completeSegments(b, "cam")); n != 3 {
		t.Fatalf("node b's retention left %d of node a's 3 segments", n)
	}
	a.Stop("cam")
	a.Sweep(context.Background(), later)
	testkit.WaitFor(t, 10*time.Second, "node b sees node a's deletions", func() bool { return len(b.Segments("cam", time.Time{}, later)) == 0 })
}

// publishRun puts aus on the bus as one ingest session whose presentation
// times start at ptsOrigin (a timeline of its own) and whose first picture
// was taken at wall.
func (e *env) publishRun(t *testing.T, cam string, aus [][][]byte, ptsOrigin time.Duration, wall time.Time) {
	t.Helper()
	base := wall.Add(-ptsOrigin)
	for i, au := range aus {
		e.publishAU(t, cam, au, int64(ptsOrigin)+int64(i)*int64(time.Second)/30, base)
	}
}

// probeExport writes an export to a file and reads it back with ffprobe:
// its duration, its video packets, and whether their decode times grow.
func probeExport(t *testing.T, mp4 []byte) (duration float64, packets int, monotonic bool) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "export.mp4")
	if err := os.WriteFile(file, mp4, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "format=duration:packet=dts",
		"-of", "default=nw=1", file).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe: %v: %s", err, out)
	}
	monotonic = true
	last := int64(-1 << 62)
	for _, line := range strings.Fields(string(out)) {
		if v, ok := strings.CutPrefix(line, "dts="); ok {
			var dts int64
			if _, err := fmt.Sscan(v, &dts); err != nil {
				t.Fatalf("ffprobe dts %q: %v", v, err)
			}
			if dts <= last {
				monotonic = false
			}
			last = dts
			packets++
		}
		if v, ok := strings.CutPrefix(line, "duration="); ok {
			if _, err := fmt.Sscan(v, &duration); err != nil {
				t.Fatalf("ffprobe duration %q: %v", v, err)
			}
		}
	}
	return duration, packets, monotonic
}

// recordTwoSessions records camera "cam": 3 s of a 30 fps clip from wall,
// then 2 s of it on a decode timeline counting from 1000 s (an ingest
// restart), its first picture ingested restartAfter after wall.
func recordTwoSessions(t *testing.T, restartAfter time.Duration, newRecorder bool) (m *Manager, wall time.Time) {
	t.Helper()
	e := startEnv(t)
	m = e.manager(t)
	if err := m.Record("cam", Settings{}); err != nil {
		t.Fatal(err)
	}
	clip := testkit.H264Clip(t, 3)
	wall = time.Now().Add(-time.Minute).Truncate(time.Second)
	e.publishRun(t, "cam", clip, 0, wall)
	if newRecorder {
		// As when the camera's lease is lost and won again on this node.
		testkit.WaitFor(t, 20*time.Second, "the first session's 3 segments", func() bool { return len(completeSegments(m, "cam")) == 3 })
		m.Stop("cam")
		if err := m.Record("cam", Settings{}); err != nil {
			t.Fatal(err)
		}
	}
	e.publishRun(t, "cam", clip[:60], 1000*time.Second, wall.Add(restartAfter))
	return m, wall
}

// TestExportJoinsIngestRestarts records two ingest sessions of one camera
// whose decode timelines have nothing in common (the second counts from
// 1000 s), 2 s apart on the wall clock, and exports a range over both: the
// hole is closed, every picture is there once and decode times only grow.
func TestExportJoinsIngestRestarts(t *testing.T) {
	m, wall := recordTwoSessions(t, 5*time.Second, false)
	testkit.WaitFor(t, 20*time.Second, "5 complete segments", func() bool { return len(completeSegments(m, "cam")) == 5 })
	near := func(a, b time.Time) bool { return a.Sub(b).Abs() < time.Millisecond }
	if g := Gaps(completeSegments(m, "cam")); len(g) != 1 || !near(g[0].Start, wall.Add(3*time.Second)) || !near(g[0].End, wall.Add(5*time.Second)) {
		t.Fatalf("gaps %+v, want one from 3 s to 5 s after %s", g, wall)
	}
	mp4, err := m.Export(context.Background(), "cam", wall, wall.Add(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	duration, packets, monotonic := probeExport(t, mp4)
	t.Logf("export over an ingest restart: %.3f s, %d pictures, decode times growing: %v", duration, packets, monotonic)
	if packets != 150 || !monotonic || duration < 4.95 || duration > 5.05 {
		t.Fatalf("export over an ingest restart: %.3f s, %d pictures, decode times growing %v; want 5 s, 150, true", duration, packets, monotonic)
	}
}

// TestRecorderSessionsNeverOverlap restarts a camera's timeline with its
// first keyframe ingested 5 ms before the previous segment's end (clock
// jitter after the hub dropped pictures, or a source ahead of the clock, as
// seen in CI), on the same recorder and on a new one of the same node: the
// new segment starts where the last ended, not before it.
func TestRecorderSessionsNeverOverlap(t *testing.T) {
	for _, newRecorder := range []bool{false, true} {
		t.Run(fmt.Sprintf("newRecorder=%v", newRecorder), func(t *testing.T) {
			m, wall := recordTwoSessions(t, 3*time.Second-5*time.Millisecond, newRecorder)
			testkit.WaitFor(t, 20*time.Second, "4 complete segments", func() bool { return len(completeSegments(m, "cam")) == 4 })
			segs := completeSegments(m, "cam")
			for i := 1; i < len(segs); i++ {
				if segs[i].Start.Before(segs[i-1].End) {
					t.Fatalf("segment %d starts %s before the previous one ends: %+v then %+v", i, segs[i-1].End.Sub(segs[i].Start), segs[i-1], segs[i])
				}
			}
			if got, want := segs[3].Start, wall.Add(3*time.Second); got.Sub(want).Abs() > time.Millisecond {
				t.Fatalf("the restarted session starts at %s, want %s (where the last segment ended)", got, want)
			}
		})
	}
}

// TestExportJoinsNodesOverlapping records a camera on node a for 3 s, then
// on node b (its own ingest, its own timeline) from 2.5 s to 5.5 s, as a
// handover where both recorded for half a second; plus a segment stored with
// decode times that do not start at zero (a writer counting from its
// ingest's start). The export keeps each wall-clock second once.
func TestExportJoinsNodesOverlapping(t *testing.T) {
	e := startEnv(t)
	nodeManager := func(node string) *Manager {
		m := &Manager{Config: Config{Store: e.store, Index: e.bus.KV(bus.BucketRecordings), Video: e.hub, Node: node,
			SegmentDuration: time.Second, FragmentDuration: 500 * time.Millisecond}}
		if err := m.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(m.Close)
		return m
	}
	a, b := nodeManager("a"), nodeManager("b")
	clip := testkit.H264Clip(t, 3)
	wall := time.Now().Add(-time.Minute).Truncate(time.Second)
	if err := a.Record("cam", Settings{}); err != nil {
		t.Fatal(err)
	}
	e.publishRun(t, "cam", clip, 0, wall)
	testkit.WaitFor(t, 20*time.Second, "node a's 3 segments", func() bool { return len(completeSegments(b, "cam")) == 3 })
	a.Stop("cam")
	if err := b.Record("cam", Settings{}); err != nil {
		t.Fatal(err)
	}
	e.publishRun(t, "cam", clip, 40*time.Second, wall.Add(2500*time.Millisecond))
	testkit.WaitFor(t, 20*time.Second, "6 segments", func() bool { return len(completeSegments(a, "cam")) == 6 })
	b.Stop("cam")

	mp4, err := a.Export(context.Background(), "cam", wall, wall.Add(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	duration, packets, monotonic := probeExport(t, mp4)
	t.Logf("export over an overlapping handover: %.3f s, %d pictures, decode times growing: %v", duration, packets, monotonic)
	// Node a's pictures from 2.5 s give way to node b's: 75 + 90.
	if packets != 165 || !monotonic || duration < 5.45 || duration > 5.55 {
		t.Fatalf("export over an overlapping handover: %.3f s, %d pictures, decode times growing %v; want 5.5 s, 165, true", duration, packets, monotonic)
	}

	// Node c stores node b's last segment again, 2 s after it ends, with
	// decode times counted from 10 hours: rebased onto its start, it adds
	// its 1 s after a closed hole.
	last := completeSegments(a, "cam")[5]
	data, err := a.SegmentFile(context.Background(), last)
	if err != nil {
		t.Fatal(err)
	}
	var parts fmp4.Parts
	if err := parts.Unmarshal(data); err != nil {
		t.Fatal(err)
	}
	c := last
	c.Node, c.Start, c.End = "c", last.End.Add(2*time.Second), last.End.Add(3*time.Second)
	initBlob, err := a.readBlob(context.Background(), last.initKey())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.Put(context.Background(), c.initKey(), bytes.NewReader(initBlob), int64(len(initBlob)), "video/mp4"); err != nil {
		t.Fatal(err)
	}
	for i, p := range parts {
		for _, tr := range p.Tracks {
			tr.BaseTime += 10 * 3600 * videoTimeScale
		}
		var buf seekablebuffer.Buffer
		if err := p.Marshal(&buf); err != nil {
			t.Fatal(err)
		}
		if err := e.store.Put(context.Background(), c.partKey(i+1), bytes.NewReader(buf.Bytes()), int64(len(buf.Bytes())), "video/iso.segment"); err != nil {
			t.Fatal(err)
		}
	}
	c.Parts = len(parts)
	if err := a.ix.put(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	mp4, err = a.Export(context.Background(), "cam", wall, wall.Add(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	duration, packets, monotonic = probeExport(t, mp4)
	t.Logf("export with a segment counting from 10 h: %.3f s, %d pictures, decode times growing: %v", duration, packets, monotonic)
	if packets != 195 || !monotonic || duration < 6.45 || duration > 6.55 {
		t.Fatalf("export with a segment counting from 10 h: %.3f s, %d pictures, decode times growing %v; want 6.5 s, 195, true", duration, packets, monotonic)
	}
}

// TestIndexCatchUp starts a node's watch of the index two seconds late, as
// when its consumer is recreated after a cluster node died: a query that
// first catches up waits for it and sees every segment another node wrote.
func TestIndexCatchUp(t *testing.T) {
	e := startEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	writer := newIndex(e.bus.KV(bus.BucketRecordings))
	start := time.Now().Add(-time.Minute).Truncate(time.Second)
	for i := range 5 {
		s := Segment{Camera: "cam", Node: "a", Start: start.Add(time.Duration(i) * time.Second), End: start.Add(time.Duration(i+1) * time.Second),
			Codec: "h264", Parts: 1, Complete: true}
		if err := writer.put(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	late := newIndex(e.bus.KV(bus.BucketRecordings))
	followed := make(chan error, 1)
	go func() {
		time.Sleep(2 * time.Second)
		followed <- late.follow(ctx, slog.Default())
	}()
	began := time.Now()
	if !late.catchUp(ctx) {
		t.Fatalf("catchUp gave up after %s", time.Since(began))
	}
	if err := <-followed; err != nil {
		t.Fatal(err)
	}
	if n := len(late.between("cam", start, start.Add(time.Hour))); n != 5 {
		t.Fatalf("after catching up (%s) the index lists %d of 5 segments", time.Since(began), n)
	}
	t.Logf("caught up with a watch started 2 s late in %s", time.Since(began).Round(time.Millisecond))
}
