package main

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"
)

// probe measures the server-added latency from outside, over the real
// sockets: TCP proxies sit between a publisher and the server and between
// one reader per camera and the server, parse the RTSP interleaved stream
// and match access units by RTP timestamp (the server keeps the
// publisher's). "last in" is when the proxy handed the marker packet (the
// last packet of an access unit) to the server; "first out"/"last out" is
// when the first/marker packet of the same timestamp came back to a reader.
// Unlike the ingest timestamp this excludes how the sender paces the
// packets of a keyframe.
type probe struct {
	mu      sync.Mutex
	on      bool
	sent    map[probeKey]time.Time
	first   map[probeKey]time.Time
	toLast  []time.Duration // last packet in -> last packet out
	toFrst  []time.Duration // last packet in -> first packet out
	nomatch int
}

type probeKey struct {
	cam string
	ts  uint32
}

func newProbe() *probe {
	return &probe{sent: map[probeKey]time.Time{}, first: map[probeKey]time.Time{}}
}

func (p *probe) setOn(on bool) {
	p.mu.Lock()
	p.on = on
	p.mu.Unlock()
}

// published records the last packet of an access unit entering the server.
func (p *probe) published(cam string, ts uint32, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent[probeKey{cam, ts}] = at
	if len(p.sent) > 100000 {
		// Access units no probed reader got (before PLAY, dropped).
		for k, t := range p.sent {
			if at.Sub(t) > 5*time.Second {
				delete(p.sent, k)
			}
		}
	}
}

// received records a packet of an access unit reaching a probed reader.
func (p *probe) received(cam string, ts uint32, marker bool, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := probeKey{cam, ts}
	if _, ok := p.first[k]; !ok {
		p.first[k] = at
	}
	if !marker {
		return
	}
	first := p.first[k]
	delete(p.first, k)
	in, ok := p.sent[k]
	if !ok {
		if p.on {
			p.nomatch++
		}
		return
	}
	delete(p.sent, k)
	if p.on {
		p.toLast = append(p.toLast, at.Sub(in))
		p.toFrst = append(p.toFrst, first.Sub(in))
	}
}

// proxy forwards one TCP listener to the server; tap observes the bytes of
// one direction (client->server when up, else server->client) with the
// time they were read, before they are forwarded.
type proxy struct {
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	conn []net.Conn
}

func startProxy(target string, up bool, tap func(rtp []byte, at time.Time)) (*proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{ln: ln}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conn = append(p.conn, c, s)
			p.mu.Unlock()
			src, dst := s, c
			if up {
				src, dst = c, s
			}
			parse := &interleaved{}
			p.wg.Add(2)
			go func() {
				defer p.wg.Done()
				buf := make([]byte, 256<<10)
				for {
					n, err := src.Read(buf)
					if n > 0 {
						now := time.Now()
						parse.feed(buf[:n], func(f []byte) { tap(f, now) })
						if _, werr := dst.Write(buf[:n]); werr != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				dst.Close()
				src.Close()
			}()
			go func() {
				defer p.wg.Done()
				_, _ = io.Copy(src, dst)
				src.Close()
				dst.Close()
			}()
		}
	}()
	return p, nil
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conn {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// interleaved splits an RTSP-over-TCP byte stream into RTSP messages and
// $-framed packets (RFC 2326 §10.12) and hands each RTP packet to fn.
type interleaved struct {
	buf []byte
}

func (s *interleaved) feed(chunk []byte, fn func(rtp []byte)) {
	s.buf = append(s.buf, chunk...)
	b := s.buf
	for len(b) > 0 {
		if b[0] == '$' {
			if len(b) < 4 {
				break
			}
			n := int(binary.BigEndian.Uint16(b[2:4]))
			if len(b) < 4+n {
				break
			}
			if b[1]%2 == 0 {
				fn(b[4 : 4+n])
			}
			b = b[4+n:]
			continue
		}
		end := bytes.Index(b, []byte("\r\n\r\n"))
		if end < 0 {
			break
		}
		body := 0
		for _, line := range bytes.Split(b[:end], []byte("\r\n")) {
			if k, v, ok := bytes.Cut(line, []byte(":")); ok && bytes.EqualFold(bytes.TrimSpace(k), []byte("Content-Length")) {
				body, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
			}
		}
		if len(b) < end+4+body {
			break
		}
		b = b[end+4+body:]
	}
	s.buf = append(s.buf[:0], b...)
}

// rtpInfo reads the marker bit and timestamp of an RTP packet.
func rtpInfo(pkt []byte) (ts uint32, marker, ok bool) {
	if len(pkt) < 12 || pkt[0]>>6 != 2 {
		return 0, false, false
	}
	return binary.BigEndian.Uint32(pkt[4:8]), pkt[1]&0x80 != 0, true
}

// pct returns the p-quantile of sorted samples.
func pct(all []time.Duration, p float64) time.Duration {
	if len(all) == 0 {
		return 0
	}
	return all[int(float64(len(all)-1)*p)]
}

func sortedCopy(d []time.Duration) []time.Duration {
	out := slices.Clone(d)
	slices.Sort(out)
	return out
}
