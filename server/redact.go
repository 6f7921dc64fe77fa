package server

import (
	"net/url"
	"strings"
)

// RedactURL hides the credentials a source URL may carry (user info and
// token-like query parameters) so it can be shown in responses and logs.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return raw
	}
	changed := false
	if u.User != nil {
		u.User = url.UserPassword("***", "***")
		changed = true
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			lk := strings.ToLower(k)
			if strings.Contains(lk, "token") || strings.Contains(lk, "pass") || strings.Contains(lk, "secret") || strings.Contains(lk, "key") {
				q.Set(k, "***")
				changed = true
			}
		}
		if changed {
			u.RawQuery = q.Encode()
		}
	}
	if !changed {
		return raw
	}
	// url.String escapes the stars; keep them readable.
	return strings.NewReplacer("%2A", "*").Replace(u.String())
}
