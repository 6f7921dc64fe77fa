#!/usr/bin/env bash
# imageflow side by side with mediamtx (built from ../shared/peers/mediamtx, a
# test peer): RSS with no camera, RTSP relay CPU and RSS (10 cameras 1080p30
# 4 Mbit/s, one ffmpeg reader each), 50 pion WHEP viewers joining at once
# (answer p50/p99, answer to first complete access unit), WHEP CPU and RSS per
# viewer at 10 and 50, then imageflow's detection path (vtest.avi scaled to
# 1080p30, x264 GOP 30 without B-frames, pushed over RTSP; decode, convert,
# motion, HOG people detection at 5 fps) with its breakdown. Each round runs
# imageflow then mediamtx on fresh processes; on a shared machine the ratios
# of one run are the figures to compare. Figures only: nothing fails on time.
#
# Usage: scripts/bench/vs-mediamtx.sh [-cameras 10] [-viewers 50] [-window 10s] [-skip-detect]
#        scripts/bench/vs-mediamtx.sh -only-join 3 [-steps] runs only the join of -viewers
#        viewers, 3 rounds per server alternating; -steps prints where imageflow's answers
#        spent their time (its debug log); -baseline bin/imageflow-before joins an
#        earlier build in the same rounds.
#        [-only-relay [-relay-rounds 3] [-baseline bin/imageflow-before]]: only the relay
#        round, alternated that many times (a baseline build measured in the same rounds)
#        MEDIAMTX=/path/to/mediamtx uses that binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p data/bench
go build -o bin/imageflow ./cmd/imageflow
mediamtx="${MEDIAMTX:-data/bench/mediamtx}"
if [[ ! -x "$mediamtx" ]]; then
	echo "building mediamtx from ../shared/peers/mediamtx into $mediamtx..."
	bash ../shared/peers/mediamtx/build.sh "$mediamtx"
fi
relay=data/bench/relay-1080p.mp4
if [[ ! -s "$relay" ]]; then
	ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=1920x1080:rate=30 -t 10 \
		-c:v libx264 -preset ultrafast -g 30 -bf 0 -b:v 4M -maxrate 4M -bufsize 4M -pix_fmt yuv420p "$relay"
fi
people=data/bench/vtest-1080p.mp4
if [[ ! -s "$people" ]]; then
	ffmpeg -hide_banner -loglevel error -y -i /usr/share/doc/opencv-doc/examples/data/vtest.avi \
		-vf scale=1920:1080,fps=30 -c:v libx264 -preset veryfast -g 30 -bf 0 -b:v 4M -maxrate 4M -bufsize 8M \
		-pix_fmt yuv420p "$people"
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/vsmediamtx" ./scripts/bench/vsmediamtx
"$tmp/vsmediamtx" -bin bin/imageflow -mediamtx "$mediamtx" -clip "$relay" -detect-clip "$people" "$@"
