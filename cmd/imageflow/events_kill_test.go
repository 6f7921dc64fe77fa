package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/imageflowcanvas/imageflow/bus"
)

type apiEvent struct {
	ID    string     `json:"id"`
	State string     `json:"state"`
	End   *time.Time `json:"end"`
}

// listAllEvents pages through GET /api/v1/events.
func listAllEvents(t *testing.T, base string) []apiEvent {
	t.Helper()
	var all []apiEvent
	cursor := ""
	for {
		resp, err := http.Get(base + "/api/v1/events?limit=100&cursor=" + cursor)
		if err != nil {
			t.Fatal(err)
		}
		var page struct {
			Items      []apiEvent `json:"items"`
			NextCursor string     `json:"next_cursor"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("list events: %d %v", resp.StatusCode, err)
		}
		all = append(all, page.Items...)
		if page.NextCursor == "" {
			return all
		}
		cursor = page.NextCursor
	}
}

// TestEventsSurviveKill9 kills the server with SIGKILL while the demo
// camera writes events: after a restart every event the API had listed
// (listed means stored: the index reads the stream) is there, at least as
// far along as it was, and the stream holds no message twice.
func TestEventsSurviveKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	dir := t.TempDir()
	srv, li, logs := startBinary(t, dir, "--demo=true")
	base := "http://" + li.HTTP
	seen := map[string]apiEvent{}
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		ended := 0
		for _, e := range listAllEvents(t, base) {
			seen[e.ID] = e
			if e.End != nil {
				ended++
			}
		}
		// Kill while events keep coming: some ended, others open.
		if ended >= 3 && len(seen) > ended {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	// The last look right before the kill.
	for _, e := range listAllEvents(t, base) {
		seen[e.ID] = e
	}
	if len(seen) < 3 {
		t.Fatalf("only %d events before the kill; logs:\n%s", len(seen), logs)
	}
	if err := srv.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = srv.Wait()

	srv2, li2, _ := startBinary(t, dir, "--demo=true")
	after := listAllEvents(t, "http://"+li2.HTTP)
	byID := map[string]apiEvent{}
	for _, e := range after {
		if _, dup := byID[e.ID]; dup {
			t.Fatalf("event %s listed twice", e.ID)
		}
		byID[e.ID] = e
	}
	for id, e := range seen {
		a, ok := byID[id]
		if !ok {
			t.Fatalf("event %s (%s) acknowledged before the kill is gone", id, e.State)
		}
		if e.End != nil && a.End == nil {
			t.Fatalf("event %s had ended before the kill, now it has not", id)
		}
	}
	_ = srv2.Process.Signal(syscall.SIGTERM)
	_ = srv2.Wait()

	// Every message of the stream once: read it with the server stopped.
	b := &bus.Bus{Config: bus.Config{DataDir: dir}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	stream, err := b.JetStream().Stream(ctx, "EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	msgIDs := map[string]int{}
	starts := map[string]int{}
	for n := uint64(0); n < info.State.Msgs; n++ {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("message %d of %d: %v", n, info.State.Msgs, err)
		}
		msgIDs[msg.Headers().Get(jetstream.MsgIDHeader)]++
		var e apiEvent
		if json.Unmarshal(msg.Data(), &e) == nil && e.State == "start" {
			starts[e.ID]++
		}
	}
	var dups []string
	for id, n := range msgIDs {
		if n > 1 || id == "" {
			dups = append(dups, fmt.Sprintf("%q x%d", id, n))
		}
	}
	for id, n := range starts {
		if n > 1 {
			dups = append(dups, fmt.Sprintf("start of %s x%d", id, n))
		}
	}
	if len(dups) > 0 {
		t.Fatalf("duplicates in the stream: %s", strings.Join(dups, ", "))
	}
	t.Logf("kill -9: %d events listed before, %d after restart, all present; stream holds %d messages, none twice", len(seen), len(after), info.State.Msgs)
}
