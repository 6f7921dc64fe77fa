#!/usr/bin/env bash
# RTSP relay benchmark: 10 cameras 1080p30 H264 (~4 Mbit/s) pushed by ffmpeg
# (-re -stream_loop -1 -c copy) into an in-process bus + hub + rtsp.Server,
# 3 ffmpeg RTSP readers per camera (-c copy -f null -), ~20 s window.
# Prints the server process's CPU %, RSS and the server-added latency p50/p99
# (AccessUnit.ingest_unix_nano -> packets queued to readers). Figures only.
# Usage: scripts/bench/rtsp-relay.sh [-cameras 10] [-readers 3] [-duration 20s]
#        [-clip file.mp4] [-bitrate 4M]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="$(mktemp -d)/rtsprelay"
trap 'rm -rf "$(dirname "$bin")"' EXIT
go build -o "$bin" ./scripts/bench/rtsprelay
"$bin" "$@"
