// Package netpolicy decides which hosts the server may connect to on a
// user's behalf (camera sources, remote processor steps): a deny list of
// address ranges and host names, checked when a URL is saved and again on
// every connection after DNS resolution, so a name that resolves into a
// denied range is refused too.
package netpolicy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"
)

// ErrDenied is wrapped by every refusal.
var ErrDenied = errors.New("host is in deny_hosts")

// DefaultDeny covers the cloud metadata services: link-local addresses
// (169.254.169.254 on AWS, GCP, Azure, OpenStack), AWS's IPv6 and Alibaba's
// metadata addresses and the names they answer to. Loopback and private
// ranges stay allowed: cameras live there.
var DefaultDeny = []string{
	"169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32",
	"metadata.google.internal", "metadata.goog", "metadata.azure.com",
	"instance-data", "instance-data.ec2.internal",
}

// Policy is a parsed deny list; the zero value and nil allow everything.
type Policy struct {
	prefixes []netip.Prefix
	names    []string
}

// New parses deny entries: CIDR ranges ("169.254.0.0/16"), single addresses
// or host names (matched case-insensitively, with their subdomains).
func New(entries []string) (*Policy, error) {
	p := &Policy{}
	for i, e := range entries {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		if pre, err := netip.ParsePrefix(e); err == nil {
			p.prefixes = append(p.prefixes, pre.Masked())
			continue
		}
		if a, err := netip.ParseAddr(e); err == nil {
			a = a.Unmap()
			p.prefixes = append(p.prefixes, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		name := normaliseName(e)
		if name == "" || strings.ContainsAny(name, "/:@ ") {
			return nil, fmt.Errorf("entry %d %q: want a CIDR range, an IP address or a host name", i, e)
		}
		p.names = append(p.names, name)
	}
	return p, nil
}

func normaliseName(h string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
}

// CheckHost refuses a host (a name or a literal address, without port) that
// is on the list. Names are not resolved here: Dialer checks the addresses
// they resolve to when connecting.
func (p *Policy) CheckHost(host string) error {
	if p == nil {
		return nil
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if i := strings.IndexByte(host, '%'); i >= 0 { // fe80::1%eth0
		host = host[:i]
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return p.checkAddr(a)
	}
	// Forms the resolver accepts that ParseAddr does not ("0xa9.254.169.254",
	// "2852039166") are judged by what they mean.
	if ip := net.ParseIP(host); ip != nil {
		if a, ok := netip.AddrFromSlice(ip); ok {
			return p.checkAddr(a)
		}
	}
	name := normaliseName(host)
	for _, n := range p.names {
		if name == n || strings.HasSuffix(name, "."+n) {
			return fmt.Errorf("%w: %s (matches %s)", ErrDenied, host, n)
		}
	}
	return nil
}

func (p *Policy) checkAddr(a netip.Addr) error {
	a = a.Unmap()
	for _, pre := range p.prefixes {
		if pre.Contains(a) {
			return fmt.Errorf("%w: %s (in %s)", ErrDenied, a, pre)
		}
	}
	return nil
}

// control is a net.Dialer Control function: it runs after DNS resolution,
// with the address the socket is about to connect to.
func (p *Policy) control(network, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		host = address
	}
	return p.CheckHost(host)
}

// Dialer returns a dialer that refuses denied addresses after resolution
// (and names before it); timeout 0 means none.
func (p *Policy) Dialer(timeout time.Duration) *net.Dialer {
	d := &net.Dialer{Timeout: timeout}
	if p != nil {
		d.Control = p.control
	}
	return d
}

// DialContext dials like net.Dialer.DialContext, refusing denied names and
// denied resolved addresses.
func (p *Policy) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if host, _, err := net.SplitHostPort(address); err == nil {
		if err := p.CheckHost(host); err != nil {
			return nil, err
		}
	}
	return p.Dialer(0).DialContext(ctx, network, address)
}
