// Package h26xtest holds what tests of H264/H265 consumers share: ffmpeg
// clips split into access units and a compact RTP packet encoding that the
// depacketizer fuzzers use as their corpus format.
package h26xtest

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/rtp"
)

// Clip is an H264 test clip made by ffmpeg's testsrc2.
type Clip struct {
	Size    string // WxH
	Seconds int
	GOP     int
}

// Small is the 2 s 640x360 clip with a 1 s GOP the depacketizer tests use.
var Small = Clip{Size: "640x360", Seconds: 2, GOP: 30}

var (
	clipMu   sync.Mutex
	clipAUs  = map[Clip][][][]byte{}
	clipErrs = map[Clip]error{}
)

// AccessUnits is clip c encoded once per test binary (libx264 ultrafast, no
// B-frames, 30 fps) and split into access units of NAL units without start
// codes or delimiters.
func AccessUnits(tb testing.TB, c Clip) [][][]byte {
	tb.Helper()
	clipMu.Lock()
	defer clipMu.Unlock()
	if aus, ok := clipAUs[c]; ok {
		return aus
	}
	if err, ok := clipErrs[c]; ok {
		tb.Fatal(err)
	}
	aus, err := makeClip(c)
	if err != nil {
		clipErrs[c] = err
		tb.Fatal(err)
	}
	clipAUs[c] = aus
	return aus
}

func makeClip(c Clip) ([][][]byte, error) {
	dir, err := os.MkdirTemp("", "h26xtest-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	p := filepath.Join(dir, "clip.h264")
	out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size="+c.Size+":rate=30", "-t", fmt.Sprint(c.Seconds),
		"-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", fmt.Sprint(c.GOP), "-bf", "0",
		"-pix_fmt", "yuv420p", "-x264-params", "aud=1", "-f", "h264", p).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ffmpeg h264: %v: %s", err, out)
	}
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	// mediacommon splits here: the package under test is not used to make
	// its own test data.
	var nalus h264.AnnexB
	if err := nalus.Unmarshal(raw); err != nil {
		return nil, err
	}
	var aus [][][]byte
	var cur [][]byte
	for _, n := range nalus {
		if h264.NALUType(n[0]&0x1f) == h264.NALUTypeAccessUnitDelimiter {
			if len(cur) > 0 {
				aus = append(aus, cur)
			}
			cur = nil
			continue
		}
		cur = append(cur, n)
	}
	if len(cur) > 0 {
		aus = append(aus, cur)
	}
	return aus, nil
}

// Packets splits data into RTP packets: per packet one flag byte (bit 0
// marker, bits 1-7 timestamp step in 100 ticks), a 2-byte length and the
// payload. It is the corpus format of the depacketizer fuzzers.
func Packets(data []byte) []*rtp.Packet {
	var pkts []*rtp.Packet
	ts := uint32(1000)
	seq := uint16(1)
	for len(data) >= 3 {
		flags := data[0]
		n := int(binary.BigEndian.Uint16(data[1:3]))
		data = data[3:]
		if n > len(data) {
			n = len(data)
		}
		ts += uint32(flags>>1) * 100
		pkts = append(pkts, &rtp.Packet{
			Header:  rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: ts, Marker: flags&1 == 1},
			Payload: data[:n],
		})
		seq++
		data = data[n:]
	}
	return pkts
}

// Packet encodes one packet in the format Packets reads.
func Packet(marker bool, step uint8, payload []byte) []byte {
	b := []byte{step << 1, 0, 0}
	if marker {
		b[0] |= 1
	}
	binary.BigEndian.PutUint16(b[1:], uint16(len(payload)))
	return append(b, payload...)
}

// EncodeAUs packetizes access units with gortsplib's H264 encoder (FU-A
// above 300 bytes) into the format Packets reads, one 3000-tick step per
// unit.
func EncodeAUs(tb testing.TB, aus [][][]byte) []byte {
	tb.Helper()
	enc := &rtph264.Encoder{PayloadType: 96, PacketizationMode: 1, PayloadMaxSize: 300}
	if err := enc.Init(); err != nil {
		tb.Fatal(err)
	}
	var out []byte
	for _, au := range aus {
		pkts, err := enc.Encode(au)
		if err != nil {
			tb.Fatal(err)
		}
		for i, p := range pkts {
			step := uint8(0)
			if i == 0 {
				step = 30
			}
			out = append(out, Packet(p.Marker, step, p.Payload)...)
		}
	}
	return out
}
