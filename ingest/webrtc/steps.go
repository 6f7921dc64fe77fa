package webrtc

import (
	"context"
	"log/slog"
	"time"
)

// answerSteps times the steps of one answer for a debug log line, to show
// where an answer's wall time goes when many viewers join at once. It costs
// nothing unless the logger is at debug level; a nil *answerSteps is off.
type answerSteps struct {
	start, last time.Time
	attrs       []any
}

// newAnswerSteps starts the clock, or returns nil when log would drop debug
// lines.
func newAnswerSteps(log *slog.Logger) *answerSteps {
	if !log.Enabled(context.Background(), slog.LevelDebug) {
		return nil
	}
	now := time.Now()
	return &answerSteps{start: now, last: now, attrs: make([]any, 0, 24)}
}

// mark records the time since the previous mark as step name's, in
// milliseconds.
func (s *answerSteps) mark(name string) {
	if s == nil {
		return
	}
	now := time.Now()
	s.attrs = append(s.attrs, name+"_ms", stepMS(now.Sub(s.last)))
	s.last = now
}

// log writes the steps and their total as one debug line.
func (s *answerSteps) log(log *slog.Logger, msg string, args ...any) {
	if s == nil {
		return
	}
	args = append(args, s.attrs...)
	args = append(args, "total_ms", stepMS(time.Since(s.start)))
	log.Debug(msg, args...)
}

// stepMS is d in milliseconds with microsecond precision.
func stepMS(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
