// Package g2g is the glass-to-glass latency probe (scripts/bench/glass-to-glass.sh):
// a clip whose frames carry their number as a pattern of black and white
// blocks is published over RTSP, headless Chromium plays it on the live page
// over WHEP and reads the number back from the shown frames' pixels, and the
// wall time from publishing a frame to showing it is printed for a camera
// without a pipeline and for one with the demo's detection pipeline.
package g2g
