package server

import (
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"
)

// SourcePublish marks a camera that is pushed to the server (RTSP
// ANNOUNCE/RECORD, WHIP or gRPC Publish) rather than pulled.
const SourcePublish = "publish"

const maxSourceLen = 2048

var videoDevice = regexp.MustCompile(`^/dev/video[0-9]{1,3}$`)

// sourceScheme returns the adapter key of a source: the URL scheme, "usb"
// for a V4L2 device or "publish".
func sourceScheme(source string) string {
	switch {
	case source == SourcePublish:
		return SourcePublish
	case videoDevice.MatchString(source):
		return "usb"
	}
	if i := strings.Index(source, "://"); i > 0 {
		return strings.ToLower(source[:i])
	}
	return ""
}

// validateSource checks a camera source and says what is wrong with it; the
// message never repeats credentials.
func validateSource(source string) error {
	if source == "" {
		return invalidf("source: must not be empty (rtsp://, rtsps://, whep://, wheps://, file://, /dev/videoN or %q)", SourcePublish)
	}
	if len(source) > maxSourceLen {
		return invalidf("source: %d characters, at most %d", len(source), maxSourceLen)
	}
	for _, r := range source {
		if r < 0x20 || r == 0x7f {
			return invalidf("source: contains a control character")
		}
	}
	switch sourceScheme(source) {
	case SourcePublish, "usb":
		return nil
	case "rtsp", "rtsps", "whep", "wheps":
		u, err := url.Parse(source)
		if err != nil {
			return invalidf("source: not a valid URL: %s", strings.ReplaceAll(err.Error(), source, RedactURL(source)))
		}
		if u.Hostname() == "" {
			return invalidf("source %q: needs a host", RedactURL(source))
		}
		if p := u.Port(); p != "" {
			if _, err := net.LookupPort("tcp", p); err != nil {
				return invalidf("source %q: bad port %q", RedactURL(source), p)
			}
		}
		return nil
	case "file":
		u, err := url.Parse(source)
		if err != nil || u.Path == "" || !strings.HasPrefix(u.Path, "/") || (u.Host != "" && u.Host != "localhost") {
			return invalidf("source %q: want file:///absolute/path/to/video", source)
		}
		st, err := os.Stat(u.Path)
		if err != nil {
			return invalidf("source %q: %v", source, err.(*os.PathError).Err)
		}
		if st.IsDir() {
			return invalidf("source %q: is a directory", source)
		}
		return nil
	}
	return invalidf("source %q: unsupported; want rtsp://, rtsps://, whep://, wheps://, file://, /dev/videoN or %q", RedactURL(source), SourcePublish)
}
