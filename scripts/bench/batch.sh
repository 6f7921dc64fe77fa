#!/usr/bin/env bash
# Batch executions over REST, end to end: one 1920x1080 JPEG (messi5.jpg
# scaled up) through resize(320)+blur, uploaded, followed on the event stream
# to its end, output image downloaded. Prints p50/p99 over RUNS runs for one
# client, throughput with 8 concurrent clients, the same pipeline in-process
# with OpenCV (decode + engine + encode) as the floor, and the ratio. Two
# floors: a naive full-size decode, and the 1/4-scale JPEG decode the worker
# itself uses for this pipeline (the fair one for the REST overhead). Last,
# one execution of 1000 small pictures (the per-file bookkeeping cost).
# Usage: scripts/bench/batch.sh [RUNS]   (default 200)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${1:-200}"

go test -c -o /tmp/batch-bench.test ./server/batch/ >/dev/null
out="$(/tmp/batch-bench.test -test.run '^$' -test.bench '^BenchmarkBatch(REST|RESTConcurrent8|InProcess|InProcessReduced)$' -test.benchtime "${runs}x" -test.count 1)"
big="$(/tmp/batch-bench.test -test.run '^$' -test.bench '^BenchmarkBatch1000Files$' -test.benchtime 1x -test.count 1)"
echo "$out" | grep -E '^Benchmark'
echo "$big" | grep -E '^Benchmark'

metric() { # benchmark name, unit → value
	echo "$out" | awk -v b="$1" -v u="$2" '$1 ~ "^"b"(-[0-9]+)?$" { for (i = 2; i <= NF; i++) if ($i == u) print $(i-1) }'
}
rest_p50="$(metric BenchmarkBatchREST p50-ms)"
rest_p99="$(metric BenchmarkBatchREST p99-ms)"
par_ips="$(metric BenchmarkBatchRESTConcurrent8 images/s)"
par_p50="$(metric BenchmarkBatchRESTConcurrent8 p50-ms)"
floor_p50="$(metric BenchmarkBatchInProcessReduced p50-ms)"
floor_p99="$(metric BenchmarkBatchInProcessReduced p99-ms)"
big_fps="$(echo "$big" | awk '/^BenchmarkBatch1000Files/ { for (i = 2; i <= NF; i++) if ($i == "files/s") print $(i-1) }')"
naive_p50="$(metric BenchmarkBatchInProcess p50-ms)"
naive_p99="$(metric BenchmarkBatchInProcess p99-ms)"
echo
echo "REST end to end, 1 client:   p50 ${rest_p50} ms, p99 ${rest_p99} ms   (goal p50 < 20 ms)"
echo "REST, 8 concurrent clients:  ${par_ips} images/s, p50 ${par_p50} ms"
echo "one execution of 1000 small files: ${big_fps} files/s"
echo "in-process floor, same decode: p50 ${floor_p50} ms, p99 ${floor_p99} ms"
echo "in-process, full-size decode:  p50 ${naive_p50} ms, p99 ${naive_p99} ms"
awk -v a="$rest_p50" -v b="$floor_p50" 'BEGIN { printf "ratio REST/floor (p50):      %.2f  (REST overhead %.1f ms)\n", a / b, a - b }'
awk -v a="$rest_p50" -v b="$naive_p50" 'BEGIN { printf "ratio REST/full-decode (p50): %.2f\n", a / b }'
