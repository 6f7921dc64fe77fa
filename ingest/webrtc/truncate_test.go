package webrtc

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestTruncateKeepsCharacters(t *testing.T) {
	for i := 0; i < 4; i++ {
		s := strings.Repeat("a", i) + strings.Repeat("é", 40)
		if got := truncate(s); !utf8.ValidString(got) || !strings.HasSuffix(got, "…") {
			t.Errorf("truncate(%q) = %q", s, got)
		}
	}
	if got := truncate("short"); got != "short" {
		t.Errorf("short text changed: %q", got)
	}
}
