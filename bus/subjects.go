package bus

import (
	"fmt"
	"strings"
)

// Subjects builds the subject names of the architecture page from a prefix.
type Subjects struct{ Prefix string }

// Video carries encoded access units of a camera.
func (s Subjects) Video(cam string) string { return s.Prefix + ".video." + cam }

// GOP is where a node's hub answers with a camera's kept group of pictures
// (request/reply), so a reader joining on another node starts at once.
func (s Subjects) GOP(cam string) string { return s.Prefix + ".gop." + cam }

// Audio carries encoded audio frames of a camera.
func (s Subjects) Audio(cam string) string { return s.Prefix + ".audio." + cam }

// Frames carries decoded frames sampled for processing.
func (s Subjects) Frames(cam string) string { return s.Prefix + ".frames." + cam }

// Results carries pipeline outputs of a camera.
func (s Subjects) Results(cam string) string { return s.Prefix + ".results." + cam }

// Jobs carries batch work items of an execution.
func (s Subjects) Jobs(execution string) string { return s.Prefix + ".jobs." + execution }

// Progress carries progress of an execution.
func (s Subjects) Progress(execution string) string { return s.Prefix + ".progress." + execution }

// Events carries a camera's detection events (package events: JSON, one
// message per start, update and end of a track).
func (s Subjects) Events(cam string) string { return s.Prefix + ".events." + cam }

// Status carries camera state changes (busv1.CameraEvent).
func (s Subjects) Status(cam string) string { return s.Prefix + ".status." + cam }

// Metrics carries node metric snapshots.
func (s Subjects) Metrics(node string) string { return s.Prefix + ".metrics." + node }

// Archive carries frames kept for the data platform.
func (s Subjects) Archive(cam string) string { return s.Prefix + ".archive." + cam }

// MaxTokenLen bounds ids used as subject tokens and KV keys.
const MaxTokenLen = 64

// ValidateToken checks that s can be one subject token and one KV key: ASCII
// letters, digits, '-' and '_', 1 to MaxTokenLen characters. Camera, pipeline
// and execution ids all pass through it, so an id can never address another
// subject or key.
func ValidateToken(s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty", ErrInvalidToken)
	}
	if len(s) > MaxTokenLen {
		return fmt.Errorf("%w: %d characters, at most %d", ErrInvalidToken, len(s), MaxTokenLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
		if !ok {
			return fmt.Errorf("%w: character %q at %d (allowed: letters, digits, '-', '_')", ErrInvalidToken, strings.TrimSpace(string(c)), i)
		}
	}
	return nil
}
