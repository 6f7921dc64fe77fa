package webrtc

import (
	"bytes"
	"testing"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// packetizeH264 turns AUs into RTP packets the way a sender does (pion's
// payloader: STAP-A for SPS+PPS, FU-A above the MTU).
func packetizeH264(aus [][][]byte, mtu uint16) []*rtp.Packet {
	var pl codecs.H264Payloader
	var out []*rtp.Packet
	seq := uint16(65530) // wraps inside the clip
	for i, au := range aus {
		var payloads [][]byte
		for _, n := range au {
			payloads = append(payloads, pl.Payload(mtu, n)...)
		}
		for j, p := range payloads {
			out = append(out, &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: uint32(i * 3000), Marker: j == len(payloads)-1}, Payload: p})
			seq++
		}
	}
	return out
}

func TestDepacketizeH264RoundTrip(t *testing.T) {
	aus := makeClip(t, 1)
	pkts := packetizeH264(aus, 300)
	d, err := NewDepacketizer(busv1.Codec_CODEC_H264)
	if err != nil {
		t.Fatal(err)
	}
	var got []*busv1.AccessUnit
	for _, p := range pkts {
		au, err := d.Push(p)
		if err != nil {
			t.Fatalf("push: %v", err)
		}
		if au != nil {
			got = append(got, au)
		}
	}
	if len(got) != len(aus) {
		t.Fatalf("got %d AUs, want %d", len(got), len(aus))
	}
	for i := range aus {
		if got[i].RtpTimestamp != uint32(i*3000) {
			t.Fatalf("AU %d: ts %d", i, got[i].RtpTimestamp)
		}
		if len(got[i].Nalus) != len(aus[i]) {
			t.Fatalf("AU %d: %d NALUs, want %d", i, len(got[i].Nalus), len(aus[i]))
		}
		for j := range aus[i] {
			if !bytes.Equal(got[i].Nalus[j], aus[i][j]) {
				t.Fatalf("AU %d NALU %d differs", i, j)
			}
		}
		if got[i].Keyframe != (i%30 == 0) {
			t.Fatalf("AU %d keyframe=%v", i, got[i].Keyframe)
		}
	}
	if got[0].Width != 320 || got[0].Height != 240 {
		t.Fatalf("size %dx%d", got[0].Width, got[0].Height)
	}
}

// A lost packet drops the broken AU and everything up to the next keyframe,
// asks for a keyframe, and the IDR that follows carries SPS/PPS even when the
// sender did not repeat them.
func TestDepacketizeH264Loss(t *testing.T) {
	aus := makeClip(t, 2)
	// Strip the parameter sets from the second IDR: the depacketizer must
	// put back the ones it saw.
	var stripped [][]byte
	for _, n := range aus[30] {
		if t := n[0] & 0x1f; t != 7 && t != 8 {
			stripped = append(stripped, n)
		}
	}
	aus[30] = stripped
	pkts := packetizeH264(aus, 300)
	d, _ := NewDepacketizer(busv1.Codec_CODEC_H264)
	var got []*busv1.AccessUnit
	needKey := false
	lost := false
	for _, p := range pkts {
		if p.Timestamp == 5*3000 && !lost {
			lost = true
			continue // lose the first packet of AU 5
		}
		au, _ := d.Push(p)
		if d.NeedKeyframe() {
			needKey = true
		}
		if au != nil {
			got = append(got, au)
		}
	}
	if !needKey {
		t.Fatal("no keyframe request after loss")
	}
	for _, au := range got {
		if ts := au.RtpTimestamp / 3000; ts >= 5 && ts < 30 {
			t.Fatalf("AU %d delivered after the loss, before the next keyframe", ts)
		}
	}
	var idr *busv1.AccessUnit
	for _, au := range got {
		if au.RtpTimestamp == 30*3000 {
			idr = au
		}
	}
	if idr == nil || !idr.Keyframe || idr.Nalus[0][0]&0x1f != 7 || idr.Nalus[1][0]&0x1f != 8 {
		t.Fatalf("second IDR missing or without SPS/PPS: %+v", idr)
	}
}

func TestDepacketizeVP8(t *testing.T) {
	// A VP8 key frame header for 320x240 followed by filler, and an
	// inter frame (bit 0 set).
	key := append([]byte{0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00}, bytes.Repeat([]byte{7}, 3000)...)
	inter := append([]byte{0x31, 0x02, 0x00}, bytes.Repeat([]byte{9}, 500)...)
	var pl codecs.VP8Payloader
	d, _ := NewDepacketizer(busv1.Codec_CODEC_VP8)
	seq := uint16(1)
	var got []*busv1.AccessUnit
	for i, frame := range [][]byte{inter, key, inter} {
		ps := pl.Payload(1200, frame)
		for j, p := range ps {
			au, err := d.Push(&rtp.Packet{Header: rtp.Header{SequenceNumber: seq, Timestamp: uint32(i * 3000), Marker: j == len(ps)-1}, Payload: p})
			if err != nil {
				t.Fatal(err)
			}
			seq++
			if au != nil {
				got = append(got, au)
			}
		}
	}
	// The leading inter frame is dropped: nothing can decode it.
	if len(got) != 2 || !got[0].Keyframe || got[1].Keyframe {
		t.Fatalf("got %d AUs", len(got))
	}
	if !bytes.Equal(got[0].Data, key) || got[0].Width != 320 || got[0].Height != 240 {
		t.Fatalf("key frame %dx%d, %d bytes", got[0].Width, got[0].Height, len(got[0].Data))
	}
}

// depacketizerSeeds are RTP payload sequences for the fuzzer: valid and
// broken STAP-A, FU-A, VP8 and VP9 descriptors.
var depacketizerSeeds = [][]byte{
	{0x65, 0x88, 0x84},
	{0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce},
	{0x78, 0x00, 0xff, 0x67},
	{0x7c, 0x85, 0x01, 0x02}, {0x7c, 0x45, 0x03},
	{0x7c, 0x05},
	{0x1f},
	{0x90, 0x80, 0x01, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a},
	{0x88, 0x01, 0x02},
	{},
}

// FuzzDepacketizer feeds arbitrary payloads, split into packets at 0xff
// bytes with marker bits from the data, to each codec: no panic, bounded AUs.
func FuzzDepacketizer(f *testing.F) {
	for _, s := range depacketizerSeeds {
		f.Add(s, uint8(0))
		f.Add(s, uint8(1))
		f.Add(s, uint8(2))
	}
	f.Fuzz(func(t *testing.T, data []byte, which uint8) {
		codec := []busv1.Codec{busv1.Codec_CODEC_H264, busv1.Codec_CODEC_VP8, busv1.Codec_CODEC_VP9}[which%3]
		d, _ := NewDepacketizer(codec)
		parts := bytes.Split(data, []byte{0xff})
		for i, p := range parts {
			pkt := &rtp.Packet{Header: rtp.Header{SequenceNumber: uint16(i), Timestamp: uint32(i / 3), Marker: len(p) > 0 && p[0]&1 == 1}, Payload: p}
			au, _ := d.Push(pkt)
			if au != nil && len(au.Data)+len(au.Nalus) == 0 {
				t.Fatal("empty access unit")
			}
			d.NeedKeyframe()
			d.Size()
		}
	})
}

func TestInspectOfferAndFragments(t *testing.T) {
	for _, bad := range []string{"", "x", "v=0\r\n", "v=0\r\no=- 1\r\nm=video\r\n"} {
		if _, err := InspectOffer(bad); err == nil {
			t.Errorf("InspectOffer(%q) accepted", bad)
		}
	}
	cands, err := ParseSDPFragment("a=ice-ufrag:abc\r\na=ice-pwd:x\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n", "abc")
	if err != nil || len(cands) != 1 || *cands[0].SDPMid != "0" || cands[0].Candidate != "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host" {
		t.Fatalf("fragment: %v %+v", err, cands)
	}
	if _, err := ParseSDPFragment("a=ice-ufrag:other\r\n", "abc"); err == nil {
		t.Fatal("ICE restart accepted")
	}
	if _, err := ParseSDPFragment("garbage", "abc"); err == nil {
		t.Fatal("garbage fragment accepted")
	}
}

func FuzzParseSDPFragment(f *testing.F) {
	f.Add("a=ice-ufrag:abc\r\nm=audio 9 UDP 0\r\na=mid:0\r\na=candidate:1 1 udp 1 127.0.0.1 5 typ host\r\n")
	f.Add("m=\nm=\na=candidate:")
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = ParseSDPFragment(s, "abc")
		_, _ = InspectOffer(s)
	})
}

// BenchmarkDepacketizeH264 feeds the RTP packets of a 320x240 clip (pion's
// payloader, FU-A at 1200 bytes) through the WebRTC depacketizer, one op per
// packet.
func BenchmarkDepacketizeH264(b *testing.B) {
	pkts := packetizeH264(makeClip(b, 2), 1200)
	d, err := NewDepacketizer(busv1.Codec_CODEC_H264)
	if err != nil {
		b.Fatal(err)
	}
	var bytes int64
	for _, p := range pkts {
		bytes += int64(len(p.Payload))
	}
	b.SetBytes(bytes / int64(len(pkts)))
	b.ReportAllocs()
	b.ResetTimer()
	aus := 0
	// One packet variable for every read, as the track reader has.
	var p rtp.Packet
	for i := 0; i < b.N; i++ {
		k := i % len(pkts)
		p = *pkts[k]
		loop := i / len(pkts)
		p.Timestamp += uint32(loop) * 90000 * 3
		p.SequenceNumber += uint16(loop * len(pkts))
		au, err := d.Push(&p)
		if err != nil {
			b.Fatal(err)
		}
		if au != nil {
			aus++
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(aus)/b.Elapsed().Seconds(), "AUs/s")
}
