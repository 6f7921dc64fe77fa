package batch_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine the manager and its streams start must be gone when a
// test's environment is closed. Ignored: fasthttp's idle worker pool and
// date ticker (they end on their own schedule after Shutdown), and nats.go's
// async-publish reconnect watcher, which the object store starts and which
// waits for a CLOSED status an in-process connection does not send.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect"),
	)
}
