#!/usr/bin/env bash
# CPU and memory of the demo camera's whole live path: file ingest (vtest.avi
# decoded and re-encoded to H264), decode once for processing at 5 fps,
# motion-gated HOG people detection, and one RTSP reader (ffmpeg, -c copy).
# Prints figures; it never fails on them.
# Usage: scripts/bench/demo-cpu.sh [seconds]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SECS="${1:-30}"
BIN="${IFC_BIN:-$ROOT/bin/imageflow}"
[ -x "$BIN" ] || (cd "$ROOT" && go build -o bin/imageflow ./cmd/imageflow)
DATA="$(mktemp -d)"
trap 'kill $PID $READER 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DATA"' EXIT
"$BIN" serve --data "$DATA" --http 127.0.0.1:0 --rtsp 127.0.0.1:0 --rtsp-udp "" --grpc "" --webrtc-udp 127.0.0.1:0 --log-level warn &
PID=$!
for _ in $(seq 100); do [ -f "$DATA/listen.json" ] && break; sleep 0.1; done
listen() { grep -o "\"$1\": *\"[^\"]*\"" "$DATA/listen.json" | sed 's/.*: *"\(.*\)"/\1/'; }
HTTP=$(listen http)
RTSP=$(listen rtsp)
for _ in $(seq 100); do curl -sf "http://$HTTP/api/v1/cameras/demo" | grep -q '"state":"online"' && break; sleep 0.2; done
ffmpeg -v quiet -rtsp_transport tcp -i "rtsp://$RTSP/demo" -c copy -f null - &
READER=$!
sleep 5 # warm up: background model, first keyframes
ticks() { awk '{print $14+$15}' "/proc/$PID/stat"; }
HZ=$(getconf CLK_TCK)
t0=$(ticks); s0=$(date +%s.%N)
sleep "$SECS"
t1=$(ticks); s1=$(date +%s.%N)
rss=$(awk '/VmRSS/{print $2}' "/proc/$PID/status")
cpu=$(awk -v t0="$t0" -v t1="$t1" -v hz="$HZ" -v s0="$s0" -v s1="$s1" 'BEGIN { printf "%.1f", 100 * (t1 - t0) / hz / (s1 - s0) }')
m=$(curl -sf "http://$HTTP/metrics")
frames=$(echo "$m" | awk '/^imageflow_decoder_frames_total\{camera="demo",event="published"\}/{print $2}')
results=$(echo "$m" | awk '/^imageflow_live_results_total/{s+=$2} END{print s+0}')
skipped=$(echo "$m" | awk '/^imageflow_live_frames_skipped_total/{s+=$2} END{print s+0}')
echo "demo live path over ${SECS}s (after 5s warm-up), $(nproc) cores:"
echo "  server CPU:          ${cpu}% of one core"
echo "  server RSS:          $((rss / 1024)) MiB"
echo "  frames for pipeline: ${frames} published, results ${results}, skipped (pipeline busy) ${skipped}"
