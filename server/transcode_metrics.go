package server

import (
	"github.com/prometheus/client_golang/prometheus"

	iwebrtc "github.com/imageflowcanvas/imageflow/ingest/webrtc"
)

// transcodeCollector reads what the live view's transcodes cost at scrape
// time: they run only while someone watches or listens, so an idle server
// reports zero.
type transcodeCollector struct{ eng *iwebrtc.Engine }

var (
	transcodeRunningDesc = prometheus.NewDesc("imageflow_webrtc_transcodes",
		"Cameras being transcoded for WebRTC viewers (shared by all viewers of a camera).", []string{"kind"}, nil)
	transcodeBusyDesc = prometheus.NewDesc("imageflow_webrtc_transcode_seconds_total",
		"Time spent transcoding for WebRTC viewers.", []string{"kind"}, nil)
	transcodeOutDesc = prometheus.NewDesc("imageflow_webrtc_transcode_packets_total",
		"Packets (audio) or access units (video) the WebRTC transcodes made.", []string{"kind"}, nil)
)

func (c transcodeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- transcodeRunningDesc
	ch <- transcodeBusyDesc
	ch <- transcodeOutDesc
}

func (c transcodeCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.eng.Transcodes()
	ch <- prometheus.MustNewConstMetric(transcodeRunningDesc, prometheus.GaugeValue, float64(st.AudioRunning), "audio_opus")
	ch <- prometheus.MustNewConstMetric(transcodeBusyDesc, prometheus.CounterValue, st.AudioBusy.Seconds(), "audio_opus")
	ch <- prometheus.MustNewConstMetric(transcodeOutDesc, prometheus.CounterValue, float64(st.AudioPackets), "audio_opus")
	ch <- prometheus.MustNewConstMetric(transcodeRunningDesc, prometheus.GaugeValue, float64(st.VideoRunning), "video_h264")
	ch <- prometheus.MustNewConstMetric(transcodeBusyDesc, prometheus.CounterValue, st.VideoBusy.Seconds(), "video_h264")
	ch <- prometheus.MustNewConstMetric(transcodeOutDesc, prometheus.CounterValue, float64(st.VideoFrames), "video_h264")
}
