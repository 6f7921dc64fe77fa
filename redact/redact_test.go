package redact

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
)

// urlCases feed the table test and the fuzz seeds: the secret is what must
// never come out.
var urlCases = []struct {
	in, want, secret string
}{
	{"rtsp://admin:s3cret-pass@192.0.2.10:554/stream1", "rtsp://***:***@192.0.2.10:554/stream1", "s3cret-pass"},
	{"rtsp://admin:p@ss#w/rd:x@10.0.0.2:554/h264", "rtsp://***:***@10.0.0.2:554/h264", "p@ss#w/rd:x"},
	{"rtsp://admin:pa/ss@cam/x", "rtsp://***:***@cam/x", "pa/ss"},
	{"rtsp://admin:pa?ss@cam/x", "rtsp://***:***@cam/x", "pa?ss"},
	{"rtsp://admin:p%40ss@cam/x", "rtsp://***:***@cam/x", "p%40ss"},
	{"rtsps://tokenonly@cam/x", "rtsps://***:***@cam/x", "tokenonly"},
	{"rtsp://u:p4ss@[bad/x", "rtsp://***:***@[bad/x", "p4ss"},
	{"rtsp://10.0.0.2/h264", "rtsp://10.0.0.2/h264", ""},
	{"rtsp://cam/x?token=abc123&channel=1", "rtsp://cam/x?token=***&channel=1", "abc123"},
	{"rtsp://cam/x?pwd=hunter2", "rtsp://cam/x?pwd=***", "hunter2"},
	{"rtsp://cam/x?AUTH=zzz999;sig=sss888", "rtsp://cam/x?AUTH=***;sig=***", "zzz999"},
	{"rtsp://cam/x?X-Amz-Signature=feed&X-Amz-Credential=AKIA1", "rtsp://cam/x?X-Amz-Signature=***&X-Amz-Credential=***", "AKIA1"},
	{"whep://cam/x?apiKey=k1k1&session_id=s2s2", "whep://cam/x?apiKey=***&session_id=***", "k1k1"},
	{"wheps://cam/x?user_password=pw9", "wheps://cam/x?user_password=***", "pw9"},
	{"whep://cam/x#access_token=frag7", "whep://cam/x#access_token=***", "frag7"},
	{"whep://cam/x?a=1#jwt=eyJ0", "whep://cam/x?a=1#jwt=***", "eyJ0"},
	{"admin:nosch3me@host:554/x", "***:***@host:554/x", "nosch3me"},
	{"rtsp:admin:opaque9@host/x", "***:***@host/x", "opaque9"},
	{"not a url at all", "not a url at all", ""},
	{"", "", ""},
	{"file:///media/clip.mp4", "file:///media/clip.mp4", ""},
	{"rtsp://cam/x?codec=h265&channel=2&subtype=0", "rtsp://cam/x?codec=h265&channel=2&subtype=0", ""},
}

func TestURL(t *testing.T) {
	for _, tc := range urlCases {
		got := URL(tc.in)
		if got != tc.want {
			t.Errorf("URL(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if tc.secret != "" && strings.Contains(got, tc.secret) {
			t.Errorf("URL(%q) = %q shows %q", tc.in, got, tc.secret)
		}
		if again := URL(got); again != got {
			t.Errorf("URL is not idempotent: %q -> %q", got, again)
		}
	}
}

func TestTextHidesSecretsInErrors(t *testing.T) {
	for _, tc := range urlCases {
		if tc.secret == "" {
			continue
		}
		var msgs []string
		if _, err := url.Parse(tc.in); err != nil {
			msgs = append(msgs, err.Error())
		}
		msgs = append(msgs,
			(&url.Error{Op: "Get", URL: tc.in, Err: errors.New("connection refused")}).Error(),
			fmt.Sprintf("dial %s failed", tc.in),
			fmt.Sprintf("bad password %q", tc.secret),
		)
		if u, err := url.Parse(tc.in); err == nil {
			msgs = append(msgs, "GET "+u.String()+": 401", "GET "+u.Redacted())
		}
		for _, m := range msgs {
			if got := Text(m, tc.in); strings.Contains(got, tc.secret) {
				t.Errorf("Text(%q) = %q shows %q", m, got, tc.secret)
			}
		}
	}
	// A URL the caller did not name is masked too (a redirect target).
	if got := Text(`redirect to "rtsp://x:leak1@other/y?token=leak2"`); strings.Contains(got, "leak") {
		t.Errorf("unnamed URL kept its secrets: %s", got)
	}
	if got := Text("connection refused"); got != "connection refused" {
		t.Errorf("plain text changed: %q", got)
	}
}

func TestErrorKeepsChain(t *testing.T) {
	sentinel := errors.New("sentinel")
	src := "rtsp://a:topsecret@h/x"
	err := Error(fmt.Errorf("dial %s: %w", src, sentinel), src)
	if strings.Contains(err.Error(), "topsecret") || !errors.Is(err, sentinel) {
		t.Fatalf("Error: %v (is sentinel: %v)", err, errors.Is(err, sentinel))
	}
	if Error(nil, src) != nil {
		t.Fatal("Error(nil) is not nil")
	}
	plain := errors.New("timeout")
	if Error(plain, src) != plain {
		t.Fatal("an error without secrets is wrapped needlessly")
	}
}

// FuzzURL checks the property: a password (any characters) or the value of
// a sensitive query key never appears in URL's output or in Text's output
// for messages quoting the URL.
func FuzzURL(f *testing.F) {
	for _, tc := range urlCases {
		f.Add("admin", tc.secret, "cam:554", "/x", "token", tc.secret)
	}
	f.Add("u", "p@ss#/:?&=", "h", "/p@th", "pwd", "v#x")
	f.Fuzz(func(t *testing.T, user, pass, host, path, key, value string) {
		if strings.ContainsAny(value, "&;#") || !SensitiveKey(key) || strings.ContainsAny(key, "=&;#") {
			// A raw '&', ';' or '#' ends a query value by the URL grammar.
			return
		}
		raw := "rtsp://" + user + ":" + pass + "@" + host + path + "?" + key + "=" + value
		public := "rtsp://" + Mask + ":" + Mask + "@" + host + path + "?" + key + "="
		out := URL(raw)
		for _, secret := range []string{pass, value} {
			if len(secret) < 3 || strings.Contains(public, secret) {
				continue
			}
			if strings.Contains(out, secret) {
				t.Fatalf("URL(%q) = %q shows %q", raw, out, secret)
			}
			msg := (&url.Error{Op: "Get", URL: raw, Err: errors.New("refused")}).Error()
			if got := Text(msg, raw); strings.Contains(got, secret) {
				t.Fatalf("Text(%q) = %q shows %q", msg, got, secret)
			}
		}
	})
}
