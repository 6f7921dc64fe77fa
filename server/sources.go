package server

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/imageflowcanvas/imageflow/netpolicy"
	"github.com/imageflowcanvas/imageflow/redact"
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

// sourcePolicy is what limits where sources and remote steps may point:
// the deny_hosts list and the media directories file:// sources play from.
type sourcePolicy struct {
	hosts *netpolicy.Policy
	// typedDirs are the media directories made absolute, resolvedDirs the
	// same with symlinks resolved: a path as typed is checked against
	// both, a path with its symlinks resolved against the resolved ones.
	typedDirs, resolvedDirs []string
	// shownDirs are the directories as configured, for error messages.
	shownDirs []string
}

// mediaDirs returns the configured media directories, or the defaults:
// <data>/media and the directory of the demo clip (read-only, from
// opencv-doc), so the demo camera keeps playing.
func (c *Config) mediaDirs() []string {
	if len(c.MediaDirs) > 0 {
		return c.MediaDirs
	}
	return []string{filepath.Join(c.DataDir, "media"), filepath.Dir(demoVideo)}
}

// denyHosts returns deny_hosts, or netpolicy.DefaultDeny when it is unset
// (nil; an empty list from the file allows every host).
func (c *Config) denyHosts() []string {
	if c.DenyHosts == nil {
		return netpolicy.DefaultDeny
	}
	return c.DenyHosts
}

// validateSourcePolicy checks deny_hosts and media_dirs (part of Validate).
func (c *Config) validateSourcePolicy() error {
	if _, err := netpolicy.New(c.denyHosts()); err != nil {
		return fmt.Errorf("%w: deny_hosts: %v", ErrConfig, err)
	}
	for i, d := range c.MediaDirs {
		if strings.TrimSpace(d) == "" {
			return fmt.Errorf("%w: media_dirs[%d]: must not be empty", ErrConfig, i)
		}
	}
	return nil
}

// initSourcePolicy builds the policy from the configuration and makes
// pipeline validation check grpc:// hosts against it. The default media
// directory is created so users have a place to put videos.
func (s *Server) initSourcePolicy() error {
	hosts, err := netpolicy.New(s.Config.denyHosts())
	if err != nil {
		return fmt.Errorf("%w: deny_hosts: %v", ErrConfig, err)
	}
	p := &sourcePolicy{hosts: hosts}
	if len(s.Config.MediaDirs) == 0 {
		if err := os.MkdirAll(filepath.Join(s.Config.DataDir, "media"), 0o750); err != nil {
			return fmt.Errorf("media directory: %w", err)
		}
	}
	for _, d := range s.Config.mediaDirs() {
		abs, err := filepath.Abs(d)
		if err != nil {
			continue
		}
		resolved := abs
		if r, err := filepath.EvalSymlinks(abs); err == nil {
			resolved = r
		}
		p.typedDirs = append(p.typedDirs, abs)
		p.resolvedDirs = append(p.resolvedDirs, resolved)
		p.shownDirs = append(p.shownDirs, d)
	}
	s.sources = p
	s.Registry.SetRemoteCheck(func(hostport string) error {
		host, _, err := net.SplitHostPort(hostport)
		if err != nil {
			host = hostport
		}
		return hosts.CheckHost(host)
	})
	return nil
}

// validateSource checks a camera source and says what is wrong with it; the
// message never repeats credentials.
func (s *Server) validateSource(source string) error {
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
	shown := redact.URL(source)
	switch sourceScheme(source) {
	case SourcePublish, "usb":
		return nil
	case "rtsp", "rtsps", "whep", "wheps":
		u, err := url.Parse(source)
		if err != nil {
			// The parser's detail may quote a piece of a password: give it
			// only when the source holds nothing to hide.
			if shown == source {
				return invalidf("source: not a valid URL: %v", errors.Unwrap(err))
			}
			return invalidf("source %q: not a valid URL", shown)
		}
		if u.Hostname() == "" {
			return invalidf("source %q: needs a host", shown)
		}
		if p := u.Port(); p != "" {
			if _, err := net.LookupPort("tcp", p); err != nil {
				return invalidf("source %q: bad port %q", shown, p)
			}
		}
		if err := s.sources.hosts.CheckHost(u.Hostname()); err != nil {
			return invalidf("source %q: %v", shown, err)
		}
		return nil
	case "file":
		_, err := s.sources.mediaFile(source)
		return err
	}
	return invalidf("source %q: unsupported; want rtsp://, rtsps://, whep://, wheps://, file://, /dev/videoN or %q", shown, SourcePublish)
}

// mediaFile returns the file a file:// source plays: a regular file inside
// one of the media directories, symlinks resolved and still inside. Every
// path outside them, existing or not, gets the same error, and nothing
// outside them is even looked at.
func (p *sourcePolicy) mediaFile(source string) (string, error) {
	u, err := url.Parse(source)
	if err != nil || u.Path == "" || !strings.HasPrefix(u.Path, "/") || (u.Host != "" && u.Host != "localhost") || u.RawQuery != "" {
		return "", invalidf("source %q: want file:///absolute/path/to/video", redact.URL(source))
	}
	notFound := invalidf("source: no such file in the media directories (media_dirs: %s)", strings.Join(p.shownDirs, ", "))
	path := filepath.Clean(u.Path)
	if !inside(path, p.typedDirs) && !inside(path, p.resolvedDirs) {
		return "", notFound
	}
	resolved, err := filepath.EvalSymlinks(path)
	if err != nil || !inside(resolved, p.resolvedDirs) {
		return "", notFound
	}
	st, err := os.Stat(resolved)
	if err != nil {
		return "", notFound
	}
	if st.IsDir() {
		return "", invalidf("source %q: is a directory", source)
	}
	if st.Mode()&fs.ModeType != 0 {
		return "", invalidf("source %q: not a regular file", source)
	}
	return resolved, nil
}

// inside reports whether path lies strictly below one of dirs.
func inside(path string, dirs []string) bool {
	for _, d := range dirs {
		if rel, err := filepath.Rel(d, path); err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel) {
			return true
		}
	}
	return false
}
