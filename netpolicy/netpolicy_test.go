package netpolicy

import (
	"context"
	"errors"
	"net"
	"testing"
)

func TestCheckHost(t *testing.T) {
	p, err := New(DefaultDeny)
	if err != nil {
		t.Fatal(err)
	}
	for host, denied := range map[string]bool{
		"169.254.169.254":             true,
		"[169.254.169.254]":           true,
		"::ffff:169.254.169.254":      true,
		"fe80::1":                     true,
		"[fe80::1%eth0]":              true,
		"fd00:ec2::254":               true,
		"METADATA.google.internal":    true,
		"metadata.google.internal.":   true,
		"x.metadata.google.internal":  true,
		"127.0.0.1":                   false,
		"::1":                         false,
		"localhost":                   false,
		"192.168.1.10":                false,
		"cam.example":                 false,
		"notmetadata.google.internal": false,
	} {
		err := p.CheckHost(host)
		if got := errors.Is(err, ErrDenied); got != denied {
			t.Errorf("CheckHost(%q) = %v, want denied %v", host, err, denied)
		}
	}
	var none *Policy
	if err := none.CheckHost("169.254.169.254"); err != nil {
		t.Errorf("nil policy denies: %v", err)
	}
	for _, bad := range []string{"10.0.0.0/33", "a b", "http://x"} {
		if _, err := New([]string{bad}); err == nil {
			t.Errorf("New(%q) accepted", bad)
		}
	}
}

// TestDialChecksResolvedAddress connects to a real listener through a name
// (localhost) whose resolved address is denied: the name itself is not on
// the list, so only the check after resolution can refuse it.
func TestDialChecksResolvedAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	allow, _ := New(DefaultDeny)
	c, err := allow.DialContext(context.Background(), "tcp4", net.JoinHostPort("localhost", port))
	if err != nil {
		t.Fatalf("loopback refused by the default list: %v", err)
	}
	c.Close()
	deny, _ := New([]string{"127.0.0.0/8"})
	if _, err := deny.DialContext(context.Background(), "tcp4", net.JoinHostPort("localhost", port)); !errors.Is(err, ErrDenied) {
		t.Fatalf("localhost resolved into a denied range was dialled: %v", err)
	}
}
