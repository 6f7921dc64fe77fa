package webrtc

import (
	"bytes"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// nackViewer is a pion WHEP viewer that keeps the packets it receives and
// can ask for one again with a NACK. Its SRTP replay protection is off, so
// a retransmission (same SSRC and sequence number: no RTX is negotiated)
// reaches it.
type nackViewer struct {
	pc   *webrtc.PeerConnection
	mu   sync.Mutex
	ssrc uint32
	got  []*rtp.Packet
	// again holds the packets received a second time.
	again []*rtp.Packet
	seen  map[uint16]bool
}

func newNackViewer(t *testing.T, e *env) *nackViewer {
	t.Helper()
	se := loopbackSettings(webrtc.NetworkTypeUDP4)
	se.DisableSRTPReplayProtection(true)
	pc, err := defaultCodecsAPI(t, se).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	v := &nackViewer{pc: pc, seen: map[uint16]bool{}}
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	pc.OnTrack(func(track *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		for {
			p, _, err := track.ReadRTP()
			if err != nil {
				return
			}
			v.mu.Lock()
			v.ssrc = uint32(track.SSRC())
			if v.seen[p.SequenceNumber] {
				v.again = append(v.again, p)
			} else {
				v.seen[p.SequenceNumber] = true
				v.got = append(v.got, p)
			}
			v.mu.Unlock()
		}
	})
	code, answer, _ := whepPost(t, e.srv.URL+"/whep/cam1", localOffer(t, pc))
	if code != http.StatusCreated {
		t.Fatalf("WHEP POST: %d %s", code, answer)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		t.Fatal(err)
	}
	return v
}

func (v *nackViewer) received() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.got)
}

// Two viewers of one camera (whose payloads are cut once for both) each ask
// for a packet they received a while ago: the NACK responder, which keeps
// the packets sent without copying them, sends back exactly that packet,
// with that viewer's own sequence number, timestamp and marker.
func TestWHEPNackRetransmitsTheSamePacket(t *testing.T) {
	e := newEnv(t, EngineConfig{})
	startFeed(t, e, "cam1")
	viewers := []*nackViewer{newNackViewer(t, e), newNackViewer(t, e)}
	for i, v := range viewers {
		waitFor(t, 20*time.Second, fmt.Sprintf("viewer %d's first 300 packets", i), func() bool { return v.received() >= 300 })
	}
	for i, v := range viewers {
		v.mu.Lock()
		// Far enough back that later packets were sent since, well
		// within the responder's 1024.
		want := v.got[len(v.got)-200]
		ssrc := v.ssrc
		v.mu.Unlock()
		nack := &rtcp.TransportLayerNack{MediaSSRC: ssrc, Nacks: rtcp.NackPairsFromSequenceNumbers([]uint16{want.SequenceNumber})}
		if err := v.pc.WriteRTCP([]rtcp.Packet{nack}); err != nil {
			t.Fatal(err)
		}
		var again *rtp.Packet
		waitFor(t, 10*time.Second, fmt.Sprintf("viewer %d's packet %d again", i, want.SequenceNumber), func() bool {
			v.mu.Lock()
			defer v.mu.Unlock()
			for _, p := range v.again {
				if p.SequenceNumber == want.SequenceNumber {
					again = p
					return true
				}
			}
			return false
		})
		if again.Timestamp != want.Timestamp || again.Marker != want.Marker || !bytes.Equal(again.Payload, want.Payload) {
			t.Fatalf("viewer %d: packet %d came back as ts %d marker %v %d bytes, was ts %d marker %v %d bytes (payload equal: %v)",
				i, want.SequenceNumber, again.Timestamp, again.Marker, len(again.Payload), want.Timestamp, want.Marker, len(want.Payload),
				bytes.Equal(again.Payload, want.Payload))
		}
	}
}
