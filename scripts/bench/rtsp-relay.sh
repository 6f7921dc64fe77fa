#!/usr/bin/env bash
# RTSP relay benchmark: 10 cameras 1080p30 H264 (~4 Mbit/s) pushed by ffmpeg
# (-re -stream_loop -1 -c copy), 3 ffmpeg RTSP readers per camera
# (-c copy -f null -), ~20 s window. Prints the server's CPU % (total and per
# stream), RSS and the server-added latency: access unit complete -> queued to
# readers (AccessUnit.complete_unix_nano), and, through TCP proxies in front of
# the publishers and one reader per camera, last packet of an access unit in
# -> first/last packet out (excludes the sender's pacing). Figures only.
#
#   scripts/bench/rtsp-relay.sh serve [flags]  the real binary: builds
#       bin/imageflow, runs `imageflow serve`, creates the cameras over REST,
#       CPU from /proc/<pid>/stat, latency from /metrics
#   scripts/bench/rtsp-relay.sh [flags]        in-process bus + hub + rtsp.Server
#       wired like serve (-cpuprofile cpu.out writes a profile of the window)
#
# Flags: [-video-window 0] (serve's default: no JetStream VIDEO stream; 5s
#        keeps 5 s for replay) [-cameras 10] [-readers 3] [-duration 20s]
#        [-clip file.mp4] [-bitrate 4M] [-probe=false] [-cpuprofile f] [-memprofile f (and f.start at the
#        window start: go tool pprof -base f.start f is the window)]
set -euo pipefail
cd "$(dirname "$0")/../.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
extra=()
if [ "${1:-}" = serve ]; then
	shift
	go build -o bin/imageflow ./cmd/imageflow
	extra=(-bin bin/imageflow)
fi
go build -o "$tmp/rtsprelay" ./scripts/bench/rtsprelay
"$tmp/rtsprelay" "${extra[@]}" "$@"
