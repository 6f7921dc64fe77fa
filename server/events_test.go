package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/jpeg"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imageflowcanvas/imageflow/events"
)

// sseReader collects one SSE stream's messages by event name.
type sseReader struct {
	mu   sync.Mutex
	msgs map[string][][]byte
	done chan struct{}
	err  error
}

func readSSEStream(t *testing.T, ctx context.Context, url, token string) *sseReader {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		resp.Body.Close()
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	r := &sseReader{msgs: map[string][][]byte{}, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var name string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				name = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				r.mu.Lock()
				r.msgs[name] = append(r.msgs[name], []byte(line[len("data: "):]))
				r.mu.Unlock()
			}
		}
		r.err = sc.Err()
	}()
	return r
}

func (r *sseReader) get(name string) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.msgs[name]...)
}

type resultMsg struct {
	Sequence   string `json:"sequence"`
	Detections []struct {
		Label   string `json:"label"`
		TrackID string `json:"track_id"`
	} `json:"detections"`
}

// The demo camera (vtest.avi, HOG people) yields person events with tracks:
// results carry track ids that stay on a walker for many frames (the mean
// track length is printed), events listed by the API have a snapshot that is
// a JPEG with the box drawn and a crop, a live SSE subscriber that joined
// late gets the new events, and MQTT clients get them on
// ifc/events/demo with a token as password and are refused without one.
func TestDemoEventsTracksSnapshotsSSEAndMQTT(t *testing.T) {
	if _, err := exec.LookPath("mosquitto_sub"); err != nil {
		t.Fatal("mosquitto_sub not installed (Debian mosquitto-clients)")
	}
	const token = "events-admin-token"
	cfg := testConfig(t.TempDir())
	cfg.Demo = true
	cfg.APITokens = []string{token}
	cfg.MQTTAddr = "127.0.0.1:0"
	ts := startServer(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	mqttHost, mqttPort, _ := strings.Cut(ts.srv.Addrs().MQTT, ":")
	if mqttPort == "" {
		t.Fatalf("no MQTT address in %+v", ts.srv.Addrs())
	}
	// Refused without credentials, with a wrong token, and asking for video.
	for _, args := range [][]string{{}, {"-u", "x", "-P", "not-a-token"}} {
		cmd := exec.CommandContext(ctx, "mosquitto_sub", append([]string{"-h", mqttHost, "-p", mqttPort, "-t", "ifc/events/demo", "-C", "1", "-W", "5"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(strings.ToLower(string(out)), "not authori") {
			t.Fatalf("mosquitto_sub %v: want refused, got err %v, output %q", args, err, out)
		}
	}
	var mqttOut bytes.Buffer
	// A multi-level wildcard, as Home Assistant subscribes.
	mqtt := exec.CommandContext(ctx, "mosquitto_sub", "-h", mqttHost, "-p", mqttPort, "-t", "ifc/events/#", "-u", "ha", "-P", token, "-C", "2", "-W", "90")
	mqtt.Stdout, mqtt.Stderr = &mqttOut, &mqttOut
	if err := mqtt.Start(); err != nil {
		t.Fatal(err)
	}
	mqttDone := make(chan error, 1)
	go func() { mqttDone <- mqtt.Wait() }()

	results := readSSEStream(t, ctx, ts.base+"/api/v1/cameras/demo/results/stream", token)
	time.Sleep(20 * time.Second)
	// A late subscriber: joins after events began.
	late := readSSEStream(t, ctx, ts.base+"/api/v1/events/stream?camera=demo", token)

	var list eventList
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, body, _ := ts.do("GET", "/api/v1/events?camera=demo&label=person", token, nil)
		if st != 200 {
			t.Fatalf("list events: %d %s", st, body)
		}
		if err := json.Unmarshal(body, &list); err != nil {
			t.Fatal(err)
		}
		ended := 0
		for _, e := range list.Items {
			if e.End != nil {
				ended++
			}
		}
		if ended >= 2 && len(late.get("event")) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 80 s: %d events (%d ended), late SSE subscriber got %d", len(list.Items), ended, len(late.get("event")))
		}
		time.Sleep(time.Second)
	}
	for i := 1; i < len(list.Items); i++ {
		if list.Items[i].Start.After(list.Items[i-1].Start) {
			t.Fatalf("events not newest first: %v then %v", list.Items[i-1].Start, list.Items[i].Start)
		}
	}
	checked := 0
	for _, e := range list.Items {
		if e.Label != "person" || e.Camera != "demo" || e.TrackID <= 0 || e.Frames < events.DefaultMinFrames || e.SnapshotURL == "" || e.Zones == nil {
			t.Fatalf("event %+v", e)
		}
		if e.End == nil || checked >= 3 {
			continue
		}
		checked++
		st, snap, h := ts.do("GET", e.SnapshotURL, token, nil)
		if st != 200 || h.Get("Content-Type") != "image/jpeg" {
			t.Fatalf("snapshot %s: %d %s", e.SnapshotURL, st, h.Get("Content-Type"))
		}
		img, err := jpeg.Decode(bytes.NewReader(snap))
		if err != nil {
			t.Fatalf("snapshot of %s is no JPEG: %v", e.ID, err)
		}
		if img.Bounds().Dx() != e.FrameWidth || img.Bounds().Dy() != e.FrameHeight {
			t.Fatalf("snapshot %v, event says %dx%d", img.Bounds(), e.FrameWidth, e.FrameHeight)
		}
		if f := boxEdgeRedness(img, e.BestBox); f < 0.6 {
			t.Fatalf("event %s: only %.0f%% of the box's top edge is drawn red", e.ID, f*100)
		}
		st, crop, _ := ts.do("GET", e.CropURL, token, nil)
		cimg, err := jpeg.Decode(bytes.NewReader(crop))
		if st != 200 || err != nil {
			t.Fatalf("crop: %d %v", st, err)
		}
		if dx, dy := cimg.Bounds().Dx(), cimg.Bounds().Dy(); dx > int(e.BestBox.W)+1 || dy > int(e.BestBox.H)+1 || dx < 8 || dy < 8 {
			t.Fatalf("crop %dx%d for box %+v", dx, dy, e.BestBox)
		}
		st, one, _ := ts.do("GET", "/api/v1/events/"+e.ID, token, nil)
		if st != 200 || !bytes.Contains(one, []byte(e.ID)) {
			t.Fatalf("get event: %d %s", st, one)
		}
	}
	if checked == 0 {
		t.Fatal("no ended event to check")
	}
	for _, b := range late.get("event") {
		var ev events.Event
		if err := json.Unmarshal(b, &ev); err != nil || ev.ID == "" || ev.Camera != "demo" {
			t.Fatalf("SSE event %s: %v", b, err)
		}
	}

	// Track ids: how many consecutive results each id stays on.
	lengths := map[string]int{}
	for _, b := range results.get("result") {
		var r resultMsg
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("result %s: %v", b, err)
		}
		for _, d := range r.Detections {
			if d.TrackID == "" || d.TrackID == "0" {
				t.Fatalf("detection without track id in %s", b)
			}
			lengths[d.TrackID]++
		}
	}
	total := 0
	for _, n := range lengths {
		total += n
	}
	if len(lengths) == 0 {
		t.Fatal("no detections in the results stream")
	}
	mean := float64(total) / float64(len(lengths))
	t.Logf("demo camera: %d results, %d detections in %d tracks, mean track length %.1f results", len(results.get("result")), total, len(lengths), mean)
	if mean < 3 {
		t.Fatalf("mean track length %.1f: ids are not stable", mean)
	}

	select {
	case err := <-mqttDone:
		if err != nil {
			t.Fatalf("mosquitto_sub: %v: %s", err, mqttOut.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("mosquitto_sub got no 2 events: %s", mqttOut.String())
	}
	lines := strings.Split(strings.TrimSpace(mqttOut.String()), "\n")
	for _, l := range lines {
		var ev events.Event
		if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.Camera != "demo" || ev.Label != "person" {
			t.Fatalf("MQTT message %q: %v", l, err)
		}
	}
	t.Logf("mqtt: %d events received on ifc/events/demo", len(lines))
}

// boxEdgeRedness is the fraction of the box's top edge that is drawn red.
func boxEdgeRedness(img image.Image, b events.Box) float64 {
	y := int(b.Y)
	if y < img.Bounds().Min.Y {
		y = img.Bounds().Min.Y
	}
	red, n := 0, 0
	for x := int(b.X) + 2; x < int(b.X+b.W)-2; x++ {
		r, g, bl, _ := img.At(x, y).RGBA()
		n++
		if r>>8 > 150 && g>>8 < 130 && bl>>8 < 120 {
			red++
		}
	}
	if n == 0 {
		return 0
	}
	return float64(red) / float64(n)
}

// A subscriber that does not read its event stream never holds the
// publisher up: messages beyond its queue are skipped, and when it reads
// again it is told how many (event: skipped) before the next event, so what
// it got plus what it was told it missed is everything published.
func TestSlowEventSubscriberSkipsWithCount(t *testing.T) {
	ts := startServer(t, testConfig(t.TempDir()))
	resp, err := http.Get(ts.base + "/api/v1/events/stream?camera=burst")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, ": open") {
		t.Fatalf("stream start %q %v", line, err)
	}
	// 20000 events of 1 KB: far more than the socket buffers hold while the
	// client reads nothing.
	const n = 20000
	pad := strings.Repeat("x", 1000)
	nc := ts.srv.bus.Conn()
	start := time.Now()
	for i := 0; i < n; i++ {
		if err := nc.Publish("ifc.events.burst", []byte(`{"burst":`+strconv.Itoa(i)+`,"pad":"`+pad+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	// Now read: the queued events, each after a notice of what was skipped
	// before it.
	var mu sync.Mutex
	got, skipped := 0, 0
	go func() {
		var name string
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimSpace(line)
			if strings.HasPrefix(line, "event: ") {
				name = line[len("event: "):]
				continue
			}
			if !strings.HasPrefix(line, "data: ") {
				continue
			}
			data := line[len("data: "):]
			mu.Lock()
			if name == "skipped" {
				var s struct{ Skipped int }
				if json.Unmarshal([]byte(data), &s) == nil {
					skipped = s.Skipped
				}
			} else {
				got++
			}
			mu.Unlock()
		}
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		g, s := got, skipped
		mu.Unlock()
		if g+s >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp.Body.Close()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("published %d events in %v; the idle subscriber then read %d and was told %d were skipped", n, took, got, skipped)
	if skipped == 0 || got+skipped != n {
		t.Fatalf("read %d + skipped %d, want %d in all with some skipped", got, skipped, n)
	}
}

// A zone over the right half of the lower part of vtest's walkway: every
// event is of a walker whose feet were inside it (checked on the raw
// results with the track's own boxes), and walkers that stayed outside make
// none.
func TestZoneEventsOnlyInside(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Demo = true
	ts := startServer(t, cfg)
	cam := waitCameraOnline(t, ts, DemoCamera)
	// x in [0.5, 1], y in [0.5, 1]: a rectangle, so the test's own check
	// needs no polygon code.
	const x0, x1, y0, y1 = 0.5, 1.0, 0.5, 1.0
	zone := map[string]any{"name": "walkway", "points": [][2]float64{{x0, y0}, {x1, y0}, {x1, y1}, {x0, y1}}, "labels": []string{"person"}}
	st, body, _ := ts.do("PUT", "/api/v1/cameras/demo", "", map[string]any{"source": cam.Source, "pipeline": cam.Pipeline, "zones": []any{zone}})
	if st != 200 || !bytes.Contains(body, []byte(`"walkway"`)) {
		t.Fatalf("set zone: %d %s", st, body)
	}
	since := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	results := readSSEStream(t, ctx, ts.base+"/api/v1/cameras/demo/results/stream", "")
	time.Sleep(25 * time.Second)
	// Tracks whose recorder ended them: the camera's stop flushes them.
	st, body, _ = ts.do("PUT", "/api/v1/cameras/demo", "", map[string]any{"source": cam.Source, "pipeline": cam.Pipeline, "enabled": false})
	if st != 200 {
		t.Fatalf("stop camera: %d %s", st, body)
	}
	cancel()
	<-results.done

	type stat struct{ hits, inside int }
	tracks := map[int64]*stat{}
	for _, b := range results.get("result") {
		var r struct {
			Width, Height float64
			Detections    []struct {
				X, Y, W, H float64
				TrackID    string `json:"track_id"`
			}
		}
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		for _, d := range r.Detections {
			id, _ := strconv.ParseInt(d.TrackID, 10, 64)
			s := tracks[id]
			if s == nil {
				s = &stat{}
				tracks[id] = s
			}
			s.hits++
			ax, ay := (d.X+d.W/2)/r.Width, (d.Y+d.H)/r.Height
			if ax >= x0 && ax <= x1 && ay >= y0 && ay <= y1 {
				s.inside++
			}
		}
	}
	st, body, _ = ts.do("GET", "/api/v1/events?camera=demo&limit=500&since="+since.UTC().Format(time.RFC3339Nano), "", nil)
	var list eventList
	if st != 200 || json.Unmarshal(body, &list) != nil {
		t.Fatalf("list: %d %s", st, body)
	}
	withEvent := map[int64]bool{}
	for _, e := range list.Items {
		s := tracks[e.TrackID]
		if s == nil || s.inside == 0 {
			t.Fatalf("event %s of track %d: the track's feet were never inside the zone (%+v)", e.ID, e.TrackID, s)
		}
		if len(e.Zones) != 1 || e.Zones[0] != "walkway" {
			t.Fatalf("event %s zones %v", e.ID, e.Zones)
		}
		withEvent[e.TrackID] = true
	}
	outside, outsideLong := 0, 0
	for id, s := range tracks {
		if s.inside == 0 {
			outside++
			if s.hits >= events.DefaultMinFrames {
				outsideLong++
			}
			if withEvent[id] {
				t.Fatalf("track %d never inside has an event", id)
			}
		}
	}
	st, body, _ = ts.do("GET", "/api/v1/events?zone=walkway&limit=500&since="+since.UTC().Format(time.RFC3339Nano), "", nil)
	var byZone eventList
	if st != 200 || json.Unmarshal(body, &byZone) != nil || len(byZone.Items) != len(list.Items) {
		t.Fatalf("?zone=walkway: %d, %d items, want %d", st, len(byZone.Items), len(list.Items))
	}
	t.Logf("zone: %d tracks, %d events (all inside), %d tracks never inside (%d of them %d+ results long) and without events", len(tracks), len(list.Items), outside, outsideLong, events.DefaultMinFrames)
	if len(list.Items) == 0 || outsideLong == 0 {
		t.Fatalf("the test needs walkers inside and outside the zone: %d events, %d long tracks outside", len(list.Items), outsideLong)
	}
}

// Bad input to the event API and to camera zones gets a 4xx and changes
// nothing; with auth on every event route needs a token.
func TestEventAPIBadInputAndAuth(t *testing.T) {
	const token = "events-viewer-admin"
	cfg := testConfig(t.TempDir())
	cfg.APITokens = []string{token}
	ts := startServer(t, cfg)
	for _, p := range []string{"/api/v1/events", "/api/v1/events/x", "/api/v1/events/x/snapshot.jpg", "/api/v1/events/stream", "/api/v1/cameras/c/results/stream"} {
		if st, _, _ := ts.do("GET", p, "", nil); st != 401 {
			t.Errorf("GET %s without token: %d, want 401", p, st)
		}
	}
	if st, _, _ := ts.do("DELETE", "/api/v1/events/x", "", nil); st != 401 {
		t.Errorf("DELETE without token: %d", st)
	}
	for _, c := range []struct {
		path string
		want int
	}{
		{"/api/v1/events?limit=0", 400}, {"/api/v1/events?limit=9999", 400}, {"/api/v1/events?limit=x", 400},
		{"/api/v1/events?since=yesterday", 400}, {"/api/v1/events?until=2026-13-01T00:00:00Z", 400},
		{"/api/v1/events?cursor=junk", 400}, {"/api/v1/events/nope", 404}, {"/api/v1/events/nope/crop.jpg", 404},
		{"/api/v1/events/stream?camera=a.b", 400}, {"/api/v1/cameras/nope/results/stream", 404}, {"/api/v1/cameras/a*b/results/stream", 400},
	} {
		st, body, _ := ts.do("GET", c.path, token, nil)
		if st != c.want {
			t.Errorf("GET %s: %d %s, want %d", c.path, st, body, c.want)
		}
	}
	if st, body, _ := ts.do("DELETE", "/api/v1/events/nope", token, nil); st != 404 {
		t.Errorf("DELETE unknown: %d %s", st, body)
	}
	src := "file:///usr/share/doc/opencv-doc/examples/data/vtest.avi"
	sq := [][2]float64{{0, 0}, {1, 0}, {1, 1}, {0, 1}}
	for name, zones := range map[string]any{
		"two points":   []any{map[string]any{"name": "a", "points": [][2]float64{{0, 0}, {1, 1}}}},
		"out of frame": []any{map[string]any{"name": "a", "points": [][2]float64{{0, 0}, {2, 0}, {1, 1}}}},
		"no name":      []any{map[string]any{"points": sq}},
		"same name":    []any{map[string]any{"name": "a", "points": sq}, map[string]any{"name": "a", "points": sq}},
		"neg dwell":    []any{map[string]any{"name": "a", "points": sq, "min_dwell_ms": -1}},
		"not a list":   "everywhere",
	} {
		st, body, _ := ts.do("POST", "/api/v1/cameras", token, map[string]any{"id": "z", "source": src, "enabled": false, "zones": zones})
		if st != 400 {
			t.Errorf("zones %s: %d %s, want 400", name, st, body)
		}
	}
	if st, _, _ := ts.do("GET", "/api/v1/cameras/z", token, nil); st != 404 {
		t.Fatalf("a refused camera was stored: %d", st)
	}
	st, body, _ := ts.do("POST", "/api/v1/cameras", token, map[string]any{"id": "z", "source": src, "enabled": false, "zones": []any{map[string]any{"name": "door", "points": sq, "labels": []string{"person"}, "min_dwell_ms": 1500}}})
	if st != 201 || !bytes.Contains(body, []byte(`"min_dwell_ms":1500`)) {
		t.Fatalf("good zone: %d %s", st, body)
	}
}
