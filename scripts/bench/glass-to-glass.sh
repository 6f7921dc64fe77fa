#!/usr/bin/env bash
# Glass-to-glass latency of the live view: a 640x480 25 fps clip whose
# frames carry their number as black/white blocks is published over RTSP to
# an in-process server; headless Chromium plays it on the live page over
# WHEP and reads each shown frame's number from its pixels. Prints the wall
# time from publishing frame N to showing it (p50/p95/mean), for a camera
# without a pipeline and one with the demo's detection pipeline (overlays),
# with the page's jitter-buffer target and result lag. Figures only.
# Usage: scripts/bench/glass-to-glass.sh [seconds measured, default 10]
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -f webapp/dist/ui/index.html ] || bash scripts/build-webapp.sh
IFC_G2G_SECONDS="${1:-10}" go test -count=1 -run TestGlassToGlass -v ./scripts/bench/g2g
