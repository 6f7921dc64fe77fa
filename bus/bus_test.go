package bus

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// nats-server waits up to 30 s for the answer to a source's set-up
		// request in a goroutine its Shutdown does not stop (a hub stopped
		// while its leaf was away); it ends on its own timer.
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*stream).trySetupSourceConsumer.func3"))
}

func start(t *testing.T, cfg Config) *Bus {
	t.Helper()
	b := &Bus{Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func TestInProcessOnlyByDefault(t *testing.T) {
	b := start(t, Config{DataDir: t.TempDir()})
	if b.ClientURL() != "" {
		t.Fatalf("client port open without configuration: %s", b.ClientURL())
	}
	if err := b.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := b.Stats(); st.Connections != 1 {
		t.Fatalf("connections: %+v", st)
	}
}

func TestClientPortNeedsCredentials(t *testing.T) {
	if err := (&Bus{Config: Config{DataDir: t.TempDir(), ClientAddr: "127.0.0.1:0"}}).Start(context.Background()); err != ErrCredentials {
		t.Fatalf("client port without credentials: %v", err)
	}
	b := start(t, Config{DataDir: t.TempDir(), ClientAddr: "127.0.0.1:0", ClientUser: "worker", ClientPassword: "s3cret-pw"})
	url := b.ClientURL()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") {
		t.Fatalf("client url %q", url)
	}
	if nc, err := nats.Connect(url); err == nil {
		nc.Close()
		t.Fatal("anonymous client accepted")
	}
	if nc, err := nats.Connect(url, nats.UserInfo("worker", "wrong")); err == nil {
		nc.Close()
		t.Fatal("wrong password accepted")
	}
	nc, err := nats.Connect(url, nats.UserInfo("worker", "s3cret-pw"))
	if err != nil {
		t.Fatalf("valid credentials: %v", err)
	}
	defer nc.Close()
	// A remote client and the in-process components share the subjects.
	sub, err := nc.SubscribeSync(b.Subjects().Results("cam"))
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	if err := b.Conn().Publish(b.Subjects().Results("cam"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("remote subscriber: %v", err)
	}
}

func TestSetupIsIdempotentAndDurable(t *testing.T) {
	dir := t.TempDir()
	b := start(t, Config{DataDir: dir, VideoWindow: 2 * time.Second})
	ctx := context.Background()
	if _, err := b.KV(BucketCameras).Put(ctx, "cam1", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	b.Close()
	// Same directory, video window switched off: everything is found again
	// and the VIDEO stream is gone.
	b2 := start(t, Config{DataDir: dir})
	e, err := b2.KV(BucketCameras).Get(ctx, "cam1")
	if err != nil || string(e.Value()) != "v1" {
		t.Fatalf("KV after restart: %v", err)
	}
	for _, name := range []string{"RESULTS", "EVENTS", "JOBS", "PROGRESS", "METRICS", "ARCHIVE"} {
		if _, err := b2.JetStream().Stream(ctx, name); err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
	}
	if _, err := b2.JetStream().Stream(ctx, "VIDEO"); err == nil {
		t.Fatal("VIDEO stream kept after the window was switched off")
	}
	for _, kv := range []string{BucketCameras, BucketPipelines, BucketExecutions, BucketInWork} {
		if b2.KV(kv) == nil {
			t.Fatalf("bucket %s missing", kv)
		}
	}
	if _, err := b2.Objects().Status(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestValidateToken(t *testing.T) {
	for _, ok := range []string{"a", "front-door", "Cam_01", strings.Repeat("x", MaxTokenLen)} {
		if err := ValidateToken(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a.b", "a*", ">", "a b", "../x", "é", strings.Repeat("x", MaxTokenLen+1)} {
		if err := ValidateToken(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzValidateToken(f *testing.F) {
	for _, s := range []string{"a", "a.b", "", "front-door", "\x00", "ifc.>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateToken(s) == nil && strings.ContainsAny(s, ".*> \t\r\n/") {
			t.Fatalf("%q accepted", s)
		}
	})
}

// Interest sees the subscribers of a subject: a client's subscription and
// a JetStream stream's (the VIDEO window).
func TestInterest(t *testing.T) {
	b := start(t, Config{DataDir: t.TempDir()})
	subject := b.Subjects().Video("cam")
	if b.Interest(subject) {
		t.Fatal("interest in a subject nobody subscribed to")
	}
	sub, err := b.Conn().SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	_ = b.Conn().Flush()
	if !b.Interest(subject) {
		t.Fatal("no interest with a subscriber")
	}
	_ = sub.Unsubscribe()
	_ = b.Conn().Flush()
	if b.Interest(subject) {
		t.Fatal("interest after the subscriber left")
	}

	w := start(t, Config{DataDir: t.TempDir(), VideoWindow: 5 * time.Second})
	if !w.Interest(w.Subjects().Video("cam")) {
		t.Fatal("the VIDEO window's stream is not counted as interest")
	}
}
