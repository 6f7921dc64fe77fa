#!/usr/bin/env bash
# The first README command: install what is needed, build, and run the
# product with its defaults (data in ./data, HTTP :8080, RTSP :8554, gRPC
# :50051, WebRTC UDP :8189, a demo camera). Extra arguments go to
# `imageflow serve`.
source "$(dirname "$0")/lib.sh"
bash "$ROOT/scripts/setup-product.sh"
cd "$ROOT"
exec ./bin/imageflow serve "$@"
