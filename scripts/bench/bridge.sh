#!/usr/bin/env bash
# Bridge throughput: how fast the Mirror drains a JetStream backlog into
# Kafka (franz-go's in-process kfake broker over TCP on 127.0.0.1, acks=all,
# batches of 500), for progress messages (~200 B) and archive frames
# (33 KiB, a 640x360 JPEG), as JSON (the Kafka Connect default) and as raw
# protobuf. kfake keeps everything in memory, so the archive runs stay small.
# Usage: scripts/bench/bridge.sh [PROGRESS_MSGS] [ARCHIVE_MSGS]   (default 50000 3000)
set -euo pipefail
cd "$(dirname "$0")/../.."
small="${1:-50000}"
large="${2:-3000}"

go test -c -o /tmp/bridge-bench.test ./bridge/ >/dev/null
cd bridge # the tests read ../k3s; benchmarks need nothing else
/tmp/bridge-bench.test -test.run '^$' -test.bench 'Mirror/progress' -test.benchtime "${small}x" -test.count 1 | grep -E '^Benchmark'
/tmp/bridge-bench.test -test.run '^$' -test.bench 'Mirror/archive' -test.benchtime "${large}x" -test.count 1 | grep -E '^Benchmark'
