package rtsp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/headers"
	"github.com/pion/rtp"
)

// Media written by the egress itself waits for the PLAY response (the next
// write of gortsplib's after armMedia), stops with the session, and keeps
// its place in the byte stream among gortsplib's writes.
func TestBatchConnMediaGate(t *testing.T) {
	srv, cli := tcpPair(t)
	if err := srv.writeMedia([]byte("$early")); !errors.Is(err, errMediaHeld) {
		t.Fatalf("media before PLAY: %v, want errMediaHeld", err)
	}
	srv.armMedia()
	if err := srv.writeMedia([]byte("$armed")); !errors.Is(err, errMediaHeld) {
		t.Fatalf("media before the PLAY response: %v, want errMediaHeld", err)
	}
	const res = "RTSP/1.0 200 OK\r\n\r\n"
	if _, err := srv.Write([]byte(res)); err != nil {
		t.Fatal(err)
	}
	if err := srv.writeMedia([]byte("$one")); err != nil {
		t.Fatalf("media after the PLAY response: %v", err)
	}
	if _, err := srv.Write([]byte("$rtcp")); err != nil {
		t.Fatal(err)
	}
	if err := srv.writeMedia([]byte("$two")); err != nil {
		t.Fatal(err)
	}
	srv.stopMedia()
	if err := srv.writeMedia([]byte("$late")); !errors.Is(err, errMediaHeld) {
		t.Fatalf("media after the session: %v, want errMediaHeld", err)
	}
	want := res + "$one$rtcp$two"
	_ = cli.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(cli, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("received %q, want %q", got, want)
	}
}

// A reader that stops reading makes writeMedia refuse (errBatchFull) once
// batchMaxPending is queued, instead of blocking the camera's pump; what
// was accepted arrives whole and in order when it reads again.
func TestBatchConnMediaFullNeverBlocks(t *testing.T) {
	srv, cli := tcpPair(t)
	srv.armMedia()
	if _, err := srv.Write([]byte("R")); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 256<<10)
	accepted := 1
	start := time.Now()
	for i := 0; ; i++ {
		for j := range chunk {
			chunk[j] = byte(i)
		}
		err := srv.writeMedia(chunk)
		if errors.Is(err, errBatchFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		accepted += len(chunk)
		if accepted > 512<<20 {
			t.Fatal("512 MB accepted for a reader that reads nothing")
		}
	}
	t.Logf("%d kB accepted before errBatchFull (socket buffers + %d kB queued), %v", accepted>>10, batchMaxPending>>10, time.Since(start))
	_ = cli.SetReadDeadline(time.Now().Add(20 * time.Second))
	got := make([]byte, accepted)
	if _, err := io.ReadFull(cli, got); err != nil {
		t.Fatal(err)
	}
	if got[0] != 'R' {
		t.Fatalf("first byte %q, want the response's", got[0])
	}
	for i := 1; i < len(got); i++ {
		if want := byte((i - 1) / len(chunk)); got[i] != want {
			t.Fatalf("byte %d is %d, want %d (chunks out of order or torn)", i, got[i], want)
		}
	}
}

// appendInterleaved frames every packet with its channel and length and
// the stream's SSRC; the frames read back as the packets.
func TestAppendInterleaved(t *testing.T) {
	p := newH264Packetizer(96)
	key := [][]byte{{0x67, 1, 2, 3}, {0x68, 4}, bytes.Repeat([]byte{0x65}, 5000)}
	pkts, err := p.Encode(key)
	if err != nil {
		t.Fatal(err)
	}
	for _, pkt := range pkts {
		pkt.Timestamp = 1234
	}
	buf := appendInterleaved([]byte("x"), pkts, 6, 0xdeadbeef)
	if buf[0] != 'x' {
		t.Fatal("appendInterleaved overwrote what dst held")
	}
	br := bufio.NewReader(bytes.NewReader(buf[1:]))
	for i, want := range pkts {
		var fr base.InterleavedFrame
		if err := fr.Unmarshal(br); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		var got rtp.Packet
		if err := got.Unmarshal(fr.Payload); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if fr.Channel != 6 || got.SSRC != 0xdeadbeef || got.SequenceNumber != want.SequenceNumber ||
			got.Timestamp != 1234 || got.Marker != want.Marker || !bytes.Equal(got.Payload, want.Payload) {
			t.Fatalf("frame %d: channel %d, %+v; want channel 6 and %+v", i, fr.Channel, got.Header, want.Header)
		}
	}
	if br.Buffered() != 0 {
		t.Fatalf("%d bytes after the last frame", br.Buffered())
	}
}

// rawRTSP is a minimal RTSP client over one TCP connection, to see the
// exact bytes the server sends.
type rawRTSP struct {
	t    *testing.T
	c    net.Conn
	br   *bufio.Reader
	cseq int
}

// do sends a request and reads its response; the response must be the
// next thing on the connection.
func (r *rawRTSP) do(method, url string, hdr ...string) (status int, header map[string]string, body string) {
	r.t.Helper()
	r.cseq++
	req := fmt.Sprintf("%s %s RTSP/1.0\r\nCSeq: %d\r\n%s\r\n", method, url, r.cseq, strings.Join(append(hdr, ""), "\r\n"))
	if _, err := r.c.Write([]byte(req)); err != nil {
		r.t.Fatal(err)
	}
	line, err := r.br.ReadString('\n')
	if err != nil {
		r.t.Fatal(err)
	}
	if !strings.HasPrefix(line, "RTSP/1.0 ") {
		r.t.Fatalf("%s: the response does not come first: %q", method, line)
	}
	status, _ = strconv.Atoi(strings.Fields(line)[1])
	header = map[string]string{}
	for {
		line, err := r.br.ReadString('\n')
		if err != nil {
			r.t.Fatal(err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			header[strings.ToLower(k)] = strings.TrimSpace(v)
		}
	}
	if n, _ := strconv.Atoi(header["content-length"]); n > 0 {
		b := make([]byte, n)
		if _, err := io.ReadFull(r.br, b); err != nil {
			r.t.Fatal(err)
		}
		body = string(b)
	}
	return status, header, body
}

var controlRe = regexp.MustCompile(`a=control:(\S+)`)

// A TCP reader asking for interleaved channels 6-7 gets, after the PLAY
// response and never before it, the camera's video on channel 6 with the
// SSRC its SETUP response named, in sequence, starting at a keyframe.
func TestServerTCPReaderFrames(t *testing.T) {
	e := newEnv(t, publishCams("cam1"))
	ffmpegPush(t, e.url("cam1"))
	e.waitOnline(t, "cam1", 15*time.Second)

	c, err := net.DialTimeout("tcp", e.srv.Addr(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	r := &rawRTSP{t: t, c: c, br: bufio.NewReader(c)}
	url := e.url("cam1")
	status, _, sdp := r.do("DESCRIBE", url, "Accept: application/sdp")
	if status != 200 {
		t.Fatalf("DESCRIBE: %d", status)
	}
	m := controlRe.FindAllStringSubmatch(sdp, -1)
	if len(m) == 0 {
		t.Fatalf("no track control in the SDP:\n%s", sdp)
	}
	track := m[len(m)-1][1]
	if !strings.HasPrefix(track, "rtsp://") {
		track = url + "/" + track
	}
	status, h, _ := r.do("SETUP", track, "Transport: RTP/AVP/TCP;unicast;interleaved=6-7")
	if status != 200 {
		t.Fatalf("SETUP: %d", status)
	}
	var th headers.Transport
	if err := th.Unmarshal(base.HeaderValue{h["transport"]}); err != nil || th.SSRC == nil || th.InterleavedIDs == nil || th.InterleavedIDs[0] != 6 {
		t.Fatalf("SETUP transport %q: %v", h["transport"], err)
	}
	session, _, _ := strings.Cut(h["session"], ";")
	if status, _, _ := r.do("PLAY", url, "Session: "+session); status != 200 {
		t.Fatalf("PLAY: %d", status)
	}

	var seq uint16
	aus, pkts := 0, 0
	for aus < 30 {
		var fr base.InterleavedFrame
		if err := fr.Unmarshal(r.br); err != nil {
			t.Fatalf("after %d packets: %v", pkts, err)
		}
		if fr.Channel == 7 {
			continue // RTCP
		}
		if fr.Channel != 6 {
			t.Fatalf("frame on channel %d, want 6", fr.Channel)
		}
		var p rtp.Packet
		if err := p.Unmarshal(fr.Payload); err != nil {
			t.Fatal(err)
		}
		if p.SSRC != *th.SSRC {
			t.Fatalf("SSRC %08x, SETUP announced %08x", p.SSRC, *th.SSRC)
		}
		if pkts == 0 {
			if typ := p.Payload[0] & 0x1f; typ != 7 {
				t.Fatalf("first packet carries NAL type %d, want the keyframe's SPS (7)", typ)
			}
		} else if p.SequenceNumber != seq+1 {
			t.Fatalf("packet %d: sequence %d after %d", pkts, p.SequenceNumber, seq)
		}
		seq = p.SequenceNumber
		pkts++
		if p.Marker {
			aus++
		}
	}
	t.Logf("%d access units in %d packets", aus, pkts)
}

// BenchmarkDirectWrite is the egress's per-reader work for one access unit
// of a 1080p30 4 Mbit/s camera (a 15 kB picture, every 30th a 120 kB
// keyframe): packetize, frame with channel and SSRC, queue on a loopback
// TCP reader's connection (drained by a goroutine). allocs/op is the
// relay's garbage per access unit and reader on this path (gortsplib's
// WritePacketRTP made two allocations, ~1.5 kB, per packet).
func BenchmarkDirectWrite(b *testing.B) {
	srv, cli := tcpPair(b)
	go func() { _, _ = io.Copy(io.Discard, cli) }()
	srv.armMedia()
	if _, err := srv.Write([]byte("RTSP/1.0 200 OK\r\n\r\n")); err != nil {
		b.Fatal(err)
	}
	key := [][]byte{{0x67, 0x42, 0, 0x28}, {0x68, 0xce}, bytes.Repeat([]byte{0x65}, 120000)}
	delta := [][]byte{bytes.Repeat([]byte{0x41}, 15000)}
	p := newH264Packetizer(96)
	var frames []byte
	var sent int64
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		au := delta
		if i%30 == 0 {
			au = key
		}
		pkts, err := p.Encode(au)
		if err != nil {
			b.Fatal(err)
		}
		frames = appendInterleaved(frames[:0], pkts, 0, 0x1234)
		for {
			err := srv.writeMedia(frames)
			if err == nil {
				break
			}
			if !errors.Is(err, errBatchFull) {
				b.Fatal(err)
			}
			time.Sleep(100 * time.Microsecond) // let the reader catch up
		}
		sent += int64(len(frames))
	}
	b.SetBytes(sent / int64(b.N))
}
