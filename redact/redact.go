// Package redact hides the secrets a camera or processor URL may carry (user
// info, token-like query values) wherever a URL or an error quoting one is
// logged or returned: it is the one redaction policy of the server and every
// ingest adapter.
package redact

import (
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// Mask replaces every hidden part.
const Mask = "***"

// sensitiveKeys are substrings of query (and fragment) keys whose values are
// hidden; matching ignores case, so "X-Amz-Signature", "access_token",
// "apiKey" and "Passwd" are all caught. Hiding a harmless value by mistake
// costs little; showing a secret costs a camera.
var sensitiveKeys = []string{
	"token", "pass", "pwd", "auth", "sig", "secret", "key", "credential",
	"jwt", "session", "cookie", "bearer", "nonce",
}

// SensitiveKey reports whether a query parameter named key holds a secret.
func SensitiveKey(key string) bool {
	if k, err := url.QueryUnescape(key); err == nil {
		key = k
	}
	key = strings.ToLower(key)
	for _, s := range sensitiveKeys {
		if strings.Contains(key, s) {
			return true
		}
	}
	return false
}

// URL returns raw with its user info replaced by "***:***" and the values of
// sensitive query and fragment keys by "***". It works on the text, not on a
// parsed URL, so a password holding '@', '#', '/', ':' or '?' (which url.Parse
// splits in the wrong place) is hidden whole, and a string that is not a URL
// at all still loses everything that looks like user info. The result is
// deterministic, so a client sending a redacted URL back can be recognised.
func URL(raw string) string {
	out, _ := redactURL(raw)
	return out
}

// redactURL returns the redacted URL and the substrings it hid.
func redactURL(raw string) (string, []string) {
	var hidden []string
	scheme, rest := splitScheme(raw)
	if !strings.HasSuffix(scheme, "//") {
		// "user:pass@host" reads as scheme "user": without "//" there is
		// no telling a scheme from a user name, so both go.
		scheme, rest = "", raw
	}
	var b strings.Builder
	b.Grow(len(raw) + 8)
	b.WriteString(scheme)
	// User info ends at the last '@': a password may hold '@' (and any other
	// character), a host never does. When a path or query holds an '@' too,
	// more than the user info is hidden, which is the safe side.
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		info, tail := rest[:at], rest[at+1:]
		hidden = append(hidden, info)
		b.WriteString(Mask + ":" + Mask + "@")
		if strings.ContainsAny(info, "?#") {
			// The '@' sits in the query or fragment ("?token=ab@cd"), so
			// the tail continues it: its first part belongs to the pair
			// the '@' cut, the rest are pairs of their own.
			last := info[strings.LastIndexAny(info, "?&;#")+1:]
			end := strings.IndexAny(tail, "&;#")
			if end < 0 {
				end = len(tail)
			}
			first := tail[:end]
			cut := last + "@" + first
			if eq := strings.IndexByte(cut, '='); eq >= 0 && SensitiveKey(cut[:strings.LastIndexByte(cut, '=')]) {
				keep := max(0, eq-len(last)) // what of first is still the key
				b.WriteString(first[:keep])
				b.WriteString(Mask)
				hidden = append(hidden, first[keep:])
			} else {
				// Not a sensitive pair across the '@'; first may still hold
				// one of its own ("host?pwd=x" after a password with '#').
				hidden = maskPairs(&b, first, hidden)
			}
			if end < len(tail) {
				b.WriteByte(tail[end])
				hidden = maskPairs(&b, tail[end+1:], hidden)
			}
			return b.String(), hidden
		}
		rest = tail
	}
	// The query starts at the first '?', the fragment at the first '#';
	// both are masked pair by pair.
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		b.WriteString(rest[:i+1])
		hidden = maskPairs(&b, rest[i+1:], hidden)
	} else {
		b.WriteString(rest)
	}
	return b.String(), hidden
}

// splitScheme splits "scheme://" (or "scheme:") from the rest; a string
// without a valid scheme has none.
func splitScheme(raw string) (scheme, rest string) {
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		case c == ':' && i > 0:
			n := i + 1
			if strings.HasPrefix(raw[n:], "//") {
				n += 2
			}
			return raw[:n], raw[n:]
		default:
			return "", raw
		}
	}
	return "", raw
}

// maskPairs writes a query (or fragment) with the values of sensitive keys
// masked, keeping the separators, and appends the hidden values to hidden.
func maskPairs(b *strings.Builder, q string, hidden []string) []string {
	for q != "" {
		end := strings.IndexAny(q, "&;#")
		pair := q
		if end >= 0 {
			pair = q[:end]
		}
		// The value starts at the first '=' (base64 padding adds more); a
		// sensitive word anywhere before the last '=' hides it, so a key
		// that cannot be told apart from a value still counts.
		if eq := strings.IndexByte(pair, '='); eq >= 0 && SensitiveKey(pair[:strings.LastIndexByte(pair, '=')]) {
			b.WriteString(pair[:eq+1])
			b.WriteString(Mask)
			hidden = append(hidden, pair[eq+1:])
		} else {
			b.WriteString(pair)
		}
		if end < 0 {
			break
		}
		b.WriteByte(q[end])
		q = q[end+1:]
	}
	return hidden
}

// secrets lists the substrings of raw that URL hides, in the spellings an
// error message may quote them in (as typed, percent-decoded, re-encoded),
// longest first so a secret is replaced before a shorter one inside it.
func secrets(raw string) []string {
	set := map[string]bool{}
	add := func(s string) {
		if s == "" || s == Mask {
			return
		}
		set[s] = true
		for _, f := range []func(string) (string, error){url.PathUnescape, url.QueryUnescape} {
			if d, err := f(s); err == nil && d != "" {
				set[d] = true
			}
		}
		set[url.PathEscape(s)] = true
		set[url.QueryEscape(s)] = true
		// As %q prints it (url.Error quotes its URL).
		q := strconv.Quote(s)
		set[q[1:len(q)-1]] = true
	}
	_, hidden := redactURL(raw)
	for i, h := range hidden {
		add(h)
		if i > 0 {
			continue
		}
		// The user info: its parts one by one, and as url re-encodes it.
		// Without "//" a scheme reads as the user name, so the password
		// may be any ':'-separated part.
		if user, pass, ok := strings.Cut(h, ":"); ok {
			add(user)
			add(pass)
			add(url.UserPassword(user, pass).String())
		}
		for _, part := range strings.Split(h, ":") {
			add(part)
		}
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) || len(out[i]) == len(out[j]) && out[i] < out[j] })
	return out
}

// Text removes from msg (an error or log text) every secret of the given
// URLs, in any spelling url or net/http quote them, and masks every other
// URL-looking word it contains. Use it on messages that may repeat a URL:
// url.Error, gortsplib and HTTP errors all do.
func Text(msg string, urls ...string) string {
	for _, raw := range urls {
		if raw == "" {
			continue
		}
		msg = strings.ReplaceAll(msg, raw, URL(raw))
		for _, s := range secrets(raw) {
			msg = strings.ReplaceAll(msg, s, Mask)
		}
	}
	if !strings.Contains(msg, "://") && !strings.ContainsRune(msg, '@') && !strings.ContainsRune(msg, '?') {
		return msg
	}
	// URLs the caller did not name (a redirect target, a URL inside a
	// wrapped error): mask each word that looks like one.
	words := strings.FieldsFunc(msg, func(r rune) bool {
		return r == ' ' || r == '"' || r == '\'' || r == '\t' || r == '\n' || r == '<' || r == '>'
	})
	for _, w := range words {
		if strings.Contains(w, "://") || strings.ContainsAny(w, "@?") {
			if r := URL(w); r != w {
				msg = strings.ReplaceAll(msg, w, r)
			}
		}
	}
	return msg
}

// Error returns err with Text applied to its message; errors.Is and
// errors.As still see the original error. It returns nil for nil.
func Error(err error, urls ...string) error {
	if err == nil {
		return nil
	}
	msg := Text(err.Error(), urls...)
	if msg == err.Error() {
		return err
	}
	return &redactedError{msg: msg, err: err}
}

// redactedError shows a redacted message and unwraps to the original.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
