#!/usr/bin/env bash
# Round-trip latency of the gRPC paths, over real gRPC on 127.0.0.1:
#   - StreamService.Process: a 640x480 JPEG through a resize + YOLO (ONNX,
#     OpenCV DNN) pipeline, one frame in flight: p50/p99 in ms;
#   - a processor called in-process vs through the Processor service (raw BGR
#     640x480 each way): the gRPC hop's cost.
# Usage: scripts/bench/stream.sh [frames]   (default 300)
set -euo pipefail
cd "$(dirname "$0")/../.."
n="${1:-300}"
go test -run '^$' -bench 'BenchmarkStreamRoundTrip|BenchmarkProcessInProcess|BenchmarkProcessRemote' \
  -benchtime "${n}x" ./processors/remote/ 2>&1 | grep -E '^(Benchmark|ok|FAIL|---)'
