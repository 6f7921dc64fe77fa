package h26x

import (
	"bytes"
	"errors"
	"testing"

	"github.com/pion/rtp"

	"github.com/imageflowcanvas/imageflow/media/h26x/h26xtest"
)

func newDepacketizer(t testing.TB, c Codec) *Depacketizer {
	d := &Depacketizer{Codec: c, PacketizationMode: 1}
	if err := d.Init(); err != nil {
		t.Fatal(err)
	}
	return d
}

// pushAll feeds packets and collects the access units.
func pushAll(d *Depacketizer, pkts []*rtp.Packet) []AccessUnit {
	var out []AccessUnit
	for _, p := range pkts {
		if au, ok, _ := d.Push(p); ok {
			out = append(out, au)
		}
	}
	return out
}

func checkAUs(t *testing.T, codec Codec, aus []AccessUnit) {
	for _, au := range aus {
		if len(au.NALUs) == 0 {
			t.Fatal("access unit without NAL units")
		}
		for _, n := range au.NALUs {
			if len(n) == 0 {
				t.Fatal("empty NAL unit")
			}
			if Classify(codec, n) == KindAUD {
				t.Fatal("access unit delimiter kept")
			}
		}
		if au.Keyframe {
			_, sps, pps := ParamSets(codec, au.NALUs)
			if sps == nil || pps == nil {
				t.Fatal("keyframe without parameter sets")
			}
		}
	}
}

var packet = h26xtest.Packet

// Table of hand-written cases: they are unit tests and fuzz seeds at once.
var depacketizeCases = []struct {
	name string
	data []byte
}{
	{"empty", nil},
	{"short header", []byte{1, 0}},
	{"single SPS PPS IDR", append(append(packet(false, 1, []byte{0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8}),
		packet(false, 0, []byte{0x68, 0xce, 0x3c, 0x80})...), packet(true, 0, []byte{0x65, 0x88, 0x84, 0x00})...)},
	{"IDR without params", packet(true, 1, []byte{0x65, 0x88, 0x84})},
	{"FU-A start without end", packet(false, 1, []byte{0x7c, 0x85, 1, 2, 3})},
	{"FU-A end without start", packet(true, 1, []byte{0x7c, 0x45, 1, 2, 3})},
	{"STAP-A truncated", packet(true, 1, []byte{0x78, 0x00, 0x40, 0x67})},
	{"STAP-A zero size", packet(true, 1, []byte{0x78, 0x00, 0x00, 0x00, 0x02, 0x68, 0x01})},
	{"AUD only", packet(true, 1, []byte{0x09, 0xf0})},
	{"timestamp split without marker", append(packet(false, 1, []byte{0x41, 1}), packet(false, 3, []byte{0x41, 2})...)},
	{"zero byte nalu", packet(true, 1, []byte{0x00})},
	{"h265 VPS SPS PPS IDR", append(append(append(packet(false, 1, []byte{0x40, 0x01, 0x0c}), packet(false, 0, []byte{0x42, 0x01, 0x01})...),
		packet(false, 0, []byte{0x44, 0x01, 0xc1})...), packet(true, 0, []byte{0x26, 0x01, 0xaf})...)},
	{"h265 FU", packet(true, 1, []byte{0x62, 0x01, 0x93, 0xaf})},
	{"h265 AP truncated", packet(true, 1, []byte{0x60, 0x01, 0x00, 0x20, 0x40})},
}

// runBoth feeds data to an H264 and an H265 depacketizer, each with and
// without payload copies, and checks that reused buffers change nothing.
func runBoth(t *testing.T, data []byte) {
	for _, c := range []Codec{H264, H265} {
		for _, cp := range []bool{false, true} {
			d := newDepacketizer(t, c)
			d.CopyPayload = cp
			checkAUs(t, c, pushAll(d, h26xtest.Packets(data)))
		}
	}
	compareReuse(t, h26xtest.Packets(data))
}

// compareReuse feeds pkts to a depacketizer with ReuseBuffers and to one
// without, and fails on the first Push whose outcome differs: the unit
// (compared before the next Push, as long as it is valid), ok and the error.
func compareReuse(t *testing.T, pkts []*rtp.Packet) int {
	t.Helper()
	ref := newDepacketizer(t, H264)
	reuse := newDepacketizer(t, H264)
	reuse.ReuseBuffers = true
	if err := reuse.Init(); err != nil {
		t.Fatal(err)
	}
	units := 0
	for i, p := range pkts {
		want, wok, werr := ref.Push(p)
		got, gok, gerr := reuse.Push(p)
		if wok != gok || (werr == nil) != (gerr == nil) || (werr != nil && werr.Error() != gerr.Error()) {
			t.Fatalf("packet %d: ok=%v err=%v, want ok=%v err=%v", i, gok, gerr, wok, werr)
		}
		if !wok {
			continue
		}
		units++
		if got.Keyframe != want.Keyframe || got.RTPTimestamp != want.RTPTimestamp || got.SPSChanged != want.SPSChanged ||
			len(got.NALUs) != len(want.NALUs) {
			t.Fatalf("packet %d: unit %+v, want %+v", i, got, want)
		}
		for j := range want.NALUs {
			if !bytes.Equal(got.NALUs[j], want.NALUs[j]) {
				t.Fatalf("packet %d: NAL unit %d differs", i, j)
			}
		}
	}
	return units
}

// ReuseBuffers gives the same units and errors as fresh buffers: with
// marker bits, without them (units close on the next timestamp, so the
// joined units of two pictures are alive at once), across lost fragments
// and when joining mid-unit.
func TestDepacketizeReuseBuffers(t *testing.T) {
	aus := h26xtest.AccessUnits(t, h26xtest.Small)
	pkts := h26xtest.Packets(h26xtest.EncodeAUs(t, aus))
	if n := compareReuse(t, pkts); n != len(aus) {
		t.Fatalf("%d access units out of %d", n, len(aus))
	}
	noMarker := make([]*rtp.Packet, len(pkts))
	for i, p := range pkts {
		q := *p
		q.Marker = false
		noMarker[i] = &q
	}
	if n := compareReuse(t, noMarker); n != len(aus)-1 {
		t.Fatalf("without markers: %d access units out of %d", n, len(aus)-1)
	}
	var lossy []*rtp.Packet
	for i, p := range pkts {
		if i%37 != 5 {
			lossy = append(lossy, p)
		}
	}
	if n := compareReuse(t, lossy); n == 0 {
		t.Fatalf("lossy stream: %d access units out of %d", n, len(aus))
	}
	// Joining inside a fragmented unit, and the same clip several times
	// over so the arena wraps around and gets replaced.
	var long []*rtp.Packet
	for k := range 5 {
		for _, p := range pkts[3:] {
			q := *p
			q.SequenceNumber += uint16(k * len(pkts))
			q.Timestamp += uint32(k) * 90000 * 3
			long = append(long, &q)
		}
	}
	compareReuse(t, long)
}

func TestDepacketizeCases(t *testing.T) {
	for _, c := range depacketizeCases {
		t.Run(c.name, func(t *testing.T) { runBoth(t, c.data) })
	}
}

// A real clip survives the round trip: every access unit comes out, the
// first is a keyframe with its parameter sets and size.
func TestDepacketizeClip(t *testing.T) {
	aus := h26xtest.AccessUnits(t, h26xtest.Small)
	d := newDepacketizer(t, H264)
	got := pushAll(d, h26xtest.Packets(h26xtest.EncodeAUs(t, aus)))
	if len(got) != len(aus) {
		t.Fatalf("%d access units out of %d", len(got), len(aus))
	}
	checkAUs(t, H264, got)
	if w, h := d.Size(); !got[0].Keyframe || !got[0].SPSChanged || w != 640 || h != 360 {
		t.Fatalf("first access unit keyframe=%v %dx%d", got[0].Keyframe, w, h)
	}
	keys := 0
	for i, au := range got {
		if au.Keyframe {
			keys++
		}
		if i > 0 && au.RTPTimestamp <= got[i-1].RTPTimestamp {
			t.Fatalf("timestamp not increasing at %d", i)
		}
	}
	if keys != 2 {
		t.Fatalf("%d keyframes in a 2 s clip with a 1 s GOP, want 2", keys)
	}
	// Parameter sets missing in band are restored from what was seen before.
	var stripped [][][]byte
	for i, au := range aus {
		var out [][]byte
		for _, n := range au {
			k := Classify(H264, n)
			if i > 0 && (k == KindSPS || k == KindPPS) {
				continue
			}
			out = append(out, n)
		}
		stripped = append(stripped, out)
	}
	got = pushAll(newDepacketizer(t, H264), h26xtest.Packets(h26xtest.EncodeAUs(t, stripped)))
	checkAUs(t, H264, got)
	if k := got[30]; !k.Keyframe || Classify(H264, k.NALUs[0]) != KindSPS || Classify(H264, k.NALUs[1]) != KindPPS {
		t.Fatalf("second keyframe did not get its SPS/PPS back: key=%v", k.Keyframe)
	}
}

// A caller that reads every packet into the same buffer (pion's
// TrackRemote.Read) gets intact units with CopyPayload, also when a
// fragmented NAL unit spans packets.
func TestDepacketizeReusedBuffer(t *testing.T) {
	aus := h26xtest.AccessUnits(t, h26xtest.Small)[:10]
	pkts := h26xtest.Packets(h26xtest.EncodeAUs(t, aus))
	d := newDepacketizer(t, H264)
	d.CopyPayload = true
	buf := make([]byte, 1500)
	var got []AccessUnit
	for _, p := range pkts {
		n := copy(buf, p.Payload)
		q := *p
		q.Payload = buf[:n]
		au, ok, err := d.Push(&q)
		if err != nil {
			t.Fatal(err)
		}
		for i := range buf {
			buf[i] = 0xee // the next read overwrites everything
		}
		if ok {
			got = append(got, au)
		}
	}
	if len(got) != len(aus) {
		t.Fatalf("%d access units out of %d", len(got), len(aus))
	}
	for i := range aus {
		if len(got[i].NALUs) != len(aus[i]) {
			t.Fatalf("AU %d: %d NAL units, want %d", i, len(got[i].NALUs), len(aus[i]))
		}
		for j := range aus[i] {
			if !bytes.Equal(got[i].NALUs[j], aus[i][j]) {
				t.Fatalf("AU %d NAL unit %d corrupted", i, j)
			}
		}
	}
}

// Joining a stream inside a fragmented unit is reported as such, not as a
// malformed packet.
func TestDepacketizeJoinMidFragment(t *testing.T) {
	d := newDepacketizer(t, H264)
	_, ok, err := d.Push(h26xtest.Packets(packet(true, 1, []byte{0x7c, 0x45, 1, 2, 3}))[0])
	if ok || !errors.Is(err, ErrJoinedMidFragment) {
		t.Fatalf("ok=%v err=%v, want ErrJoinedMidFragment", ok, err)
	}
}

func FuzzDepacketize(f *testing.F) {
	for _, c := range depacketizeCases {
		f.Add(c.data)
	}
	f.Add(h26xtest.EncodeAUs(f, h26xtest.AccessUnits(f, h26xtest.Small)[:3]))
	f.Fuzz(func(t *testing.T, data []byte) { runBoth(t, data) })
}

// BenchmarkDepacketize feeds the RTP packets of the small clip (FU-A at 300
// bytes), one op per packet.
func BenchmarkDepacketize(b *testing.B) {
	pkts := h26xtest.Packets(h26xtest.EncodeAUs(b, h26xtest.AccessUnits(b, h26xtest.Small)))
	for _, mode := range []string{"alias", "copy", "reuse"} {
		b.Run(mode, func(b *testing.B) {
			d := &Depacketizer{Codec: H264, PacketizationMode: 1, CopyPayload: mode == "copy", ReuseBuffers: mode == "reuse"}
			if err := d.Init(); err != nil {
				b.Fatal(err)
			}
			var bytes int64
			for _, p := range pkts {
				bytes += int64(len(p.Payload))
			}
			b.SetBytes(bytes / int64(len(pkts)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				p := *pkts[i%len(pkts)]
				p.Timestamp += uint32(i/len(pkts)) * 90000 * 3
				_, _, _ = d.Push(&p)
			}
		})
	}
}
