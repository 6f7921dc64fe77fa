#!/usr/bin/env bash
# Prints the path of the demo camera's video. Uses OpenCV's vtest.avi (people
# walking; Debian package opencv-doc) when installed, else makes
# data/demo/demo.mp4 once with ffmpeg: 30 s of testsrc2 with moving shapes,
# H264 constrained baseline without B-frames (what browsers play over WebRTC).
# Idempotent: an existing demo.mp4 is reused.
set -euo pipefail
cd "$(dirname "$0")/.."

vtest=/usr/share/doc/opencv-doc/examples/data/vtest.avi
if [[ -s "$vtest" ]]; then
	echo "$vtest"
	exit 0
fi

out=data/demo/demo.mp4
if [[ ! -s "$out" ]]; then
	command -v ffmpeg >/dev/null || { echo "demo-media: ffmpeg is not installed" >&2; exit 1; }
	mkdir -p "$(dirname "$out")"
	tmp="$(mktemp "$(dirname "$out")/.demo-XXXXXX.mp4")"
	trap 'rm -f "$tmp"' EXIT
	ffmpeg -hide_banner -loglevel error -y \
		-f lavfi -i "testsrc2=size=1280x720:rate=30:duration=30" \
		-f lavfi -i "color=c=red:size=160x160:rate=30" \
		-f lavfi -i "color=c=yellow:size=100x220:rate=30" \
		-filter_complex "[0][1]overlay=x='mod(t*220,W+160)-160':y='H/2-80+180*sin(t*1.3)':shortest=1[a];[a][2]overlay=x='W/2+400*sin(t*0.7)':y='mod(t*120,H+220)-220':shortest=1,format=yuv420p" \
		-c:v libx264 -preset veryfast -profile:v baseline -bf 0 -g 60 -b:v 2M -movflags +faststart "$tmp"
	chmod 644 "$tmp"
	mv "$tmp" "$out"
	trap - EXIT
fi
realpath "$out"
