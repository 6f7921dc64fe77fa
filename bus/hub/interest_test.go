package hub

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/ingest"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

func waitUntil(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The hub holds a camera's video subscription only while the camera has
// readers or a Keep, and lets it go one linger after the last of them; a
// reader coming back within the linger keeps the same subscription.
func TestSubscribesOnlyWhileRead(t *testing.T) {
	h, _ := newHub(t)
	h.Linger = 200 * time.Millisecond
	if h.Subscribed("cam") {
		t.Fatal("subscribed before any reader")
	}
	r, err := h.Subscribe("cam", "test", 4)
	if err != nil {
		t.Fatal(err)
	}
	if !h.Subscribed("cam") {
		t.Fatal("not subscribed with a reader")
	}
	r.Close()
	if !h.Subscribed("cam") {
		t.Fatal("unsubscribed at once: a reload would resubscribe")
	}
	// Back within the linger: the timer is stopped.
	r, _ = h.Subscribe("cam", "test", 4)
	time.Sleep(400 * time.Millisecond)
	if !h.Subscribed("cam") {
		t.Fatal("unsubscribed while read")
	}
	release := h.Keep("cam")
	r.Close()
	time.Sleep(400 * time.Millisecond)
	if !h.Subscribed("cam") {
		t.Fatal("unsubscribed while kept")
	}
	release()
	release() // a second call does nothing
	waitUntil(t, 5*time.Second, "the unsubscribe after the linger", func() bool { return !h.Subscribed("cam") })
	h.mu.Lock()
	c := h.cams["cam"]
	h.mu.Unlock()
	if c != nil {
		t.Fatal("camera state kept after unsubscribing")
	}
}

// cluster is two nats-servers joined by a route (no JetStream: the hub
// needs only core NATS), a connection to each and a hub on each.
type cluster struct {
	servers [2]*server.Server
	conns   [2]*nats.Conn
	hubs    [2]*Hub
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	cl := &cluster{}
	for i := range cl.servers {
		opts := &server.Options{ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
			Cluster: server.ClusterOpts{Name: "hubtest", Host: "127.0.0.1", Port: -1}}
		if i > 0 {
			opts.Routes = server.RoutesFromStr("nats-route://" + cl.servers[0].ClusterAddr().String())
		}
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatal("server not ready")
		}
		cl.servers[i] = s
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	}
	waitUntil(t, 10*time.Second, "the route", func() bool {
		return cl.servers[0].NumRoutes() > 0 && cl.servers[1].NumRoutes() > 0
	})
	subjects := bus.Subjects{Prefix: "ifc"}
	for i, s := range cl.servers {
		nc, err := nats.Connect(s.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		cl.conns[i] = nc
		cl.hubs[i] = New(nc, subjects)
		cl.hubs[i].Linger = 200 * time.Millisecond
		t.Cleanup(func() { cl.hubs[i].Close(); nc.Close() })
	}
	return cl
}

// routeInterest reports whether node 1 forwards subject over its routes
// (node 2 has a subscription matching it), and the bytes node 1 sent over
// its routes so far.
func (cl *cluster) routeInterest(t *testing.T, subject string) (bool, int64) {
	t.Helper()
	rz, err := cl.servers[0].Routez(&server.RoutezOptions{Subscriptions: true})
	if err != nil {
		t.Fatal(err)
	}
	interest := false
	var out int64
	for _, r := range rz.Routes {
		out += r.OutBytes
		for _, s := range r.Subs {
			if server.SubjectsCollide(s, subject) {
				interest = true
			}
		}
	}
	return interest, out
}

// feeder publishes a camera's access units on node 1 at a steady rate, a
// keyframe every gop.
type feeder struct {
	stop chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	seq  uint64
}

func startFeeder(t *testing.T, nc *nats.Conn, cam string, gop int, every time.Duration) *feeder {
	f := &feeder{stop: make(chan struct{})}
	payload := make([]byte, 10_000)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-f.stop:
				return
			case <-tick.C:
			}
			f.mu.Lock()
			f.seq++
			seq := f.seq
			f.mu.Unlock()
			au := &busv1.AccessUnit{Camera: cam, Codec: busv1.Codec_CODEC_H264, Keyframe: seq%uint64(gop) == 1,
				Sequence: seq, CompleteUnixNano: time.Now().UnixNano(), Nalus: [][]byte{payload}}
			if err := bus.Publish(nc, "ifc.video."+cam, au); err != nil {
				return
			}
		}
	}()
	t.Cleanup(f.close)
	return f
}

func (f *feeder) close() {
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
	f.wg.Wait()
}

func (f *feeder) published() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seq
}

// A camera ingested on node 1 (its hub keeps it) sends nothing over the
// route while node 2 has no reader. A reader joining on node 2 starts at
// once on the GOP node 1's hub kept (fetched by request), followed by the
// live video with no access unit missing or repeated; then the route
// carries the camera. After the reader leaves and the linger passes, the
// route carries it no more.
func TestRemoteReaderFetchesGOPAndRouteCarriesVideoOnlyWhileRead(t *testing.T) {
	cl := startCluster(t)
	const cam = "cam"
	subject := "ifc.video." + cam
	defer cl.hubs[0].Keep(cam)()
	_ = cl.conns[0].Flush()
	// A 3 s GOP at 50 access units a second: a joiner waiting for the next
	// keyframe would wait seconds.
	f := startFeeder(t, cl.conns[0], cam, 150, 20*time.Millisecond)

	waitUntil(t, 5*time.Second, "ten access units", func() bool { return f.published() >= 10 })
	interest, out0 := cl.routeInterest(t, subject)
	if interest {
		t.Fatal("node 2 subscribed to the video with no reader")
	}
	time.Sleep(time.Second)
	_, out1 := cl.routeInterest(t, subject)
	sent := f.published() * 10_000
	t.Logf("no reader on node 2: route carried %d bytes while node 1 published ~%d bytes of video", out1-out0, sent)
	if uint64(out1-out0) > sent/20 {
		t.Fatalf("route carried %d bytes of ~%d published without a reader", out1-out0, sent)
	}

	joined := time.Now()
	r, err := cl.hubs[1].SubscribeLatest(cam, "test", 64)
	if err != nil {
		t.Fatal(err)
	}
	var got []*busv1.AccessUnit
	deadline := time.After(10 * time.Second)
	for len(got) < 100 {
		select {
		case au := <-r.C():
			if len(got) == 0 {
				t.Logf("first access unit %v after joining (sequence %d, keyframe %v; %d published)",
					time.Since(joined).Round(time.Millisecond), au.Sequence, au.Keyframe, f.published())
			}
			got = append(got, au)
		case <-deadline:
			t.Fatalf("got %d access units", len(got))
		}
	}
	if !got[0].Keyframe || got[0].Sequence != 1 {
		t.Fatalf("started on sequence %d (keyframe %v), want the kept keyframe 1", got[0].Sequence, got[0].Keyframe)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Sequence != got[i-1].Sequence+1 {
			seqs := make([]uint64, 0, len(got))
			for _, au := range got {
				seqs = append(seqs, au.Sequence)
			}
			t.Fatalf("sequence %d after %d: %v", got[i].Sequence, got[i-1].Sequence, seqs)
		}
	}
	interest, out0 = cl.routeInterest(t, subject)
	if !interest {
		t.Fatal("no route interest with a reader on node 2")
	}
	time.Sleep(time.Second)
	_, out1 = cl.routeInterest(t, subject)
	if out1-out0 < 40*10_000 {
		t.Fatalf("route carried %d bytes in 1 s with a reader (50 access units of 10 kB a second)", out1-out0)
	}
	t.Logf("reader on node 2: route carried %d bytes in 1 s", out1-out0)

	r.Close()
	waitUntil(t, 5*time.Second, "node 2's hub letting the camera go", func() bool { return !cl.hubs[1].Subscribed(cam) })
	waitUntil(t, 5*time.Second, "the route interest going", func() bool {
		interest, _ := cl.routeInterest(t, subject)
		return !interest
	})
	// Node 1 stays subscribed: the camera is ingested there.
	if !cl.hubs[0].Subscribed(cam) {
		t.Fatal("the ingest node's hub let the kept camera go")
	}
}

// A reader joining a camera that no hub keeps waits for the next keyframe
// (nobody answers the GOP request), and GOP replies round-trip.
func TestGOPWithoutPeerAndEncoding(t *testing.T) {
	h, b := newHub(t)
	r, err := h.SubscribeLatest("cam", "test", 8)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	waitUntil(t, 5*time.Second, "the GOP request to end", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return !h.cams["cam"].fetching
	})
	publish(t, b, 1, false)
	publish(t, b, 2, true)
	select {
	case au := <-r.C():
		if au.Sequence != 2 {
			t.Fatalf("got %d, want the keyframe 2", au.Sequence)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no keyframe")
	}

	gop := []*busv1.AccessUnit{{Sequence: 7, Keyframe: true, Nalus: [][]byte{{0x65, 1}}}, {Sequence: 8, Data: []byte{1, 2, 3}}}
	data, err := encodeGOP(gop)
	if err != nil {
		t.Fatal(err)
	}
	back, err := decodeGOP(data)
	if err != nil || len(back) != 2 || back[0].Sequence != 7 || !back[0].Keyframe || back[1].Sequence != 8 {
		t.Fatalf("decoded %v, %v", back, err)
	}
	for _, bad := range [][]byte{{0xff}, {5, 1, 2}, slices.Concat(data, []byte{0x80})} {
		if _, err := decodeGOP(bad); err == nil {
			t.Fatalf("decoded %x", bad)
		}
	}
}

// startLocalFeeder is startFeeder for a camera ingested next to node 1's
// hub, as serve runs one: an ingest.BusSink feeding the hub (KeepLocal)
// and publishing on node 1 only while someone else subscribes.
func startLocalFeeder(t *testing.T, cl *cluster, cam string, gop int, every time.Duration) (*feeder, func()) {
	feed, release := cl.hubs[0].KeepLocal(cam)
	sink := ingest.NewBusSink(cl.conns[0], bus.Subjects{Prefix: "ifc"}, cam, nil)
	sink.FeedLocal(feed, cl.servers[0].GlobalAccount().SubscriptionInterest)
	f := &feeder{stop: make(chan struct{})}
	payload := make([]byte, 10_000)
	au := &busv1.AccessUnit{Codec: busv1.Codec_CODEC_H264, Nalus: [][]byte{payload}}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-f.stop:
				return
			case <-tick.C:
			}
			f.mu.Lock()
			f.seq++
			seq := f.seq
			f.mu.Unlock()
			// One message reused, as the ingest does.
			au.Sequence, au.Keyframe, au.IngestUnixNano = seq, seq%uint64(gop) == 1, 0
			if err := sink.WriteAccessUnit(au); err != nil {
				return
			}
		}
	}()
	t.Cleanup(f.close)
	return f, release
}

// A camera fed in-process to node 1's hub is not published while no one
// else reads it; a reader joining on node 2 gets node 1's kept GOP and then
// the live video, which node 1 now publishes, with no access unit missing
// or repeated (the ingest feeds the hub before it publishes).
func TestRemoteReaderOfLocallyFedCamera(t *testing.T) {
	cl := startCluster(t)
	const cam = "cam"
	subject := "ifc.video." + cam
	f, release := startLocalFeeder(t, cl, cam, 150, 20*time.Millisecond)
	defer release()
	local, err := cl.hubs[0].Subscribe(cam, "test", 256)
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()

	waitUntil(t, 5*time.Second, "ten access units", func() bool { return f.published() >= 10 })
	v0, _ := cl.servers[0].Varz(nil)
	time.Sleep(500 * time.Millisecond)
	v1, _ := cl.servers[0].Varz(nil)
	if in := v1.InBytes - v0.InBytes; in > 10_000 {
		t.Fatalf("node 1 took %d bytes from clients with no one but its own hub reading", in)
	}

	r, err := cl.hubs[1].SubscribeLatest(cam, "test", 64)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got []*busv1.AccessUnit
	deadline := time.After(10 * time.Second)
	for len(got) < 100 {
		select {
		case au := <-r.C():
			got = append(got, au)
		case <-deadline:
			t.Fatalf("node 2's reader got %d access units", len(got))
		}
	}
	if !got[0].Keyframe || got[0].Sequence != 1 {
		t.Fatalf("started on sequence %d (keyframe %v), want the kept keyframe 1", got[0].Sequence, got[0].Keyframe)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Sequence != got[i-1].Sequence+1 {
			t.Fatalf("node 2: sequence %d after %d", got[i].Sequence, got[i-1].Sequence)
		}
	}
	if interest, _ := cl.routeInterest(t, subject); !interest {
		t.Fatal("no route interest with a reader on node 2")
	}
	// Node 1's own reader had every access unit once, in order.
	want := uint64(1)
	for len(local.C()) > 0 {
		au := <-local.C()
		if au.Sequence != want {
			t.Fatalf("node 1: sequence %d, want %d", au.Sequence, want)
		}
		want++
	}
	if want < 100 {
		t.Fatalf("node 1's reader got %d access units", want-1)
	}
}
